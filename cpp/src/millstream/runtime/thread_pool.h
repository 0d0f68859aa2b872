#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <arrow/result.h>

namespace millstream {

/// \brief A fixed set of worker threads running submitted closures in FIFO order.
///
/// Thread-safe. The destructor runs what was submitted, then joins the workers; a pool
/// must not be destroyed by one of its own workers.
class ThreadPool {
 public:
  /// A pool of `threads` workers (at least 1), or an error if the system cannot start
  /// them (the workers already started are joined).
  static arrow::Result<std::unique_ptr<ThreadPool>> Make(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Submit(std::function<void()> work);
  int size() const { return static_cast<int>(workers_.size()); }

  /// Workers of every pool in the process that are running a closure right now (the
  /// Python binding waits at interpreter exit until the only busy ones are inside UDFs).
  static int64_t BusyWorkers();

 private:
  ThreadPool() = default;
  void Loop();
  void Stop();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace millstream
