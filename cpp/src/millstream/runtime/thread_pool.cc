#include "runtime/thread_pool.h"

#include <system_error>

#include "runtime/memory.h"

namespace millstream {

namespace {
std::atomic<int64_t> g_busy_workers{0};
}  // namespace

int64_t ThreadPool::BusyWorkers() { return g_busy_workers.load(); }

arrow::Result<std::unique_ptr<ThreadPool>> ThreadPool::Make(int threads) {
  std::unique_ptr<ThreadPool> pool(new ThreadPool());
  threads = std::max(1, threads);
  pool->workers_.reserve(threads);
  for (int i = 0; i < threads; ++i) {
    try {
      pool->workers_.emplace_back([p = pool.get()] { p->Loop(); });
    } catch (const std::system_error& e) {
      pool->Stop();
      return arrow::Status::IOError("could not start worker thread ", i + 1, " of ", threads,
                                    ": ", e.what());
    }
  }
  return pool;
}

ThreadPool::~ThreadPool() { Stop(); }

void ThreadPool::Stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& worker : workers_) worker.join();
  workers_.clear();
}

void ThreadPool::Submit(std::function<void()> work) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(std::move(work));
  }
  wake_.notify_one();
}

void ThreadPool::Loop() {
  while (true) {
    std::function<void()> work;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      work = std::move(queue_.front());
      queue_.pop_front();
      g_busy_workers += 1;
    }
    work();
    work = nullptr;  // what the closure holds is released while still counted busy
    MemoryReturn::AfterTask();
    g_busy_workers -= 1;
  }
}

}  // namespace millstream
