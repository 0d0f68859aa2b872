#include <algorithm>
#include <cmath>
#include <thread>

#include "exec/backend.h"
#include "runtime/thread_pool.h"

namespace millstream {
namespace {

int WorkerThreads(double cpu) {
  const double cap = std::max(256.0, 4.0 * std::thread::hardware_concurrency());
  return static_cast<int>(std::clamp(std::ceil(cpu), 1.0, cap));
}

class LocalBackend : public Backend {
 public:
  explicit LocalBackend(std::unique_ptr<ThreadPool> pool) : pool_(std::move(pool)) {}
  void Submit(std::function<void()> task) override { pool_->Submit(std::move(task)); }

 private:
  std::unique_ptr<ThreadPool> pool_;
};

}  // namespace

arrow::Result<std::unique_ptr<Backend>> MakeLocalBackend(double cpu_limit) {
  ARROW_ASSIGN_OR_RAISE(auto pool, ThreadPool::Make(WorkerThreads(cpu_limit)));
  return std::make_unique<LocalBackend>(std::move(pool));
}

}  // namespace millstream
