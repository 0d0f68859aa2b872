#pragma once

// The binding's bridge between Python objects and the engine: Arrow data through the C
// Data Interface (PyCapsules, no copy), Python UDFs, and Status <-> exception mapping.
// Every function here expects the GIL held unless it says otherwise.

#include <functional>
#include <memory>
#include <string>

#include <pybind11/pybind11.h>

#include <arrow/record_batch.h>
#include <arrow/status.h>
#include <arrow/table.h>

#include "millstream/udf.h"

namespace millstream::python {

namespace py = pybind11;

/// A pyarrow.RecordBatch viewing `batch` (zero-copy).
py::object BatchToPyArrow(const std::shared_ptr<arrow::RecordBatch>& batch);
/// A pyarrow.Schema equal to `schema`.
py::object SchemaToPyArrow(const std::shared_ptr<arrow::Schema>& schema);
/// Any object exporting the Arrow PyCapsule interface (RecordBatch, Table, reader...).
arrow::Result<std::shared_ptr<arrow::Table>> TableFromPython(const py::handle& obj);

/// A UDF factory calling `fn(pyarrow.RecordBatch) -> table-like`; when `is_class`, `fn()`
/// is called once per instance (per actor) to make that callable. `name` is the
/// operator's, added to any exception the function raises.
BatchUdfFactory MakePythonUdfFactory(py::object fn, bool is_class, std::string name);
/// A write's file names from a Ray FilenameProvider: get_filename_for_task(write_uuid,
/// task_index), called with the GIL on the task's thread. Its exception keeps its type.
std::function<arrow::Result<std::string>(const std::string&, int64_t)> MakePythonFilenameFunction(
    py::object provider);


/// Raises the Python exception for a failed status: the UDF's own exception (type,
/// message, traceback) when it came from Python, else the mapped builtin type.
[[noreturn]] void RaiseStatus(const arrow::Status& status);

/// True while Python can still run code: initialized and not finalizing. Safe to call
/// without the GIL. Uses only public API (Py_IsFinalizing is public from 3.13 on).
inline bool InterpreterAlive() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsInitialized() && !Py_IsFinalizing();
#else
  return Py_IsInitialized() && !_Py_IsFinalizing();
#endif
}

template <typename T>
T ValueOrRaise(arrow::Result<T> result) {
  if (!result.ok()) RaiseStatus(result.status());
  return std::move(result).ValueUnsafe();
}
inline void CheckStatus(const arrow::Status& status) {
  if (!status.ok()) RaiseStatus(status);
}

}  // namespace millstream::python
