#pragma once

#include <deque>
#include <map>
#include <memory>
#include <vector>

#include "exec/physical_operator.h"
#include "plan/logical_operators.h"
#include "runtime/gpu_ids.h"

namespace millstream {

/// \brief Runs a chain of transforms (after an optional read) over bundles of blocks,
/// one task per bundle: the shared part of the task-pool and actor-pool map operators.
///
/// Input bundles wait until a task has `min_rows_per_bundle` rows. Outputs of a task are
/// handed on as they come, or — when ordered — in task order (a task finishing early
/// holds its blocks until the tasks before it are done).
class MapOperator : public PhysicalOperator {
 public:
  /// `spec`: the optimized logical operator (its transforms and resources).
  MapOperator(std::shared_ptr<const MapOp> spec);

  const MapOp& spec() const { return *spec_; }
  /// For an operator that reads: its read tasks become its input.
  void SetReadTasks(std::vector<std::shared_ptr<ReadTask>> tasks);
  int64_t estimated_input_rows() const { return estimated_input_rows_; }
  /// Where the GPU ids of a map with num_gpus come from (shared by an execution).
  void SetGpuAllocator(std::shared_ptr<GpuAllocator> gpus) { gpus_ = std::move(gpus); }

  void AddInput(int input_index, RefBundle bundle) override;
  int64_t QueuedInputBytes() const override { return input_bytes_; }
  int64_t QueuedInputBundles() const override { return static_cast<int64_t>(input_queue_.size()); }

  /// A transform needs it (a seeded sample: task i must always get the same rows).
  bool NeedsOrderedInput() const override;
  bool RunsTasks() const override { return true; }
  bool HasTaskReady() const override;
  int64_t EstimateNextTaskBytes() const override;
  bool OutputSizedByInput() const override;
  TaskSpec LaunchTask() override;
  arrow::Status RunTask(const TaskSpec& spec, TaskRunContext& run) const override;
  void OnTaskOutput(int64_t task, Block block) override;
  void OnTaskSunk(int64_t task, int64_t rows, int64_t bytes) override;
  void OnTaskDone(int64_t task, const TaskResult& result) override;
  int64_t ActiveTasks() const override { return active_tasks_; }

  int64_t CurrentUsage() const override;
  bool Completed() const override;
  void Stop() override;
  int64_t EstimateRowsOut(int64_t rows_in) const override;

 protected:
  /// A task in flight and what it has produced so far.
  struct RunningTask {
    int64_t input_rows = 0;
    int64_t input_bytes = 0;
    int64_t output_rows = 0;
    int64_t output_bytes = 0;  // every block the task produced, handed on or not
    std::deque<Block> produced;  // held back until earlier tasks finish (ordered)
    int64_t produced_bytes = 0;
    /// Written by a sink in this task (counted out already; taken back if it fails).
    int64_t sunk_blocks = 0, sunk_rows = 0, sunk_bytes = 0;
    bool done = false;
    ActorState* actor = nullptr;
    std::vector<int> gpu_ids;  // a task pool's own GPUs, given back when it ends
  };
  bool HasBundleReady() const;
  /// Keeps the first `keep` rows of `bundle` in it and returns the rest (blocks sliced).
  RefBundle CutBundle(RefBundle& bundle, int64_t keep);
  /// The pool-specific part of launching (picking an actor); true if the task may go.
  virtual void AssignTask(TaskSpec& spec, RunningTask& task) {}
  virtual void TaskEnded(RunningTask& task) {}
  /// Hands on the outputs that may leave: all of them, or in task order.
  void Release(std::map<int64_t, RunningTask>::iterator from);

  std::shared_ptr<const MapOp> spec_;
  std::shared_ptr<GpuAllocator> gpus_;
  std::deque<RefBundle> input_queue_;
  int64_t input_rows_ = 0;
  int64_t input_bytes_ = 0;
  int64_t estimated_input_rows_ = 0;
  int64_t next_task_index_ = 0;
  int active_tasks_ = 0;
  std::map<int64_t, RunningTask> running_;
  // Finished tasks: the size of the next task's output and the selectivity so far.
  int64_t finished_tasks_ = 0;
  int64_t finished_output_bytes_ = 0;
  int64_t finished_rows_in_ = 0;
  int64_t finished_rows_out_ = 0;
};

/// Runs the map's tasks on the shared CPU pool (at most `compute.max_size` at once).
std::unique_ptr<MapOperator> MakeTaskPoolMapOperator(std::shared_ptr<const MapOp> spec);
/// Runs the map's tasks on a pool of actors (see ActorState), scaled between the
/// compute strategy's min and max size.
std::unique_ptr<MapOperator> MakeActorPoolMapOperator(std::shared_ptr<const MapOp> spec,
                                                      const DataContext& context);

}  // namespace millstream
