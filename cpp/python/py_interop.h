#pragma once

// The binding's bridge between Python objects and the engine: Arrow data through the C
// Data Interface (PyCapsules, no copy), Python UDFs, and Status <-> exception mapping.
// Every function here expects the GIL held unless it says otherwise.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <pybind11/pybind11.h>

#include <arrow/filesystem/filesystem.h>
#include <arrow/record_batch.h>
#include <arrow/status.h>
#include <arrow/table.h>

#include "millstream/udf.h"

namespace millstream::python {

namespace py = pybind11;

/// Finds pyarrow's C++ entry points (wrap and unwrap a RecordBatch or Table); once, at
/// import. Without them Arrow data crosses through the C Data Interface.
void LoadPyArrowApi();
/// Whether LoadPyArrowApi found all of them.
bool PyArrowApiLoaded();
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


/// Adds the file readers (list_files, read_files) to the module (py_io.cc).
void RegisterIo(py::module_& m);
/// Adds DataContext, ExecutionOptions, ExecutionResources, AutoscalingConfig (py_context.cc).
void RegisterContext(py::module_& m);
/// Adds FileFormat, WriteOptions, ParquetWriteOptions, CsvWriteOptions (py_options.cc).
void RegisterOptions(py::module_& m);
/// Adds OperatorStats and ExecutionStats (py_stats.cc).
void RegisterStats(py::module_& m);
/// Adds strings_to_objects (string columns to numpy object arrays) to the module (py_strings.cc).
void RegisterStrings(py::module_& m);
/// A filesystem as Python holds it (made by resolve_path / list_files).
struct FileSystemHandle {
  std::shared_ptr<arrow::fs::FileSystem> fs;
};
/// The filesystem of a FileSystemHandle, or null for None.
std::shared_ptr<arrow::fs::FileSystem> FileSystemFromHandle(const py::handle& handle);

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

/// \name Interpreter exit
///
/// At exit the atexit hook closes a gate (CloseGate) before the interpreter starts
/// finalizing: from then on no engine thread calls into Python. The hook waits until every
/// busy engine worker is inside a UDF call; such a call may never return, so no engine
/// thread is ever joined at exit. A worker whose call returns after the gate closed, or
/// that the finalizing interpreter refuses the GIL (Python ends such threads by unwinding
/// them), parks for good instead of running destructors that would need Python again.
/// Executions still alive are left to the process's end (never destroyed after the gate
/// closed).
/// @{

/// True once the exit gate is closed. Safe to call without the GIL.
bool PythonExiting();
/// An engine worker about to call into Python: false once the gate is closed (then it must
/// not). Pair each true with LeavePythonCall.
bool EnterPythonCall();
void LeavePythonCall();
/// A thread about to destroy an execution abandoned on Ctrl-C (its blocks may own Python
/// objects): false once the gate is closed (then leak it). Pair with LeaveReaper.
bool EnterReaper();
void LeaveReaper();
/// Blocks the calling thread forever.
[[noreturn]] void ParkThread();
/// Takes the GIL on an engine thread into `gil`; parks the thread if the interpreter is
/// finalizing.
void AcquireGil(std::optional<py::gil_scoped_acquire>& gil);
/// `fn(arg)` (or `fn()` when arg is null), GIL held: a new reference or null with the
/// Python error set. Parks the thread if the call loses the GIL to a finalizing interpreter.
PyObject* CallPython(PyObject* fn, PyObject* arg);
/// With the GIL held: if the gate is closed, releases the GIL and parks the thread.
void ParkIfExiting();
/// In a GilRelease scope, once the gate is closed (exit cancelled the execution waited
/// on): parks the calling Python thread, as a daemon thread stays where it is at exit,
/// instead of returning to Python with the cancellation. The thread that closed the gate
/// returns.
void ParkWaiterIfExiting();
/// Closes the gate: no engine worker enters Python any more (EnterPythonCall is false).
void CloseGate();
/// After CloseGate, with the GIL released by the caller: waits up to `timeout` until every
/// busy engine worker is inside a UDF call, no Python thread waits in the engine and no
/// abandoned execution is being destroyed. False if that did not happen in time.
bool WaitForEngineToSettle(std::chrono::milliseconds timeout);

/// Releases the GIL while a Python thread waits on the engine; the destructor takes it back,
/// or parks the thread (a daemon thread) if the interpreter is finalizing meanwhile.
class GilRelease {
 public:
  GilRelease();
  ~GilRelease();
  GilRelease(const GilRelease&) = delete;
  GilRelease& operator=(const GilRelease&) = delete;

 private:
  PyThreadState* state_;
};
/// @}

template <typename T>
T ValueOrRaise(arrow::Result<T> result) {
  if (!result.ok()) RaiseStatus(result.status());
  return std::move(result).ValueUnsafe();
}
inline void CheckStatus(const arrow::Status& status) {
  if (!status.ok()) RaiseStatus(status);
}

}  // namespace millstream::python
