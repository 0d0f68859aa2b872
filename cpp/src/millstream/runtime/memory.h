#pragma once

#include <cstdint>

namespace millstream {

/// \brief Giving freed memory back to the system after an execution.
///
/// The C allocator keeps what it freed in its arenas (glibc raises its mmap threshold as
/// large blocks come and go, so numpy arrays a UDF made end up there), and Arrow's pool
/// keeps unused pages: without a nudge, resident memory stays at the peak of the last
/// run. Thread-safe.
///
/// With glibc, the first execution's end also starts a detached watcher thread: once a
/// second, while no execution runs, it trims the arenas (malloc_trim only) if their free
/// bytes grew by 4 x kReleaseThreshold since their lowest point since the last trim
/// (memory the program freed after an execution, such as a dropped DataFrame); the last
/// running execution's end is also looked at, while its output is still held. It touches
/// no engine or Python state.
class MemoryReturn {
 public:
  /// An execution starts (counted until ExecutionEnded).
  static void ExecutionStarted();
  /// An execution ended, having produced `bytes` of blocks. When it was the last one
  /// running and enough was freed since the last release, releases.
  static void ExecutionEnded(int64_t bytes);
  /// `bytes` of blocks held outside an execution (a materialized dataset) were dropped;
  /// releases under the same conditions.
  static void BlocksDropped(int64_t bytes);
  /// Releases now: Arrow's default pool's unused memory, then the C allocator's free
  /// arenas (glibc's malloc_trim). Takes milliseconds when gigabytes were freed.
  static void ReleaseUnused();

  /// `bytes` of blocks were freed under memory pressure (by an exchange that spills).
  /// The first call also puts the engine's pool (when it is jemalloc) under pressure
  /// until the last running execution ends: arenas made meanwhile decay at once, and
  /// AfterTask purges them all as the pool churns.
  static void FreedUnderPressure(int64_t bytes);
  /// Called by a worker thread after each task: once kThreadReleaseThreshold bytes were
  /// freed under pressure (anywhere) since this thread last released, releases the unused
  /// memory Arrow's default pool caches for this thread. mimalloc keeps freed pages in
  /// the heap of the thread that allocated them and gives them back to the system only
  /// as that thread calls into it, so each worker releases its own. And once an exchange
  /// spills, for every kPurgeEvery bytes the engine's pool allocated since the last
  /// purge, one thread purges its jemalloc arenas (JemallocControl::PurgeAll).
  static void AfterTask();

  /// Bytes freed before a release is worth its cost.
  static constexpr int64_t kReleaseThreshold = 64LL << 20;
  /// jemalloc's decay (ms) for the arenas the engine pool's threads get: pages freed go
  /// back to the system after this long (Arrow's default is a second). jemalloc applies
  /// a decay to arenas made after it is set, so the engine sets it when it first takes
  /// its pool, before its threads allocate.
  static constexpr int kJemallocDecayMs = 100;
  /// Bytes the engine's pool allocates, under pressure, between two purges of its
  /// jemalloc arenas (AfterTask). With 16 MiB a spilling sort's peak RSS was +230..257 MiB
  /// over a 256 MiB limit (+528..543 with the decay alone), its time within the noise, a
  /// spilling shuffle's about a tenth longer; 32 MiB gave +263..292 MiB, no faster (bench/RESULTS).
  static constexpr int64_t kPurgeEvery = 16LL << 20;
  /// Bytes one thread frees under pressure before FreedUnderPressure releases.
  static constexpr int64_t kThreadReleaseThreshold = 16LL << 20;
};

}  // namespace millstream
