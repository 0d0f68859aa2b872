#include "runtime/memory.h"

#include <atomic>
#include <chrono>
#include <mutex>
#include <system_error>
#include <thread>

#include <arrow/memory_pool.h>

#include "runtime/counting_memory_pool.h"
#include "runtime/jemalloc_ctl.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace millstream {

namespace {
std::atomic<int64_t> g_live_executions{0};
std::atomic<int64_t> g_freed_since_release{0};
std::atomic<int64_t> g_freed_under_pressure{0};  // ever, by exchanges that spill
std::atomic<bool> g_purging{false};  // under pressure: the engine pool purged as it churns
std::atomic<int64_t> g_churn_at_purge{0};  // the engine pool's total allocated at the last purge

/// jemalloc's decay for arenas made from now on: MemoryReturn::kJemallocDecayMs while no
/// execution is under pressure; 0 (pages given back as they are freed) once an exchange
/// spills, until the last execution ends. Arenas that exist keep the decay they were
/// made with (jemalloc's `arenas.dirty_decay_ms` is the default for new ones).
constexpr int kDefaultDecayMs = MemoryReturn::kJemallocDecayMs;

bool EnginePoolIsJemalloc() {
  static const bool jemalloc = EngineMemoryPool()->backend_name() == "jemalloc";
  return jemalloc;
}

#if defined(__GLIBC__)
/// The lowest free bytes in glibc's arenas seen since the watcher last trimmed them. A
/// trim leaves freed chunks counted as free (only their pages go back), so growth is
/// measured from the lowest point: when the next execution reuses them, or when one ends
/// with its output still held (a table the user drops the moment it is returned).
std::atomic<size_t> g_arena_free_low{SIZE_MAX};

void NoteArenaFreeBytes(size_t free_bytes) {
  size_t low = g_arena_free_low.load(std::memory_order_relaxed);
  while (free_bytes < low && !g_arena_free_low.compare_exchange_weak(low, free_bytes)) {
  }
}

/// Memory a program frees after an execution (the DataFrame of `to_pandas`, dropped by
/// the user) also stays in glibc's arenas. Once a second, while no execution runs, a
/// watcher releases when the arenas' free bytes grew by the threshold since their lowest.
void WatchFreedMemory() {
  constexpr size_t kGrowth = 4 * MemoryReturn::kReleaseThreshold;
  NoteArenaFreeBytes(mallinfo2().fordblks);
  while (true) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const size_t free_bytes = mallinfo2().fordblks;
    NoteArenaFreeBytes(free_bytes);
    if (g_live_executions.load() > 0) continue;
    if (free_bytes - g_arena_free_low.load() < kGrowth) continue;
    // Only the C allocator: it lives until the process ends, while Arrow's pool may be
    // gone during exit (and mimalloc keeps its cache per thread anyway).
    malloc_trim(0);
    g_arena_free_low.store(mallinfo2().fordblks);
  }
}

void StartWatcher() {
  static std::once_flag once;
  std::call_once(once, [] {
    try {
      std::thread(WatchFreedMemory).detach();  // touches no engine or Python state
    } catch (const std::system_error&) {
      // No thread to spare: memory is still returned when executions end.
    }
  });
}

void NoteExecutionOutputHeld() { NoteArenaFreeBytes(mallinfo2().fordblks); }
#else
void StartWatcher() {}
void NoteExecutionOutputHeld() {}
#endif

/// The engine pool's unused pages back to the system. Arrow's ReleaseUnused does not
/// purge jemalloc (see JemallocControl), so on jemalloc the arenas are purged directly.
void ReleaseEnginePool() {
  if (!EnginePoolIsJemalloc() || !JemallocControl::PurgeAll()) EngineMemoryPool()->ReleaseUnused();
}

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
  StartWatcher();
  if (g_live_executions.fetch_sub(1) == 1) {
    NoteExecutionOutputHeld();
    if (g_purging.exchange(false)) (void)arrow::jemalloc_set_decay_ms(kDefaultDecayMs);
  }
  MaybeRelease(bytes);
}

void MemoryReturn::BlocksDropped(int64_t bytes) { MaybeRelease(bytes); }

void MemoryReturn::FreedUnderPressure(int64_t bytes) {
  g_freed_under_pressure.fetch_add(bytes, std::memory_order_relaxed);
  if (EnginePoolIsJemalloc() && !g_purging.load(std::memory_order_relaxed) &&
      !g_purging.exchange(true)) {
    (void)arrow::jemalloc_set_decay_ms(0);
  }
}

void MemoryReturn::AfterTask() {
  thread_local int64_t seen = 0;
  const int64_t freed = g_freed_under_pressure.load(std::memory_order_relaxed);
  if (freed - seen >= kThreadReleaseThreshold) {
    seen = freed;
    // This thread's cache only (mimalloc's collect works on the caller's heap); no
    // malloc_trim, which walks every arena.
    arrow::default_memory_pool()->ReleaseUnused();
  }
  if (!g_purging.load(std::memory_order_relaxed)) return;
  // Under pressure the engine's pool (jemalloc) is purged for every kPurgeEvery bytes
  // it allocated since the last purge, whatever freed it (a spilled block, a sorted
  // run's input, a decoded page): its arenas' decay would keep those pages resident.
  const int64_t churn = EngineMemoryPool()->total_bytes_allocated();
  int64_t last = g_churn_at_purge.load(std::memory_order_relaxed);
  if (churn - last < kPurgeEvery) return;
  if (!g_churn_at_purge.compare_exchange_strong(last, churn)) return;  // another thread purges
  ReleaseEnginePool();
}

void MemoryReturn::ReleaseUnused() {
  arrow::default_memory_pool()->ReleaseUnused();
  ReleaseEnginePool();
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

}  // namespace millstream
