#pragma once

#include <memory>

#include <arrow/filesystem/filesystem.h>
#include <pybind11/pybind11.h>

namespace millstream::python {

/// An Arrow filesystem over a Python fsspec filesystem `fs` (every call under the GIL):
/// files are read by ranges (`cat_file`), written into memory and stored whole by
/// `pipe_file` when closed (so a file appears only when complete; an aborted one never).
std::shared_ptr<arrow::fs::FileSystem> MakeFsspecFileSystem(pybind11::object fs);

}  // namespace millstream::python
