// Interpreter exit and engine threads: the gate engine threads pass to call into Python,
// and the GIL helpers that never let a finalizing interpreter unwind an engine thread.

#include <cxxabi.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "py_interop.h"
#include "runtime/thread_pool.h"

namespace millstream::python {

namespace {

std::mutex g_gate_mutex;
bool g_exiting = false;             // guarded by g_gate_mutex; mirrored in g_exiting_flag
std::atomic<bool> g_exiting_flag{false};
std::atomic<int64_t> g_python_calls{0};     // engine workers inside a Python call
std::atomic<int64_t> g_engine_waits{0};     // Python threads in the engine, GIL released
std::atomic<int64_t> g_reapers{0};          // threads destroying an abandoned execution

}  // namespace

bool PythonExiting() { return g_exiting_flag.load(std::memory_order_acquire); }

bool EnterPythonCall() {
  std::lock_guard<std::mutex> lock(g_gate_mutex);
  if (g_exiting) return false;
  g_python_calls += 1;
  return true;
}

void LeavePythonCall() { g_python_calls -= 1; }

bool EnterReaper() {
  std::lock_guard<std::mutex> lock(g_gate_mutex);
  if (g_exiting) return false;
  g_reapers += 1;
  return true;
}

void LeaveReaper() { g_reapers -= 1; }

[[noreturn]] void ParkThread() {
  while (true) std::this_thread::sleep_for(std::chrono::hours(1));
}

void AcquireGil(std::optional<py::gil_scoped_acquire>& gil) {
  try {
    gil.emplace();
  } catch (abi::__forced_unwind&) {
    // A finalizing interpreter ends threads that ask for the GIL (pthread_exit); unwinding
    // the engine's frames would run destructors that need Python again. Stay here instead.
    ParkThread();
  }
}

PyObject* CallPython(PyObject* fn, PyObject* arg) {
  try {
    return arg ? PyObject_CallOneArg(fn, arg) : PyObject_CallNoArgs(fn);
  } catch (abi::__forced_unwind&) {
    ParkThread();  // the call wanted the GIL back while the interpreter finalizes
  }
}

void ParkIfExiting() {
  if (!PythonExiting()) return;
  PyEval_SaveThread();  // let the interpreter finish without this thread
  ParkThread();
}

GilRelease::GilRelease() {
  g_engine_waits += 1;
  state_ = PyEval_SaveThread();
}

GilRelease::~GilRelease() {
  g_engine_waits -= 1;
  try {
    PyEval_RestoreThread(state_);
  } catch (abi::__forced_unwind&) {
    ParkThread();  // a daemon thread coming back while the interpreter finalizes
  }
}

void CloseGate() {
  std::lock_guard<std::mutex> lock(g_gate_mutex);
  g_exiting = true;
  g_exiting_flag = true;
}

bool WaitForEngineToSettle(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int quiet = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    // Busy workers are read first: after the gate closed, Python calls only end, so a
    // count of busy workers no larger than the calls read after it means every busy
    // worker is inside a UDF call (and parks when that call returns).
    int64_t busy = ThreadPool::BusyWorkers();
    bool settled = busy <= g_python_calls.load() && g_engine_waits.load() == 0 &&
                   g_reapers.load() == 0;
    quiet = settled ? quiet + 1 : 0;
    if (quiet >= 3) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

}  // namespace millstream::python
