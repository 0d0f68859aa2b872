#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <arrow/result.h>
#include <arrow/status.h>
#include <arrow/type_fwd.h>

#include "io/datasource.h"
#include "millstream/block.h"

namespace millstream {

/// \brief A lock whose waiters give up when their execution is cancelled, so that a task
/// waiting for a call that never returns still ends. (A mutex and condition variable, not
/// std::timed_mutex, whose timed lock ThreadSanitizer does not see.)
class CancellableLock {
 public:
  /// Waits until the lock is free and takes it; Cancelled if `*cancelled` becomes true first.
  arrow::Status Acquire(const std::atomic<bool>* cancelled) {
    std::unique_lock<std::mutex> lock(mutex_);
    while (held_) {
      if (cancelled && *cancelled) return arrow::Status::Cancelled("the execution was cancelled");
      free_.wait_for(lock, std::chrono::milliseconds(10));
    }
    held_ = true;
    return arrow::Status::OK();
  }
  void Release() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      held_ = false;
    }
    free_.notify_one();
  }

 private:
  std::mutex mutex_;
  std::condition_variable free_;
  bool held_ = false;
};

/// \brief Holds a CancellableLock from Acquire until it goes out of scope.
class CancellableLockHolder {
 public:
  CancellableLockHolder() = default;
  CancellableLockHolder(const CancellableLockHolder&) = delete;
  CancellableLockHolder& operator=(const CancellableLockHolder&) = delete;
  ~CancellableLockHolder() {
    if (lock_) lock_->Release();
  }
  arrow::Status Acquire(CancellableLock& lock, const std::atomic<bool>* cancelled) {
    ARROW_RETURN_NOT_OK(lock.Acquire(cancelled));
    lock_ = &lock;
    return arrow::Status::OK();
  }

 private:
  CancellableLock* lock_ = nullptr;
};

/// \brief The per-actor state of an actor-pool map: one UDF instance per transform that
/// asks for it, built on the actor's first task. Up to the pool's `max_concurrency` tasks
/// run on it at once; `call_lock` lets one of them at a time into its instances.
struct ActorState {
  /// Guards `instances` (tasks of one actor may start together).
  CancellableLock instances_lock;
  std::map<const void*, std::shared_ptr<void>> instances;
  /// Held around every call into this actor's instances, unless the pool allows true
  /// multi-threading: an actor runs one call at a time, as a Ray actor does.
  CancellableLock call_lock;
  /// Constructions of UDF instances on this actor (each transform builds once).
  std::atomic<int> constructed{0};
  /// Tasks running on it (the scheduler's count, read and written under its lock).
  int running = 0;
  /// The GPUs it owns for its lifetime (an actor pool with num_gpus), else empty.
  std::vector<int> gpu_ids;
};

/// \brief What a task knows about itself while its transforms run.
struct TaskContext {
  int64_t task_index = 0;
  /// Set when the task runs on an actor.
  ActorState* actor = nullptr;
  /// With `actor`: calls into the actor's instances overlap (the pool's
  /// `enable_true_multi_threading`); otherwise they take `actor->call_lock`.
  bool concurrent_calls = false;
  /// Set when the execution is cancelled; transforms stop at the next block.
  const std::atomic<bool>* cancelled = nullptr;
  /// Seconds spent inside user functions, added to by the transforms of this task.
  double* udf_seconds = nullptr;
  /// A sink transform (a write) calls this for each block it consumed, once written:
  /// the block counts as the operator's output (blocks, rows, bytes out) and as memory
  /// it held. Valid while the task runs; may be empty (no counting).
  std::function<void(const arrow::RecordBatch&)> sunk;
};

/// \brief The running state of one transform inside one task (buffers, open files).
class TransformState {
 public:
  virtual ~TransformState() = default;
  /// Consumes one block, emitting any number of output blocks.
  virtual arrow::Status Push(Block block, const Emit& emit) = 0;
  /// The task's input is over: emit what is buffered, close what is open.
  virtual arrow::Status Finish(const Emit& emit) { return arrow::Status::OK(); }
};

/// \brief One step of a map operator (a UDF, a predicate, a projection, a write).
/// Immutable after planning; fused steps run one after another inside one task.
class Transform {
 public:
  virtual ~Transform() = default;
  /// The name shown in plans and stats, e.g. "MapBatches(f)".
  virtual std::string name() const = 0;
  virtual arrow::Result<std::unique_ptr<TransformState>> MakeState(
      const TaskContext& task) const = 0;
  /// One output row per input row, in order: a limit may move ahead of it.
  virtual bool row_preserving() const { return false; }
  /// Its output is about its input's size or less (a filter, a projection, a column the
  /// engine computes per row, a sample, a write): a task's output can be sized from its
  /// input before any task has finished. False for user functions, whose output may be
  /// far larger than what they get.
  virtual bool output_sized_by_input() const { return false; }
  /// The output schema for blocks of `input`, when known without running the step (a
  /// projection, a filter); null when only running it tells (a UDF).
  virtual arrow::Result<std::shared_ptr<arrow::Schema>> SchemaOut(
      const std::shared_ptr<arrow::Schema>& input) const {
    return nullptr;
  }
  /// Its output depends on which rows each task gets (a seeded sample): the planner makes
  /// everything upstream hand on its output in order, so task i always gets the same rows.
  virtual bool needs_ordered_input() const { return false; }
  /// Last in a task, its blocks leave as it makes them (a repartition to a row count):
  /// the task does not re-shape them by size.
  virtual bool shapes_own_output() const { return false; }
  /// The transform one execution runs, when it differs per execution (a sample reseeded
  /// after each execution); null: this one. Called once per planning.
  virtual std::shared_ptr<const Transform> ForExecution() const { return nullptr; }
};

}  // namespace millstream
