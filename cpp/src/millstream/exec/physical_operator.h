#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <arrow/status.h>

#include "exec/ref_bundle.h"
#include "exec/transform.h"
#include "millstream/context.h"
#include "millstream/dataset.h"

namespace millstream {

/// \brief A task ready to run: which task of its operator, on which inputs. The
/// operator's RunTask interprets it; nothing in it points into the executor's state.
struct TaskSpec {
  int64_t task_index = 0;
  RefBundle inputs;
  /// For a task of an actor pool: the actor it runs on.
  ActorState* actor = nullptr;
  /// The GPUs the task may use (its actor's, or its own for a task pool with num_gpus).
  std::vector<int> gpu_ids;
  /// For a stage of an all-to-all operator: 0 map, 1 reduce; and the reduce partition.
  int stage = 0;
  int64_t partition = 0;
  /// For a map stage of an all-to-all operator: which of its inputs the blocks are from.
  int input = 0;
};

/// \brief What a running task reports through. Valid while the task runs; used only by
/// the task's own thread.
struct TaskRunContext {
  const DataContext* context = nullptr;
  /// Set when the execution is cancelled or the operator stopped: end at the next block.
  std::function<bool()> stopped;
  /// Hands on one output block (Cancelled once stopped).
  std::function<arrow::Status(Block)> emit;
  /// A sink (a write) consumed this block: it counts as output (see TaskContext::sunk).
  std::function<void(const arrow::RecordBatch&)> sunk;
  const std::atomic<bool>* cancelled = nullptr;
  double udf_seconds = 0;
  /// What the task's read produced (for an operator that reads: its input).
  int64_t read_blocks = 0, read_rows = 0, read_bytes = 0;
  /// Set by a task before its last outputs, when nothing is computed between them (a
  /// final flush): they are handed on with the task's end, in one scheduling pass
  /// instead of one each.
  bool finishing = false;
};

/// \brief How a task ended, as its operator learns it.
struct TaskResult {
  arrow::Status status;
  /// The failure is tolerated (max_errored_blocks): drop what the task has not handed on.
  bool discard = false;
  double wall_s = 0, cpu_s = 0, udf_s = 0;
  int64_t read_blocks = 0, read_rows = 0, read_bytes = 0;
};

/// \brief CPUs and GPUs one task holds while it runs.
struct TaskResources {
  double cpus = 0;
  double gpus = 0;
};

/// \brief One operator of a physical plan, in Ray Data's vocabulary: inputs arrive
/// (AddInput, InputsDone), tasks launch (HasTaskReady, LaunchTask) and run (RunTask) on a
/// backend, report (OnTaskOutput, OnTaskSunk, OnTaskDone), and outputs leave (HasNext,
/// TakeNext) until Completed. An operator without tasks (a limit, a union) does its work
/// in AddInput.
///
/// Threading: every method but RunTask is called by the executor under its lock. RunTask
/// runs on a worker thread, several at once; it may read the operator's immutable
/// configuration and the spec it is given, and nothing else of its state.
class PhysicalOperator {
 public:
  PhysicalOperator(std::string display_name, int num_inputs);
  virtual ~PhysicalOperator() = default;

  /// "TaskPoolMapOperator[ReadParquet->MapBatches(f)]", "LimitOperator[10]"...
  virtual std::string Describe() const = 0;
  /// What the user asked, for progress and stats: "ReadParquet->MapBatches(f)".
  const std::string& display_name() const { return display_name_; }
  int num_inputs() const { return num_inputs_; }

  // ---- Inputs ----
  /// One bundle for input `input_index` (0 for an operator with one input).
  virtual void AddInput(int input_index, RefBundle bundle) = 0;
  /// Input `input_index` will get no more bundles.
  virtual void InputDone(int input_index);
  bool AllInputsDone() const;
  /// Wants no more input at all (a satisfied limit): the executor stops its upstream.
  virtual bool InputSatisfied() const { return false; }
  /// Needs its input in input order (a limit keeps the first rows): the planner makes
  /// everything upstream of it hand on its output in order.
  virtual bool NeedsOrderedInput() const { return false; }
  /// Bytes of input waiting here; the operator feeding it accounts for them.
  virtual int64_t QueuedInputBytes() const { return 0; }
  virtual int64_t QueuedInputBundles() const { return 0; }
  /// An error found outside any task (a zip's inputs of different lengths), checked
  /// after each input the operator gets: the execution fails with it.
  virtual arrow::Status status() const { return arrow::Status::OK(); }

  // ---- Outputs ----
  bool HasNext() const { return !output_queue_.empty(); }
  RefBundle TakeNext();
  int64_t OutputQueueBytes() const { return output_queue_bytes_; }

  // ---- Tasks ----
  /// Whether the operator has tasks at all (budget shares are per task-running operator).
  virtual bool RunsTasks() const { return false; }
  /// A task could launch now: its input is ready and the operator's own concurrency
  /// (pool size, free actor) allows it. Budgets are the executor's policies.
  virtual bool HasTaskReady() const { return false; }
  virtual TaskResources NextTaskResources() const { return {}; }
  /// Bytes the next task is expected to add (its output, its own memory).
  virtual int64_t EstimateNextTaskBytes() const { return 0; }
  /// The next task moves what it holds out of the executor's accounting rather than
  /// adding to it (an exchange's map task turns its input into runs it spills past its
  /// reservation): the memory budget never holds it back, since running it is how memory
  /// is freed.
  virtual bool NextTaskRelievesMemory() const { return false; }
  /// Its next task's output is known from its input before any task has finished (only
  /// engine steps, no user function, over blocks or reads sized by metadata): the memory
  /// budget need not run a first task alone to size the rest.
  virtual bool OutputSizedByInput() const { return false; }
  /// Tasks that could use the inputs waiting here at once: the capacity that
  /// downstream-capacity backpressure compares the queue with; unset: no limit.
  virtual std::optional<double> TaskCapacity(const EffectiveLimits& limits) const {
    return std::nullopt;
  }
  /// Takes the next task (only when HasTaskReady).
  virtual TaskSpec LaunchTask() { return {}; }
  virtual arrow::Status RunTask(const TaskSpec& spec, TaskRunContext& run) const {
    return arrow::Status::NotImplemented(Describe(), " runs no tasks");
  }
  virtual void OnTaskOutput(int64_t task, Block block) {}
  virtual void OnTaskSunk(int64_t task, int64_t rows, int64_t bytes) {}
  virtual void OnTaskDone(int64_t task, const TaskResult& result) {}
  virtual int64_t ActiveTasks() const { return 0; }
  /// Called every scheduling pass (actor pools scale here); actors retired go to
  /// `retired`, destroyed by the executor outside its lock.
  virtual void Scale(std::vector<std::unique_ptr<ActorState>>& retired) {}
  virtual int64_t Actors() const { return 0; }
  /// Called every scheduling pass with the bytes the memory limit leaves for this
  /// operator (the limit less what the others hold): an operator that buffers (an
  /// exchange) caps its reservation with it and spills past it.
  virtual void SetMemoryBudget(int64_t available) {}
  virtual int64_t ActorsStarted() const { return stats.actors_started; }

  // ---- State ----
  /// Bytes held by this operator: its running tasks' inputs and outputs not yet handed
  /// on, its output queue, and anything else it keeps (buffers, hash tables).
  virtual int64_t CurrentUsage() const { return output_queue_bytes_; }
  virtual bool Completed() const;
  /// No more tasks: a downstream limit is satisfied or the execution stops. Queued input
  /// and output are dropped.
  virtual void Stop();
  bool stopped() const { return *stopped_; }
  const std::shared_ptr<std::atomic<bool>>& stop_flag() const { return stopped_; }
  /// Rows this operator is expected to output, given what is expected into it.
  virtual int64_t EstimateRowsOut(int64_t rows_in) const;
  /// Outputs leave in input order (preserve_order, or upstream of a limit).
  void set_ordered(bool ordered) { ordered_ = ordered; }
  bool ordered() const { return ordered_; }

  // ---- Topology, set by the planner ----
  /// The operator this one's output goes to (-1: the consumer) and at which input.
  int downstream = -1;
  int downstream_input = 0;
  std::vector<int> upstream;

  OperatorStats stats;
  /// Since when a budget held back a ready task (-1: not held back).
  double backpressure_since = -1;

 protected:
  void PushOutput(RefBundle bundle);
  void CountInput(const RefBundle& bundle);
  void CountOutput(int64_t blocks, int64_t rows, int64_t bytes);
  void ClearOutput();

  std::vector<bool> inputs_done_;
  bool ordered_ = false;

 private:
  std::string display_name_;
  int num_inputs_;
  std::deque<RefBundle> output_queue_;
  int64_t output_queue_bytes_ = 0;
  std::shared_ptr<std::atomic<bool>> stopped_ = std::make_shared<std::atomic<bool>>(false);
};

}  // namespace millstream
