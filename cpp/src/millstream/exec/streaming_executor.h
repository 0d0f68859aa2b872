#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "exec/backend.h"
#include "exec/physical_operator.h"
#include "exec/policies/backpressure_policy.h"
#include "millstream/context.h"
#include "millstream/dataset.h"
#include "runtime/counting_memory_pool.h"

namespace millstream {

/// \brief The physical plan: operators in topological order (every operator after the
/// operators feeding it), the last one feeding the consumer.
struct PhysicalPlan {
  std::vector<std::unique_ptr<PhysicalOperator>> operators;
  std::string ToString() const;
};

/// \brief One run of a physical plan: the StreamingExecutor.
///
/// The operators' state lives under one lock. A scheduling pass (Drive) runs on whichever
/// thread changed it — a worker reporting output or completion, the consumer taking a
/// block, Start, Cancel — so no hand-off to a scheduler thread is needed: it hands
/// finished work to the operators, moves outputs along the plan's edges, then launches
/// tasks (most downstream first) while the CPU/GPU slots and the backpressure policies
/// allow. Every live block is accounted to the operator holding it (an operator's
/// output queued downstream counts as its own). When nothing runs and the consumer has
/// nothing to take, one task may launch past the policies, so the pipeline never
/// deadlocks. Tasks run on a backend (today: the local thread pool). Thread-safe: one
/// consumer calls Next while tasks report from the backend.
class Execution : private ExecutionView {
 public:
  /// Starts running `plan`; its tasks run on `backend` (null: the local thread pool
  /// sized to the CPU limit; a test may pass a fake one).
  static arrow::Result<std::unique_ptr<Execution>> Start(PhysicalPlan plan,
                                                         const DataContext& context,
                                                         std::unique_ptr<Backend> backend = nullptr);
  /// Cancels, waits for the running tasks, then closes the backend: it blocks for as long
  /// as a UDF call in progress takes. Must not run on one of the execution's own workers.
  ~Execution() override;

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
    enum class Kind { kOutput, kSunk, kDone } kind = Kind::kOutput;
    size_t op = 0;
    int64_t task = 0;
    Block block;
    int64_t sunk_rows = 0, sunk_bytes = 0;
    TaskResult result;
  };

  // ExecutionView, for the policies.
  const std::vector<std::unique_ptr<PhysicalOperator>>& operators() const override { return ops_; }
  int64_t OperatorUsage(size_t i) const override;
  int64_t TotalUsage() const override;
  int64_t TaskScratchPeak(size_t i) const override { return scratch_peaks_[i]; }
  const EffectiveLimits& limits() const override { return limits_; }
  const DataContext& context() const override { return context_; }

  /// One scheduling pass, with the lock held.
  void Drive(std::unique_lock<std::mutex>& lock);
  /// Whether Next has something to answer (a block, the end, an error); with the lock.
  bool ConsumerReady() const;
  void ProcessEvent(Event& event);
  /// Moves operator `i`'s outputs to its downstream operator (or leaves them for the
  /// consumer), and its end once it is complete.
  void Forward(size_t i);
  /// Stops every operator feeding `i`, directly or not.
  void StopUpstream(size_t i);
  bool TryLaunch(bool force);
  bool CanLaunch(size_t i, bool force) const;
  void Launch(size_t i);
  /// Runs a task on a worker thread; `meter` (installed on the thread) is what its
  /// operator's usage counts of the task's own allocations.
  void RunTask(size_t i, TaskSpec spec, std::shared_ptr<std::atomic<bool>> stopped,
               TaskMemoryMeter* meter);
  /// Queues events (in order) and runs a scheduling pass, on the posting thread.
  void Post(Event event);
  void Post(std::vector<Event> events);
  /// Raises the peaks to what is held now; also called by the observers (stats(),
  /// accounted_bytes()), so usage between two events (a running task's scratch) is seen
  /// whenever someone looks.
  void UpdatePeaks() const;
  /// Operator `i` holds `extra` bytes more than it has accounted for a moment (a block a
  /// task made and is handing on, or is writing): its peak and the total's see them.
  void NotePeak(size_t i, int64_t extra);
  double Now() const;
  void Fail(arrow::Status status);

  DataContext context_;
  EffectiveLimits limits_;
  PhysicalPlan plan_;
  std::vector<std::unique_ptr<PhysicalOperator>>& ops_;
  std::vector<std::unique_ptr<BackpressurePolicy>> policies_;
  std::vector<bool> forwarded_done_;  // operator i's end was passed downstream

  mutable std::mutex mutex_;
  std::condition_variable consumer_wake_;
  std::vector<Event> events_;
  // Blocks of the last operator's bundle not yet taken by the consumer.
  std::deque<BlockRef> consumer_blocks_;
  // Actors removed from their pools, destroyed outside the lock (their UDFs may need the GIL).
  std::vector<std::unique_ptr<ActorState>> retired_actors_;
  int64_t errored_tasks_ = 0;
  double cpus_in_use_ = 0;
  double gpus_in_use_ = 0;
  std::vector<TaskResources> task_resources_;  // per operator: what its running tasks hold
  // Per operator: the memory meter of each running task (by task index), counted in the
  // operator's usage (decode buffers, compute scratch: what no queue counts yet).
  std::vector<std::map<int64_t, std::shared_ptr<TaskMemoryMeter>>> task_meters_;
  std::vector<int64_t> scratch_peaks_;  // per operator: the largest finished task's meter peak
  int64_t running_tasks_ = 0;
  bool finished_ = false;  // the last operator completed: no more output
  arrow::Status error_;
  std::atomic<bool> cancelled_{false};
  mutable int64_t peak_bytes_ = 0;
  std::chrono::steady_clock::time_point start_;
  double end_s_ = -1;

  std::unique_ptr<Backend> backend_;
};

}  // namespace millstream
