#include "exec/operators/map_operator.h"

#include <algorithm>

#include "exec/block_shaper.h"

namespace millstream {

MapOperator::MapOperator(std::shared_ptr<const MapOp> spec)
    : PhysicalOperator(spec->Name(), spec->source ? 0 : 1), spec_(std::move(spec)) {}

void MapOperator::SetReadTasks(std::vector<std::shared_ptr<ReadTask>> tasks) {
  for (auto& task : tasks) {
    RefBundle bundle;
    bundle.rows = task->estimated_rows();
    estimated_input_rows_ += bundle.rows;
    bundle.read_tasks.push_back(std::move(task));
    input_rows_ += bundle.rows;
    input_queue_.push_back(std::move(bundle));
  }
}

void MapOperator::AddInput(int, RefBundle bundle) {
  if (stopped()) return;
  CountInput(bundle);
  input_rows_ += bundle.rows;
  input_bytes_ += bundle.bytes;
  input_queue_.push_back(std::move(bundle));
}

RefBundle MapOperator::CutBundle(RefBundle& bundle, int64_t keep) {
  RefBundle head, rest;
  for (auto& ref : bundle.blocks) {
    const int64_t room = keep - head.rows;
    if (room >= ref.rows()) {
      head.Add(std::move(ref));
    } else if (room <= 0) {
      rest.Add(std::move(ref));
    } else {
      auto block = ref.Get();
      if (!block.ok()) {  // (not for in-memory references) left whole: no cut
        head.Add(std::move(ref));
        continue;
      }
      head.Add(BlockRef((*block)->Slice(0, room)));
      rest.Add(BlockRef((*block)->Slice(room)));
    }
  }
  // The rest goes back to the queue: its bytes are the pieces' (a sliced block may count
  // its buffers in both); rows are unchanged.
  input_bytes_ += rest.bytes + head.bytes - bundle.bytes;
  bundle = std::move(head);
  return rest;
}

bool MapOperator::NeedsOrderedInput() const {
  return std::any_of(spec().transforms.begin(), spec().transforms.end(),
                     [](const auto& t) { return t->needs_ordered_input(); });
}

bool MapOperator::HasBundleReady() const {
  if (input_queue_.empty()) return false;
  return AllInputsDone() || spec().min_rows_per_bundle <= 0 ||
         input_rows_ >= spec().min_rows_per_bundle;
}

bool MapOperator::HasTaskReady() const { return !stopped() && HasBundleReady(); }

int64_t MapOperator::EstimateNextTaskBytes() const {
  int64_t output = 0;
  if (finished_tasks_ > 0 && finished_output_bytes_ > 0) {
    output = finished_output_bytes_ / finished_tasks_;
  } else if (!input_queue_.empty()) {
    const auto& front = input_queue_.front();
    if (!front.read_tasks.empty()) {
      for (const auto& task : front.read_tasks) output += task->estimated_bytes();
    } else {
      output = std::max<int64_t>(front.bytes, spec().min_rows_per_bundle > 0 && front.rows > 0
                                                  ? front.bytes * spec().min_rows_per_bundle / front.rows
                                                  : 0);
    }
  }
  return output + spec().memory;
}

bool MapOperator::OutputSizedByInput() const {
  if (input_queue_.empty()) return false;
  const auto& reads = input_queue_.front().read_tasks;
  return std::all_of(reads.begin(), reads.end(),
                     [](const auto& read) { return read->sized_by_metadata(); }) &&
         std::all_of(spec().transforms.begin(), spec().transforms.end(),
                     [](const auto& t) { return t->output_sized_by_input(); });
}

TaskSpec MapOperator::LaunchTask() {
  TaskSpec task_spec;
  RefBundle bundle = std::move(input_queue_.front());
  input_queue_.pop_front();
  // Small blocks (or small reads) are bundled until the task has a whole batch to work on.
  while (bundle.rows < spec().min_rows_per_bundle && !input_queue_.empty()) {
    bundle.Merge(std::move(input_queue_.front()));
    input_queue_.pop_front();
  }
  if (spec().exact_bundles && spec().min_rows_per_bundle > 0 &&
      !(AllInputsDone() && input_queue_.empty())) {
    // An exact multiple of the rows per bundle (only the last task may have fewer); the
    // rest waits, first in the queue, for the next task.
    const int64_t per = spec().min_rows_per_bundle;
    const int64_t keep = bundle.rows / per * per;
    if (keep < bundle.rows) input_queue_.push_front(CutBundle(bundle, keep));
  }
  input_rows_ -= bundle.rows;
  input_bytes_ -= bundle.bytes;
  task_spec.task_index = next_task_index_++;
  RunningTask task;
  task.input_bytes = bundle.bytes;
  task.input_rows = bundle.rows;
  task_spec.inputs = std::move(bundle);
  AssignTask(task_spec, task);
  running_.emplace(task_spec.task_index, std::move(task));
  active_tasks_ += 1;
  stats.tasks += 1;
  return task_spec;
}

arrow::Status MapOperator::RunTask(const TaskSpec& task_spec, TaskRunContext& run) const {
  const auto& context = *run.context;
  const auto& transforms = spec().transforms;
  TaskContext task;
  task.task_index = task_spec.task_index;
  task.actor = task_spec.actor;
  ScopedGpuIds gpu_ids(&task_spec.gpu_ids);
  task.concurrent_calls = spec().compute.enable_true_multi_threading;
  task.cancelled = run.cancelled;
  task.udf_seconds = &run.udf_seconds;
  task.sunk = run.sunk;
  std::vector<std::unique_ptr<TransformState>> states;
  for (const auto& transform : transforms) {
    ARROW_ASSIGN_OR_RAISE(auto state, transform->MakeState(task));
    states.push_back(std::move(state));
  }
  BlockShaper shaper(context.target_min_block_size, context.target_max_block_size);
  const size_t n = states.size();
  const bool shaped = n > 0 && transforms.back()->shapes_own_output();
  std::vector<Emit> emits(n + 1);
  emits[n] = [&](Block block) {
    return shaped ? run.emit(std::move(block)) : shaper.Push(std::move(block), run.emit);
  };
  for (size_t k = n; k-- > 0;) {
    emits[k] = [&, k](Block block) -> arrow::Status {
      if (run.stopped()) return arrow::Status::Cancelled("stopped");
      return states[k]->Push(std::move(block), emits[k + 1]);
    };
  }
  if (!task_spec.inputs.read_tasks.empty()) {
    // Shape what the read produces before the first transform sees it, so a UDF with
    // batch_size=None gets blocks, not one tiny piece per small file.
    BlockShaper read_shaper(context.target_min_block_size, context.target_max_block_size);
    Emit counted = [&](Block block) {
      run.read_blocks += 1;
      run.read_rows += block->num_rows();
      run.read_bytes += BlockBytes(*block);
      return emits[0](std::move(block));
    };
    Emit into_first = [&](Block block) { return read_shaper.Push(std::move(block), counted); };
    for (const auto& read_task : task_spec.inputs.read_tasks) {
      ARROW_RETURN_NOT_OK(read_task->Run(into_first));
    }
    ARROW_RETURN_NOT_OK(read_shaper.Finish(counted));
  }
  for (const auto& ref : task_spec.inputs.blocks) {
    ARROW_ASSIGN_OR_RAISE(auto block, ref.Get());
    ARROW_RETURN_NOT_OK(emits[0](std::move(block)));
  }
  for (size_t k = 0; k < n; ++k) ARROW_RETURN_NOT_OK(states[k]->Finish(emits[k + 1]));
  if (shaped) return arrow::Status::OK();
  run.finishing = true;  // the shaper's last blocks: cut, not computed
  return shaper.Finish(run.emit);
}

void MapOperator::OnTaskOutput(int64_t task_index, Block block) {
  auto it = running_.find(task_index);
  if (it == running_.end() || stopped()) return;  // a satisfied limit or a failure
  auto& task = it->second;
  int64_t bytes = BlockBytes(*block);
  CountOutput(1, block->num_rows(), bytes);
  task.produced_bytes += bytes;
  task.output_bytes += bytes;
  task.output_rows += block->num_rows();
  task.produced.push_back(std::move(block));
  Release(it);
}

void MapOperator::OnTaskSunk(int64_t task_index, int64_t rows, int64_t bytes) {
  auto it = running_.find(task_index);
  if (it == running_.end() || stopped()) return;
  auto& task = it->second;
  CountOutput(1, rows, bytes);
  task.sunk_blocks += 1;
  task.sunk_rows += rows;
  task.sunk_bytes += bytes;
  task.output_rows += rows;
}

void MapOperator::OnTaskDone(int64_t task_index, const TaskResult& result) {
  auto it = running_.find(task_index);
  if (it == running_.end()) return;
  auto& task = it->second;
  task.done = true;
  active_tasks_ -= 1;
  TaskEnded(task);
  stats.task_wall_s += result.wall_s;
  stats.cpu_s += result.cpu_s;
  stats.udf_s += result.udf_s;
  stats.blocks_in += result.read_blocks;
  stats.rows_in += result.read_rows;
  stats.bytes_in += result.read_bytes;
  finished_tasks_ += 1;
  finished_output_bytes_ += task.output_bytes;
  finished_rows_in_ += task.input_rows;
  finished_rows_out_ += task.output_rows;
  if (result.discard) {
    // A tolerated failure: what the task has not handed on is dropped, and what it wrote
    // is never committed, so it is not output.
    stats.errored_tasks += 1;
    task.produced.clear();
    task.produced_bytes = 0;
    CountOutput(-task.sunk_blocks, -task.sunk_rows, -task.sunk_bytes);
    task.output_rows -= task.sunk_rows;
  }
  Release(it);
}

void MapOperator::Release(std::map<int64_t, RunningTask>::iterator from) {
  for (auto t = ordered_ ? running_.begin() : from; t != running_.end();) {
    auto& task = t->second;
    while (!task.produced.empty()) {
      Block block = std::move(task.produced.front());
      task.produced.pop_front();
      task.produced_bytes -= BlockBytes(*block);
      task.input_bytes = 0;  // the input is consumed once output flows
      PushOutput(RefBundle::Of(std::move(block)));
    }
    if (task.done) {
      t = running_.erase(t);
      if (!ordered_) break;
      continue;
    }
    break;
  }
  if (stopped()) ClearOutput();
}

int64_t MapOperator::CurrentUsage() const {
  int64_t bytes = OutputQueueBytes();
  for (const auto& [id, task] : running_) {
    bytes += task.input_bytes + task.produced_bytes + (task.done ? 0 : spec().memory);
  }
  return bytes;
}

bool MapOperator::Completed() const {
  return AllInputsDone() && input_queue_.empty() && running_.empty();
}

void MapOperator::Stop() {
  PhysicalOperator::Stop();
  input_queue_.clear();
  input_rows_ = input_bytes_ = 0;
  for (auto& [id, task] : running_) {
    task.produced.clear();
    task.produced_bytes = 0;
  }
}

int64_t MapOperator::EstimateRowsOut(int64_t rows_in) const {
  if (upstream.empty()) rows_in = estimated_input_rows_;
  if (Completed()) return stats.rows_out;
  int64_t estimate = rows_in;
  if (finished_rows_in_ > 0) {
    // Selectivity of finished tasks only: running ones have input but partial output.
    estimate = static_cast<int64_t>(rows_in * (double(finished_rows_out_) / finished_rows_in_));
  }
  return std::max(estimate, stats.rows_out);
}

}  // namespace millstream
