#pragma once

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "exec/transform.h"
#include "millstream/dataset.h"
#include "plan/logical_operator.h"

namespace millstream {

/// \brief The unit that flows into an operator: blocks, or read tasks that make them.
struct RefBundle {
  std::vector<Block> blocks;
  std::vector<std::shared_ptr<ReadTask>> read_tasks;
  int64_t rows = 0;
  int64_t bytes = 0;
  static RefBundle Of(Block block);
};

/// \brief A task in flight and what it has produced so far.
struct RunningTask {
  int64_t input_rows = 0;
  int64_t output_rows = 0;
  int64_t output_bytes = 0;  // every block the task produced, handed on or not
  int64_t input_bytes = 0;
  int64_t estimated_output_bytes = 0;
  std::deque<Block> produced;  // held back until earlier tasks finish (ordered operators)
  int64_t produced_bytes = 0;
  /// Written by a sink in this task (counted out already; taken back if the task fails).
  int64_t sunk_blocks = 0, sunk_rows = 0, sunk_bytes = 0;
  bool done = false;
  ActorState* actor = nullptr;
};

/// \brief One physical operator's runtime state, owned and touched only by the
/// executor under its lock. Two kinds:
/// - map: runs `transforms` (after an optional read) as tasks, on a task pool or actors;
/// - limit: slices blocks inline until `limit` rows passed, then stops its upstream.
struct PhysicalOperator {
  enum class Kind { kMap, kLimit };
  Kind kind = Kind::kMap;
  std::string name;
  /// What to run, and with which resources: the optimized logical operator.
  PlanPtr logical;
  const LogicalOperator& spec() const { return *logical; }

  // Inputs.
  std::deque<RefBundle> input_queue;
  int64_t input_rows = 0;
  int64_t input_bytes = 0;
  bool inputs_done = false;
  // Tasks.
  int64_t next_task_index = 0;
  int active_tasks = 0;  // launched and not done
  std::map<int64_t, RunningTask> running;
  std::vector<std::unique_ptr<ActorState>> actors;
  // Outputs waiting for the next operator (or the consumer, for the last one).
  std::deque<Block> output_queue;
  int64_t output_bytes = 0;
  // Limit.
  int64_t rows_passed = 0;
  /// Outputs leave in task (= input) order: under preserve_order, and upstream of a limit,
  /// so that the limit keeps the first rows.
  bool ordered = false;
  // Set when a downstream limit is satisfied or the execution stops: no more launches.
  std::shared_ptr<std::atomic<bool>> stopped = std::make_shared<std::atomic<bool>>(false);
  // Average output bytes of finished tasks (for the budget's estimate of the next one).
  int64_t finished_tasks = 0;
  int64_t finished_output_bytes = 0;
  // Rows in and out of finished tasks: the selectivity that row estimates use.
  int64_t finished_rows_in = 0;
  int64_t finished_rows_out = 0;
  double backpressure_since = -1;

  OperatorStats stats;

  /// "TaskPoolMapOperator[ReadParquet->MapBatches(f)]", "LimitOperator[10]"...
  std::string Describe() const;
  bool HasBundleReady() const;
  RefBundle TakeBundle();
  bool Completed() const;
  int64_t TaskBytes() const;
  /// The actor with the fewest tasks running among those running fewer than the pool's
  /// `max_concurrency`, or null.
  ActorState* FreeActor() const;
  /// CPUs and GPUs one task holds while it runs: an actor's share is its request divided
  /// by `max_concurrency` (as Ray divides an actor's resources among its concurrent tasks).
  double TaskCpus() const;
  double TaskGpus() const;
};

}  // namespace millstream
