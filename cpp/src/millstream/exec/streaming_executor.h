#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "exec/physical_operator.h"
#include "millstream/context.h"
#include "millstream/dataset.h"
#include "runtime/thread_pool.h"

namespace millstream {

/// \brief The physical plan: operators from source to sink; the first reads `read_tasks`.
struct PhysicalPlan {
  std::vector<std::unique_ptr<PhysicalOperator>> operators;
  std::vector<std::shared_ptr<ReadTask>> read_tasks;
  std::string ToString() const;
};

/// Turns an optimized logical plan into operators, and asks the source for its read tasks.
arrow::Result<PhysicalPlan> PlanPhysical(const PlanPtr& optimized, const DataContext& context);

/// \brief One run of a physical plan: the StreamingExecutor.
///
/// The operators' state lives under one lock. A scheduling pass (Drive) runs on whichever
/// thread changed it — a worker reporting output or completion, the consumer taking a
/// block, Start, Cancel — so no hand-off to a scheduler thread is needed: it moves
/// finished work into the queues, then launches tasks (most downstream first) while the
/// resource budget allows. Every live
/// block is accounted to the operator holding it; an operator may launch a task when its
/// reserved share plus the free shared part of the memory limit covers the task's expected
/// output. When nothing runs and the consumer has nothing to take, one task may launch
/// past the budget, so the pipeline never deadlocks. Tasks run on a thread pool sized to
/// the CPU limit (at most 4 threads per core, at least 256 allowed: a larger limit keeps its
/// CPU slots, and tasks past the threads wait for one). Thread-safe: one consumer calls
/// Next while tasks report from the pool.
class Execution {
 public:
  static arrow::Result<std::unique_ptr<Execution>> Start(PhysicalPlan plan,
                                                         const DataContext& context);
  /// Cancels, waits for the running tasks, then joins the pool: it blocks for as long as
  /// a UDF call in progress takes. Must not run on one of the execution's own workers.
  ~Execution();

  /// The next output block; nullptr at the end. `timeout` < 0 waits without limit.
  arrow::Result<Block> Next(std::chrono::milliseconds timeout, bool* timed_out);
  void Cancel();
  /// Waits until no task runs (`timeout` < 0: without limit); true if none does. After
  /// Cancel, tasks end at their next block, but a UDF call in progress runs to its end.
  bool WaitForTasks(std::chrono::milliseconds timeout);
  ExecutionStats stats() const;
  int64_t accounted_bytes() const;

 private:
  Execution(PhysicalPlan plan, const DataContext& context);
  struct Event {
    size_t op = 0;
    int64_t task = 0;
    Block block;
    /// A block a sink (a write) consumed: its rows and bytes count as the task's output.
    bool sunk = false;
    int64_t sunk_rows = 0, sunk_bytes = 0;
    bool done = false;
    /// With `done`: what the task's read produced (the operator's input when it reads).
    int64_t read_blocks = 0, read_rows = 0, read_bytes = 0;
    arrow::Status status;
    double wall_s = 0;
    double cpu_s = 0;
    double udf_s = 0;
  };

  /// One scheduling pass; runs on whichever thread changed the state (a worker posting,
  /// the consumer taking a block, Start, Cancel), with the lock held.
  void Drive(std::unique_lock<std::mutex>& lock);
  void ProcessEvent(Event& event);
  void Forward(size_t op);
  void PushOutput(size_t op, Block block);
  void StopUpstream(size_t op);
  bool TryLaunch(bool force);
  bool CanLaunch(size_t op, bool force);
  void Launch(size_t op);
  void RunTask(size_t op, int64_t task_index, RefBundle bundle, ActorState* actor,
               std::shared_ptr<std::atomic<bool>> stopped);
  void Post(Event event);
  int64_t OperatorUsage(size_t op) const;
  int64_t TotalUsage() const;
  int64_t EstimateTaskOutput(size_t op) const;
  void UpdatePeaks();
  /// Operator `i` holds `extra` bytes more than it has accounted for a moment (a block a
  /// task made and is handing on, or is writing): its peak and the total's see them.
  void NotePeak(size_t i, int64_t extra);
  double Now() const;
  void Fail(arrow::Status status);
  void ScaleActorPools();
  void RetireActor(PhysicalOperator& op, size_t index);
  bool DownstreamFull(size_t op) const;

  DataContext context_;
  EffectiveLimits limits_;
  PhysicalPlan plan_;
  std::vector<std::unique_ptr<PhysicalOperator>>& ops_;

  mutable std::mutex mutex_;
  std::condition_variable consumer_wake_;
  std::vector<Event> events_;
  // Actors removed from their pools, destroyed outside the lock (their UDFs may need the GIL).
  std::vector<std::unique_ptr<ActorState>> retired_actors_;
  int64_t estimated_input_rows_ = 0;
  int64_t errored_tasks_ = 0;
  double cpus_in_use_ = 0;
  double gpus_in_use_ = 0;
  int64_t running_tasks_ = 0;
  bool finished_ = false;  // the last operator completed: no more output
  arrow::Status error_;
  std::atomic<bool> cancelled_{false};
  int64_t peak_bytes_ = 0;
  std::chrono::steady_clock::time_point start_;
  double end_s_ = -1;

  std::unique_ptr<ThreadPool> pool_;
};

}  // namespace millstream
