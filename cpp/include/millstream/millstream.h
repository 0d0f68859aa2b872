#pragma once

/// \file The public C++ API of millstream: a streaming batch engine over Arrow blocks.

#include "millstream/block.h"     // IWYU pragma: export
#include "millstream/context.h"   // IWYU pragma: export
#include "millstream/dataset.h"   // IWYU pragma: export
#include "millstream/udf.h"       // IWYU pragma: export
