#include <arrow/c/abi.h>
#include <arrow/c/bridge.h>
#include <arrow/api.h>
#include <arrow/util/io_util.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "py_interop.h"

namespace millstream::python {

namespace {

/// Adds `note` to a Python exception's __notes__ (PEP 678): through add_note() where the
/// interpreter has it (3.11+), else by hand, so that 3.10 callers read the same attribute.
void AddNote(const py::object& exception, const std::string& note) {
  if (py::hasattr(exception, "add_note")) {
    exception.attr("add_note")(note);
    return;
  }
  try {
    if (!py::hasattr(exception, "__notes__")) exception.attr("__notes__") = py::list();
    exception.attr("__notes__").attr("append")(note);
  } catch (py::error_already_set&) {
    // An exception type without attributes of its own (no __dict__) keeps no note.
  }
}

/// Holds a Python object from C++ code that may drop it on any thread.
class PyRef {
 public:
  explicit PyRef(py::object obj) : obj_(std::move(obj)) {}
  ~PyRef() {
    if (!InterpreterAlive() || PythonExiting()) {
      obj_.release();  // the interpreter is exiting or gone: leave the object to it
      return;
    }
    std::optional<py::gil_scoped_acquire> gil;
    AcquireGil(gil);
    obj_ = py::object();
  }
  const py::object& get() const { return obj_; }

 private:
  py::object obj_;
};

/// A status detail carrying the Python exception a UDF raised.
class PyErrorDetail : public arrow::StatusDetail {
 public:
  explicit PyErrorDetail(py::object exception) : exception_(std::move(exception)) {}
  const char* type_id() const override { return "millstream::python::PyErrorDetail"; }
  std::string ToString() const override { return "Python exception"; }
  const py::object& exception() const { return exception_.get(); }

 private:
  PyRef exception_;
};

void DeleteSchemaCapsule(PyObject* capsule) {
  auto* schema = static_cast<ArrowSchema*>(PyCapsule_GetPointer(capsule, "arrow_schema"));
  if (schema->release) schema->release(schema);
  delete schema;
}

void DeleteArrayCapsule(PyObject* capsule) {
  auto* array = static_cast<ArrowArray*>(PyCapsule_GetPointer(capsule, "arrow_array"));
  if (array->release) array->release(array);
  delete array;
}

py::object PyArrowAttr(const char* cls, const char* attr) {
  return py::module_::import("pyarrow").attr(cls).attr(attr);
}

/// Keeps an engine thread's Python thread state alive from its first UDF call until the
/// thread exits, instead of creating and destroying one around every call.
struct ThreadStateKeeper {
  bool kept = false;
  void Keep() {
    if (kept) return;
    std::optional<py::gil_scoped_acquire> gil;
    AcquireGil(gil);
    gil->inc_ref();
    kept = true;
  }
  ~ThreadStateKeeper() {
    if (!kept || !InterpreterAlive() || PythonExiting()) return;
    std::optional<py::gil_scoped_acquire> gil;
    AcquireGil(gil);
    gil->dec_ref();
  }
};
thread_local ThreadStateKeeper t_thread_state;

/// An engine worker's passage into Python through the exit gate (EnterPythonCall).
struct PythonCall {
  bool entered = EnterPythonCall();
  ~PythonCall() {
    if (entered) LeavePythonCall();
  }
};

/// Engine threads holding the GIL for a UDF call now, and whether a thread already waits
/// for them by spinning.
std::atomic<int> g_udf_gil_holders{0};
std::atomic<bool> g_gil_spinner{false};

/// Before a worker asks for the GIL while another holds it for a UDF call, it waits for
/// that call to end by spinning, up to 50 µs: the GIL's own wait puts the thread to sleep,
/// and waking it costs more than a call on a small block (two workers then spend their
/// time handing the GIL over). One thread spins at a time, and only on more than one
/// core; a call that takes longer (or releases the GIL inside) is waited for as before.
void WaitBrieflyForUdfGil() {
  static const bool several_cores = std::thread::hardware_concurrency() > 1;
  if (!several_cores || g_udf_gil_holders.load(std::memory_order_acquire) == 0) return;
  bool expected = false;
  if (!g_gil_spinner.compare_exchange_strong(expected, true)) return;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
  for (int i = 1; g_udf_gil_holders.load(std::memory_order_acquire) > 0; ++i) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
    if (i % 64 == 0 && std::chrono::steady_clock::now() > deadline) break;
  }
  g_gil_spinner.store(false, std::memory_order_release);
}

/// Counts its thread among the UDF's GIL holders from Hold() to its destruction; declared
/// before the GIL's scope, so the count drops only once the GIL is released.
struct UdfGilHold {
  bool held = false;
  void Hold() {
    g_udf_gil_holders.fetch_add(1, std::memory_order_acq_rel);
    held = true;
  }
  ~UdfGilHold() {
    if (held) g_udf_gil_holders.fetch_sub(1, std::memory_order_acq_rel);
  }
};

/// A Python UDF, or a chain of consecutive ones (`Then`): a chain is one Python callable
/// (`millstream._udf_chain.chain`) that runs every step on the batch and returns the last
/// step's results as a list, so a block crosses into Python and back once for all of them.
class PythonUdf : public BatchUdf {
 public:
  PythonUdf(py::object fn, std::string name)
      : steps_{std::make_shared<PyRef>(std::move(fn))}, names_{std::move(name)}, call_(steps_[0]) {}

  arrow::Result<std::shared_ptr<arrow::Table>> Call(
      const std::shared_ptr<arrow::RecordBatch>& batch) override {
    ARROW_ASSIGN_OR_RAISE(auto tables, CallAll(batch));
    if (tables.size() == 1) return tables[0];
    return arrow::Status::Invalid("a chain of Python UDFs made ", tables.size(), " tables");
  }

  arrow::Result<std::vector<std::shared_ptr<arrow::Table>>> CallAll(
      const std::shared_ptr<arrow::RecordBatch>& batch) override {
    PythonCall call;
    if (!call.entered) return arrow::Status::Cancelled("the Python interpreter is exiting");
    t_thread_state.Keep();
    UdfGilHold hold;
    std::optional<py::gil_scoped_acquire> gil;
    WaitBrieflyForUdfGil();
    AcquireGil(gil);
    hold.Hold();
    try {
      py::object arg = BatchToPyArrow(batch);
      PyObject* raw = CallPython(call_->get().ptr(), arg.ptr());
      ParkIfExiting();  // the call outlived the interpreter's exit: never come back
      if (!raw) throw py::error_already_set();
      auto result = py::reinterpret_steal<py::object>(raw);
      std::vector<std::shared_ptr<arrow::Table>> tables;
      if (steps_.size() == 1) {
        ARROW_ASSIGN_OR_RAISE(auto table, TableFromPython(result));
        tables.push_back(std::move(table));
        return tables;
      }
      // A chain answers a list: one result per batch its last step was called on.
      py::list results = result;
      tables.reserve(results.size());
      for (const auto& item : results) {
        ARROW_ASSIGN_OR_RAISE(auto table, TableFromPython(item));
        tables.push_back(std::move(table));
      }
      return tables;
    } catch (py::error_already_set& error) {
      py::object exception = error.value();
      if (!error.trace().is_none() && py::hasattr(exception, "__traceback__") &&
          exception.attr("__traceback__").is_none()) {
        exception.attr("__traceback__") = error.trace();
      }
      // A chain notes the step that raised itself.
      if (steps_.size() == 1) AddNote(exception, "(raised in millstream operator " + names_[0] + ")");
      std::string message = py::str(exception);
      std::string type = py::str(exception.get_type().attr("__name__"));
      return arrow::Status(arrow::StatusCode::ExecutionError, type + ": " + message,
                           std::make_shared<PyErrorDetail>(exception));
    }
  }

  std::shared_ptr<BatchUdf> Then(const std::shared_ptr<BatchUdf>& next) const override {
    auto other = std::dynamic_pointer_cast<PythonUdf>(next);
    if (!other) return nullptr;
    PythonCall call;
    if (!call.entered) return nullptr;
    std::optional<py::gil_scoped_acquire> gil;
    AcquireGil(gil);
    try {
      auto steps = steps_;
      auto names = names_;
      steps.insert(steps.end(), other->steps_.begin(), other->steps_.end());
      names.insert(names.end(), other->names_.begin(), other->names_.end());
      py::list fns, labels;
      for (const auto& step : steps) fns.append(step->get());
      for (const auto& name : names) labels.append(py::str(name));
      py::object chain = py::module_::import("millstream._udf_chain").attr("chain")(fns, labels);
      ParkIfExiting();
      return std::shared_ptr<PythonUdf>(
          new PythonUdf(std::move(steps), std::move(names), std::make_shared<PyRef>(std::move(chain))));
    } catch (py::error_already_set&) {
      return nullptr;  // run one after another instead
    }
  }

 private:
  PythonUdf(std::vector<std::shared_ptr<PyRef>> steps, std::vector<std::string> names,
            std::shared_ptr<PyRef> call)
      : steps_(std::move(steps)), names_(std::move(names)), call_(std::move(call)) {}

  std::vector<std::shared_ptr<PyRef>> steps_;  // the functions, each a step
  std::vector<std::string> names_;             // their operator names
  std::shared_ptr<PyRef> call_;                // what a call calls: the function, or the chain
};

/// pyarrow's own C++ entry points: the Cython `api` functions of pyarrow.lib (those
/// arrow::py::import_pyarrow loads), taken from its __pyx_capi__. A RecordBatch or Table
/// crosses as its shared_ptr: no C Data export and import, no allocation, and no release
/// of the GIL in between (pyarrow's exports release it, and a UDF call on a busy pool then
/// hands the GIL to another thread and waits to get it back, several times per block).
/// Loaded once at import (LoadPyArrowApi); a signature other than the one expected leaves
/// its entry null and the C Data Interface does the work.
struct PyArrowApi {
  PyObject* (*wrap_batch)(const std::shared_ptr<arrow::RecordBatch>&) = nullptr;
  std::shared_ptr<arrow::RecordBatch> (*unwrap_batch)(PyObject*) = nullptr;
  std::shared_ptr<arrow::Table> (*unwrap_table)(PyObject*) = nullptr;
};
PyArrowApi g_pyarrow;

template <typename Fn>
void LoadApiFunction(const py::dict& capi, const char* name, const char* signature, Fn* out) {
  if (!capi.contains(name)) return;
  PyObject* capsule = py::object(capi[name]).ptr();
  const char* actual = PyCapsule_GetName(capsule);
  if (!actual || std::strcmp(actual, signature) != 0) return;
  *out = reinterpret_cast<Fn>(PyCapsule_GetPointer(capsule, actual));
}

}  // namespace

void LoadPyArrowApi() {
  try {
    py::dict capi = py::module_::import("pyarrow.lib").attr("__pyx_capi__");
    LoadApiFunction(capi, "pyarrow_wrap_batch",
                    "PyObject *(std::shared_ptr< arrow::RecordBatch>  const &)",
                    &g_pyarrow.wrap_batch);
    LoadApiFunction(capi, "pyarrow_unwrap_batch", "std::shared_ptr< arrow::RecordBatch>  (PyObject *)",
                    &g_pyarrow.unwrap_batch);
    LoadApiFunction(capi, "pyarrow_unwrap_table", "std::shared_ptr< arrow::Table>  (PyObject *)",
                    &g_pyarrow.unwrap_table);
  } catch (py::error_already_set&) {
    g_pyarrow = PyArrowApi();  // the C Data Interface it is
  }
}

bool PyArrowApiLoaded() {
  return g_pyarrow.wrap_batch && g_pyarrow.unwrap_batch && g_pyarrow.unwrap_table;
}

py::object BatchToPyArrow(const std::shared_ptr<arrow::RecordBatch>& batch) {
  if (g_pyarrow.wrap_batch) {
    PyObject* wrapped = g_pyarrow.wrap_batch(batch);
    if (!wrapped) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(wrapped);
  }
  auto* c_schema = new ArrowSchema();
  auto* c_array = new ArrowArray();
  auto status = arrow::ExportRecordBatch(*batch, c_array, c_schema);
  if (!status.ok()) {
    delete c_schema;
    delete c_array;
    RaiseStatus(status);
  }
  py::capsule schema_capsule(c_schema, "arrow_schema", &DeleteSchemaCapsule);
  py::capsule array_capsule(c_array, "arrow_array", &DeleteArrayCapsule);
  // Held for the process's life: a static py::object would be released after finalization.
  static py::handle import_batch = PyArrowAttr("RecordBatch", "_import_from_c_capsule").release();
  return import_batch(schema_capsule, array_capsule);
}

py::object SchemaToPyArrow(const std::shared_ptr<arrow::Schema>& schema) {
  auto* c_schema = new ArrowSchema();
  CheckStatus(arrow::ExportSchema(*schema, c_schema));
  py::capsule capsule(c_schema, "arrow_schema", &DeleteSchemaCapsule);
  static py::handle import_schema = PyArrowAttr("Schema", "_import_from_c_capsule").release();
  return import_schema(capsule);
}

arrow::Result<std::shared_ptr<arrow::Table>> TableFromPython(const py::handle& obj) {
  if (g_pyarrow.unwrap_table) {
    if (auto table = g_pyarrow.unwrap_table(obj.ptr())) return table;
  }
  if (g_pyarrow.unwrap_batch) {
    if (auto batch = g_pyarrow.unwrap_batch(obj.ptr())) return arrow::Table::FromRecordBatches({batch});
  }
  if (py::hasattr(obj, "__arrow_c_array__") && !py::hasattr(obj, "num_chunks") &&
      py::hasattr(obj, "num_columns")) {
    // A single batch: import it directly.
    py::tuple capsules = obj.attr("__arrow_c_array__")();
    auto* c_schema = static_cast<ArrowSchema*>(
        PyCapsule_GetPointer(capsules[0].ptr(), "arrow_schema"));
    auto* c_array = static_cast<ArrowArray*>(PyCapsule_GetPointer(capsules[1].ptr(), "arrow_array"));
    ARROW_ASSIGN_OR_RAISE(auto batch, arrow::ImportRecordBatch(c_array, c_schema));
    return arrow::Table::FromRecordBatches({batch});
  }
  if (!py::hasattr(obj, "__arrow_c_stream__")) {
    return arrow::Status::TypeError("expected Arrow data (a pyarrow Table or RecordBatch), got ",
                                    std::string(py::str(obj.get_type().attr("__name__"))));
  }
  py::object capsule = obj.attr("__arrow_c_stream__")();
  auto* c_stream = static_cast<ArrowArrayStream*>(
      PyCapsule_GetPointer(capsule.ptr(), "arrow_array_stream"));
  ARROW_ASSIGN_OR_RAISE(auto reader, arrow::ImportRecordBatchReader(c_stream));
  return reader->ToTable();
}

BatchUdfFactory MakePythonUdfFactory(py::object fn, bool is_class, std::string name) {
  auto callable = std::make_shared<PyRef>(std::move(fn));
  if (!is_class) {
    auto udf = std::make_shared<PythonUdf>(callable->get(), name);
    return [udf]() -> arrow::Result<std::shared_ptr<BatchUdf>> { return udf; };
  }
  return [callable, name]() -> arrow::Result<std::shared_ptr<BatchUdf>> {
    PythonCall call;
    if (!call.entered) return arrow::Status::Cancelled("the Python interpreter is exiting");
    std::optional<py::gil_scoped_acquire> gil;
    AcquireGil(gil);
    try {
      PyObject* raw = CallPython(callable->get().ptr(), nullptr);
      ParkIfExiting();
      if (!raw) throw py::error_already_set();
      return std::make_shared<PythonUdf>(py::reinterpret_steal<py::object>(raw), name);
    } catch (py::error_already_set& error) {
      py::object exception = error.value();
      if (!error.trace().is_none() && exception.attr("__traceback__").is_none()) {
        exception.attr("__traceback__") = error.trace();
      }
      AddNote(exception, "(raised constructing the actor of millstream operator " + name + ")");
      std::string message = py::str(exception);
      return arrow::Status(arrow::StatusCode::ExecutionError, message,
                           std::make_shared<PyErrorDetail>(exception));
    }
  };
}

std::function<arrow::Result<std::string>(const std::string&, int64_t)> MakePythonFilenameFunction(
    py::object provider) {
  auto ref = std::make_shared<PyRef>(std::move(provider));
  return [ref](const std::string& write_id, int64_t task_index) -> arrow::Result<std::string> {
    py::gil_scoped_acquire gil;
    try {
      py::object name = ref->get().attr("get_filename_for_task")(write_id, task_index);
      if (!py::isinstance<py::str>(name)) {
        return arrow::Status::TypeError("filename_provider: get_filename_for_task returned ",
                                        std::string(py::str(py::repr(name))), ", not a str");
      }
      return name.cast<std::string>();
    } catch (py::error_already_set& error) {
      py::object exception = error.value();
      if (!error.trace().is_none() && exception.attr("__traceback__").is_none()) {
        exception.attr("__traceback__") = error.trace();
      }
      if (py::hasattr(exception, "add_note")) {
        exception.attr("add_note")("(raised by filename_provider.get_filename_for_task)");
      }
      std::string message = py::str(exception);
      return arrow::Status(arrow::StatusCode::ExecutionError, message,
                           std::make_shared<PyErrorDetail>(exception));
    }
  };
}

namespace {

/// The first quoted path ('/...') in an error message, or "" if there is none.
std::string QuotedPath(const std::string& message) {
  for (size_t open = message.find('\''); open != std::string::npos;
       open = message.find('\'', open + 1)) {
    size_t close = message.find('\'', open + 1);
    if (close == std::string::npos) break;
    std::string quoted = message.substr(open + 1, close - open - 1);
    if (quoted.find('/') != std::string::npos) return quoted;
    open = close;
  }
  return "";
}

/// An OS error as Python's own: OSError(errno, text, path), which Python turns into the
/// subclass for that errno (PermissionError, FileNotFoundError...). The text keeps the
/// engine's message (operator, file) and adds the system's ("No space left on device").
[[noreturn]] void RaiseOSError(int errnum, const std::string& message) {
  std::string text = message + ": " + std::strerror(errnum);
  std::string path = QuotedPath(message);
  py::object error = path.empty() ? py::reinterpret_borrow<py::object>(PyExc_OSError)(errnum, text)
                                  : py::reinterpret_borrow<py::object>(PyExc_OSError)(errnum, text, path);
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(error.ptr())), error.ptr());
  throw py::error_already_set();
}

}  // namespace

[[noreturn]] void RaiseStatus(const arrow::Status& status) {
  if (auto detail = std::dynamic_pointer_cast<PyErrorDetail>(status.detail())) {
    py::object exception = detail->exception();
    py::object traceback = py::getattr(exception, "__traceback__", py::none());
    PyErr_Restore(py::type::of(exception).inc_ref().ptr(), exception.inc_ref().ptr(),
                  traceback.is_none() ? nullptr : traceback.inc_ref().ptr());
    throw py::error_already_set();
  }
  std::string message = status.message();
  switch (status.code()) {
    case arrow::StatusCode::KeyError:
      throw py::key_error(message);
    case arrow::StatusCode::Invalid:
      throw py::value_error(message);
    case arrow::StatusCode::TypeError:
      throw py::type_error(message);
    case arrow::StatusCode::IndexError:
      throw py::index_error(message);
    case arrow::StatusCode::NotImplemented:
      PyErr_SetString(PyExc_NotImplementedError, message.c_str());
      throw py::error_already_set();
    case arrow::StatusCode::IOError:
      if (int errnum = arrow::internal::ErrnoFromStatus(status); errnum != 0) {
        RaiseOSError(errnum, message);
      }
      if (message.find("no such file") != std::string::npos ||
          message.find("no files match") != std::string::npos) {
        PyErr_SetString(PyExc_FileNotFoundError, message.c_str());
      } else {
        PyErr_SetString(PyExc_OSError, message.c_str());
      }
      throw py::error_already_set();
    case arrow::StatusCode::OutOfMemory:
      PyErr_SetString(PyExc_MemoryError, message.c_str());
      throw py::error_already_set();
    default:
      throw std::runtime_error(message);
  }
}

}  // namespace millstream::python
