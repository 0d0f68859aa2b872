#include "runtime/memory.h"

#include <atomic>

#include <arrow/memory_pool.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace millstream {

namespace {
std::atomic<int64_t> g_live_executions{0};
std::atomic<int64_t> g_freed_since_release{0};

void MaybeRelease(int64_t bytes) {
  int64_t freed = g_freed_since_release += bytes;
  if (freed < MemoryReturn::kReleaseThreshold || g_live_executions.load() > 0) return;
  // One thread releases for everything freed so far.
  if (!g_freed_since_release.compare_exchange_strong(freed, 0)) return;
  MemoryReturn::ReleaseUnused();
}
}  // namespace

void MemoryReturn::ExecutionStarted() { g_live_executions += 1; }

void MemoryReturn::ExecutionEnded(int64_t bytes) {
  g_live_executions -= 1;
  MaybeRelease(bytes);
}

void MemoryReturn::BlocksDropped(int64_t bytes) { MaybeRelease(bytes); }

void MemoryReturn::ReleaseUnused() {
  arrow::default_memory_pool()->ReleaseUnused();
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

}  // namespace millstream
