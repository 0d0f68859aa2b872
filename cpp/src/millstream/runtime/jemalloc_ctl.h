#pragma once

namespace millstream {

/// \brief Control of the jemalloc inside libarrow, where Arrow's own API falls short.
///
/// `arrow::MemoryPool::ReleaseUnused()` on the jemalloc pool is meant to purge every arena,
/// but the pinned Arrow builds its mallctl name from the macro's name
/// ("arena.MALLCTL_ARENAS_ALL.purge", not "arena.4096.purge"), so it purges nothing, and
/// libarrow does not export jemalloc's `mallctl`. This finds that function in libarrow's
/// symbol table (the loaded copy's, checked against an exported neighbour) and calls it.
/// When it cannot be found (another build of Arrow, a stripped library), the calls do
/// nothing and say so. Thread-safe (the lookup runs once).
class JemallocControl {
 public:
  /// Whether libarrow's jemalloc `mallctl` was found.
  static bool Available();
  /// Gives the unused pages of every jemalloc arena back to the system, dirty and muzzy
  /// (jemalloc's `arena.<all>.purge`): freed memory leaves the resident set now, not
  /// after the decay time. Costs about a system call per run of free pages. Returns
  /// whether it ran.
  static bool PurgeAll();
};

}  // namespace millstream
