// Interpreter exit and engine threads: the gate engine threads pass to call into Python,
// and the GIL helpers that never let a finalizing interpreter unwind an engine thread.

#if defined(__GLIBCXX__)
#include <cxxabi.h>
// A finalizing CPython ends threads that ask for the GIL with pthread_exit, which glibc
// implements as a forced unwind (abi::__forced_unwind); caught, the thread parks instead.
#define MILLSTREAM_PARK_IF_ENDED(statement) \
  try {                                     \
    statement;                              \
  } catch (abi::__forced_unwind&) {         \
    ParkThread();                           \
  }
#else
#define MILLSTREAM_PARK_IF_ENDED(statement) statement;
#endif

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
std::thread::id g_exit_thread;              // the thread that closed the gate; guarded by g_gate_mutex

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

// Unwinding the engine's frames would run destructors that need Python again (and abort
// in a noexcept one): a thread the interpreter ends stays where it is instead.
void AcquireGil(std::optional<py::gil_scoped_acquire>& gil) {
  MILLSTREAM_PARK_IF_ENDED(gil.emplace());
}

PyObject* CallPython(PyObject* fn, PyObject* arg) {
  PyObject* result = nullptr;
  MILLSTREAM_PARK_IF_ENDED(result = arg ? PyObject_CallOneArg(fn, arg) : PyObject_CallNoArgs(fn));
  return result;
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
  MILLSTREAM_PARK_IF_ENDED(PyEval_RestoreThread(state_));  // a daemon thread, at exit
}

void ParkWaiterIfExiting() {
  if (!PythonExiting()) return;
  {
    std::lock_guard<std::mutex> lock(g_gate_mutex);
    if (std::this_thread::get_id() == g_exit_thread) return;  // exit's own thread goes on
  }
  g_engine_waits -= 1;  // no longer waiting on the engine: exit need not wait for it
  ParkThread();
}

void CloseGate() {
  std::lock_guard<std::mutex> lock(g_gate_mutex);
  g_exit_thread = std::this_thread::get_id();
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
