#pragma once

#include <functional>
#include <memory>

#include <arrow/result.h>

namespace millstream {

/// \brief Where tasks run. The executor decides what runs next; a backend runs it. The
/// local backend runs each task on a thread of a pool sized to the CPU limit (actors are
/// in-process state, see ActorState); worker processes and Ray would be other backends.
class Backend {
 public:
  virtual ~Backend() = default;
  /// Runs `task` (which reports through the executor's callbacks) as soon as a worker is
  /// free. Thread-safe.
  virtual void Submit(std::function<void()> task) = 0;
};

/// Threads for a CPU limit: one per CPU slot, at most 4 per core (at least 256 allowed),
/// so a cluster-sized limit (`cpu=40000`) keeps its slots without 40000 threads. The pool
/// is joined when the backend is destroyed.
arrow::Result<std::unique_ptr<Backend>> MakeLocalBackend(double cpu_limit);

}  // namespace millstream
