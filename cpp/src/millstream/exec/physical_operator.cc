#include "exec/physical_operator.h"

#include <algorithm>

namespace millstream {

RefBundle RefBundle::Of(Block block) {
  RefBundle bundle;
  bundle.rows = block->num_rows();
  bundle.bytes = BlockBytes(*block);
  bundle.blocks.push_back(std::move(block));
  return bundle;
}

std::string PhysicalOperator::Describe() const {
  if (kind == Kind::kLimit) return "LimitOperator[" + name + "]";
  if (spec().compute.kind == ComputeStrategy::Kind::kActors) {
    return "ActorPoolMapOperator[" + name + "] (actors " + std::to_string(spec().compute.min_size) +
           ".." + std::to_string(spec().compute.max_size) + ")";
  }
  return "TaskPoolMapOperator[" + name + "]";
}

bool PhysicalOperator::HasBundleReady() const {
  if (input_queue.empty()) return false;
  return inputs_done || spec().min_rows_per_bundle <= 0 || input_rows >= spec().min_rows_per_bundle;
}

RefBundle PhysicalOperator::TakeBundle() {
  RefBundle bundle = std::move(input_queue.front());
  input_queue.pop_front();
  // Small blocks (or small reads) are bundled until the task has a whole batch to work on.
  while (bundle.rows < spec().min_rows_per_bundle && !input_queue.empty()) {
    auto& next = input_queue.front();
    bundle.blocks.insert(bundle.blocks.end(), next.blocks.begin(), next.blocks.end());
    bundle.read_tasks.insert(bundle.read_tasks.end(), next.read_tasks.begin(), next.read_tasks.end());
    bundle.rows += next.rows;
    bundle.bytes += next.bytes;
    input_queue.pop_front();
  }
  input_rows -= bundle.rows;
  input_bytes -= bundle.bytes;
  return bundle;
}

bool PhysicalOperator::Completed() const {
  return inputs_done && input_queue.empty() && running.empty();
}

ActorState* PhysicalOperator::FreeActor() const {
  // The least loaded actor with a free slot (the first of them on a tie).
  const int slots = std::max(1, spec().compute.max_concurrency);
  ActorState* best = nullptr;
  for (const auto& actor : actors) {
    if (actor->running < slots && (!best || actor->running < best->running)) best = actor.get();
  }
  return best;
}

double PhysicalOperator::TaskCpus() const {
  return spec().compute.kind == ComputeStrategy::Kind::kActors
             ? spec().num_cpus / std::max(1, spec().compute.max_concurrency)
             : spec().num_cpus;
}

double PhysicalOperator::TaskGpus() const {
  return spec().compute.kind == ComputeStrategy::Kind::kActors
             ? spec().num_gpus / std::max(1, spec().compute.max_concurrency)
             : spec().num_gpus;
}

int64_t PhysicalOperator::TaskBytes() const {
  int64_t bytes = 0;
  for (const auto& [id, task] : running) {
    bytes += task.input_bytes + task.produced_bytes + (task.done ? 0 : spec().memory);
  }
  return bytes;
}

}  // namespace millstream
