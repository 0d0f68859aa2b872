// Precompiled header: the heavy Arrow headers every translation unit includes.
#pragma once
#include <arrow/api.h>
#include <arrow/compute/api.h>
#include <arrow/compute/expression.h>
#include <arrow/util/logging.h>
#include <parquet/arrow/reader.h>
#include <parquet/arrow/writer.h>
