#include <algorithm>
#include <atomic>
#include <map>

#include "exec/operators/operators.h"
#include "runtime/reservation.h"
#include "runtime/spill_file.h"

namespace millstream {
namespace {

/// Runs an Exchange: one map task per input bundle as the input streams in, then — once
/// every input is mapped — one task that plans the reduce stage, then one reduce task per
/// partition, whose outputs leave in partition order. What the exchange holds between
/// the stages is its reservation, capped every scheduling pass to what the memory limit
/// leaves after the other operators; past it, the exchange spills (to a directory of its
/// own, removed with the operator).
class AllToAllOperator : public PhysicalOperator {
 public:
  enum Stage { kMap = 0, kPlan = 1, kReduce = 2 };

  AllToAllOperator(std::string name, std::unique_ptr<Exchange> exchange,
                   std::shared_ptr<SpillDirectory> spill, int64_t reduce_headroom)
      : PhysicalOperator(std::move(name), exchange->num_inputs()),
        reservation_(std::make_unique<MemoryReservation>(0)), spill_(std::move(spill)),
        exchange_(std::move(exchange)), reduce_headroom_(reduce_headroom),
        next_block_index_(num_inputs(), 0) {
    exchange_context_.reservation = reservation_.get();
    exchange_context_.spill = spill_.get();
  }

  std::string Describe() const override { return "AllToAllOperator[" + display_name() + "]"; }

  // ---- Inputs: each bundle is one map task; its blocks are numbered in input order
  // (each input on its own).
  void AddInput(int input, RefBundle bundle) override {
    if (stopped()) return;
    CountInput(bundle);
    queued_bytes_ += bundle.bytes;
    pending_.emplace_back(input, std::move(bundle));
  }
  // A join's output has no order, so its inputs need none.
  bool NeedsOrderedInput() const override { return num_inputs() == 1; }
  int64_t QueuedInputBytes() const override { return queued_bytes_; }
  int64_t QueuedInputBundles() const override { return static_cast<int64_t>(pending_.size()); }

  // ---- Tasks
  bool RunsTasks() const override { return true; }
  bool HasTaskReady() const override {
    if (stopped()) return false;
    switch (stage_) {
      case kMap:
        return !pending_.empty() || (AllInputsDone() && active_tasks_ == 0);
      case kPlan:
        return false;  // the planning task is running
      case kReduce:
        return next_partition_ < partitions_;
    }
    return false;
  }
  TaskResources NextTaskResources() const override { return {1, 0}; }
  bool NextTaskRelievesMemory() const override { return stage_ == kMap && !pending_.empty(); }
  int64_t EstimateNextTaskBytes() const override {
    if (stage_ != kReduce || partitions_ == 0) return 0;
    // A reduce task loads one partition and emits it.
    return (exchange_->held_bytes() + exchange_->spilled_bytes()) / partitions_;
  }

  TaskSpec LaunchTask() override {
    TaskSpec spec;
    spec.task_index = next_task_++;
    active_tasks_ += 1;
    stats.tasks += 1;
    if (stage_ == kMap && !pending_.empty()) {
      spec.stage = kMap;
      spec.input = pending_.front().first;
      spec.inputs = std::move(pending_.front().second);
      pending_.pop_front();
      queued_bytes_ -= spec.inputs.bytes;
      running_input_bytes_ += spec.inputs.bytes;
      spec.partition = next_block_index_[spec.input];
      next_block_index_[spec.input] += static_cast<int64_t>(spec.inputs.blocks.size());
      map_inputs_[spec.task_index] = spec.inputs.bytes;
    } else if (stage_ == kMap) {
      spec.stage = kPlan;
      stage_ = kPlan;
    } else {
      spec.stage = kReduce;
      spec.partition = next_partition_++;
      partition_of_task_[spec.task_index] = spec.partition;
      produced_[spec.partition];
    }
    return spec;
  }

  arrow::Status RunTask(const TaskSpec& spec, TaskRunContext& run) const override {
    ExchangeContext context = exchange_context_;
    context.cancelled = run.cancelled;
    // The cap fell under what the exchange holds (other operators' blocks grew since it
    // grew): a map task spills that much first, on its worker rather than in the
    // scheduling pass. Reduce tasks make room themselves, spilling only runs no reader
    // holds (spilling a run a reader slices would give back bytes still in use).
    if (const int64_t excess = spec.stage == kMap ? reclaim_wanted_.exchange(0) : 0; excess > 0) {
      ARROW_RETURN_NOT_OK(exchange_->Reclaim(excess, context).status());
    }
    switch (spec.stage) {
      case kMap: {
        int64_t index = spec.partition;
        for (const auto& ref : spec.inputs.blocks) {
          if (run.stopped()) return arrow::Status::Cancelled("stopped");
          ARROW_ASSIGN_OR_RAISE(auto block, ref.Get());
          ARROW_RETURN_NOT_OK(exchange_->MapInput(spec.input, index++, std::move(block), context));
        }
        return arrow::Status::OK();
      }
      case kPlan: {
        ARROW_ASSIGN_OR_RAISE(int64_t partitions, exchange_->FinishMap(context));
        // Reported as the task's "read rows": the executor hands it to OnTaskDone.
        run.read_rows = partitions;
        return arrow::Status::OK();
      }
      default:
        return exchange_->Reduce(spec.partition, run.emit, context);
    }
  }

  void OnTaskOutput(int64_t task, Block block) override {
    auto it = partition_of_task_.find(task);
    if (it == partition_of_task_.end() || stopped()) return;
    const int64_t bytes = BlockBytes(*block);
    CountOutput(1, block->num_rows(), bytes);
    auto& partition = produced_[it->second];
    partition.bytes += bytes;
    produced_bytes_ += bytes;
    partition.blocks.push_back(std::move(block));
    Release();
  }

  void OnTaskDone(int64_t task, const TaskResult& result) override {
    active_tasks_ -= 1;
    stats.task_wall_s += result.wall_s;
    stats.cpu_s += result.cpu_s;
    stats.udf_s += result.udf_s;
    if (auto it = map_inputs_.find(task); it != map_inputs_.end()) {
      running_input_bytes_ -= it->second;
      map_inputs_.erase(it);
    } else if (auto p = partition_of_task_.find(task); p != partition_of_task_.end()) {
      produced_[p->second].done = true;
      if (result.discard) {
        produced_bytes_ -= produced_[p->second].bytes;
        produced_[p->second] = Partition{{}, 0, true};
      }
      partition_of_task_.erase(p);
      Release();
    } else if (stage_ == kPlan) {
      stage_ = kReduce;
      partitions_ = result.status.ok() ? result.read_rows : 0;
    }
    stats.spilled_bytes = exchange_->spilled_bytes();
    stats.regrouped_partitions = exchange_->regrouped_partitions();
    stats.streamed_partitions = exchange_->streamed_partitions();
    stats.chunked_partitions = exchange_->chunked_partitions();
  }
  int64_t ActiveTasks() const override { return active_tasks_; }

  void SetMemoryBudget(int64_t available) override {
    // What is left for the exchange's own buffers once this operator's other holdings
    // are counted, less — while the map stage buffers — the room its reduce tasks will
    // need: they load partitions and produce output while the buffered runs are still
    // held (a run is freed only when its last reader is done).
    const int64_t others = CurrentUsage() - reservation_->size();
    const int64_t headroom = stage_ == kMap ? reduce_headroom_ : 0;
    const int64_t cap = std::max<int64_t>(available - others - headroom, 0);
    reservation_->SetCap(cap);
    // What it holds past the new cap is spilled by its next map task (Reclaim).
    reclaim_wanted_.store(std::max<int64_t>(reservation_->size() - cap, 0));
  }

  int64_t CurrentUsage() const override {
    return OutputQueueBytes() + reservation_->size() + running_input_bytes_ + produced_bytes_;
  }
  bool Completed() const override {
    if (stopped()) return AllInputsDone() && active_tasks_ == 0;
    return stage_ == kReduce && next_partition_ >= partitions_ && active_tasks_ == 0 &&
           produced_bytes_ == 0 && produced_.empty();
  }
  void Stop() override {
    PhysicalOperator::Stop();
    pending_.clear();
    queued_bytes_ = 0;
    produced_.clear();
    produced_bytes_ = 0;
  }
  int64_t EstimateRowsOut(int64_t rows_in) const override {
    return Completed() ? stats.rows_out : std::max(rows_in, stats.rows_out);
  }

 private:
  struct Partition {
    std::deque<Block> blocks;
    int64_t bytes = 0;
    bool done = false;
  };

  /// Hands on reduce outputs in partition order: a partition's blocks leave once every
  /// partition before it is done.
  void Release() {
    while (!produced_.empty()) {
      auto first = produced_.begin();
      if (first->first != released_) break;
      auto& partition = first->second;
      while (!partition.blocks.empty()) {
        Block block = std::move(partition.blocks.front());
        partition.blocks.pop_front();
        const int64_t bytes = BlockBytes(*block);
        partition.bytes -= bytes;
        produced_bytes_ -= bytes;
        PushOutput(RefBundle::Of(std::move(block)));
      }
      if (!partition.done) break;
      produced_.erase(first);
      released_ += 1;
    }
  }

  // The exchange's stored blocks give their bytes back to the reservation and delete
  // their files in the spill directory when it is destroyed: both must outlive it, so
  // they are declared (and built) first and destroyed last.
  std::unique_ptr<MemoryReservation> reservation_;
  std::shared_ptr<SpillDirectory> spill_;
  std::unique_ptr<Exchange> exchange_;
  int64_t reduce_headroom_;
  // Bytes the next task should spill first (the reservation over its cap).
  mutable std::atomic<int64_t> reclaim_wanted_{0};
  ExchangeContext exchange_context_;
  std::vector<int64_t> next_block_index_;  // per input

  Stage stage_ = kMap;
  std::deque<std::pair<int, RefBundle>> pending_;  // (input, bundle)
  int64_t queued_bytes_ = 0;
  int64_t next_task_ = 0;
  int active_tasks_ = 0;
  std::map<int64_t, int64_t> map_inputs_;  // running map task -> its input bytes
  int64_t running_input_bytes_ = 0;
  int64_t partitions_ = 0;
  int64_t next_partition_ = 0;
  std::map<int64_t, int64_t> partition_of_task_;
  std::map<int64_t, Partition> produced_;
  int64_t produced_bytes_ = 0;
  int64_t released_ = 0;
};

}  // namespace

arrow::Result<std::unique_ptr<PhysicalOperator>> MakeAllToAllOperator(
    std::string name, std::unique_ptr<Exchange> exchange, const DataContext& context) {
  ARROW_ASSIGN_OR_RAISE(auto spill, SpillDirectory::Make(context.spill_directory));
  // Partitions are sized to an eighth of the limit per reduce task (ChoosePartitions):
  // half the limit is left for the reduce stage's working set.
  const int64_t headroom = ResolveLimits(context).memory / 2;
  return std::make_unique<AllToAllOperator>(std::move(name), std::move(exchange),
                                            std::move(spill), headroom);
}

}  // namespace millstream
