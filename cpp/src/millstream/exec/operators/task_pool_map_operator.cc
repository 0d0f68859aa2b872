#include <cmath>

#include "exec/operators/map_operator.h"

namespace millstream {
namespace {

/// A map whose tasks run on the shared CPU pool, at most `compute.max_size` at once.
class TaskPoolMapOperator : public MapOperator {
 public:
  using MapOperator::MapOperator;

  std::string Describe() const override { return "TaskPoolMapOperator[" + display_name() + "]"; }

  bool HasTaskReady() const override {
    const int cap = spec().compute.max_size;
    return MapOperator::HasTaskReady() && (cap <= 0 || active_tasks_ < cap);
  }

  TaskResources NextTaskResources() const override { return {spec().num_cpus, spec().num_gpus}; }

  std::optional<double> TaskCapacity(const EffectiveLimits& limits) const override {
    if (spec().compute.max_size > 0) return spec().compute.max_size;
    return std::max(1.0, spec().num_cpus > 0 ? std::floor(limits.cpu / spec().num_cpus) : limits.cpu);
  }

 protected:
  void AssignTask(TaskSpec& task_spec, RunningTask& task) override {
    if (gpus_ && spec().num_gpus > 0) task.gpu_ids = task_spec.gpu_ids = gpus_->Acquire(spec().num_gpus);
  }
  void TaskEnded(RunningTask& task) override {
    if (gpus_) gpus_->Release(task.gpu_ids, spec().num_gpus);
    task.gpu_ids.clear();
  }
};

}  // namespace

std::unique_ptr<MapOperator> MakeTaskPoolMapOperator(std::shared_ptr<const MapOp> spec) {
  return std::make_unique<TaskPoolMapOperator>(std::move(spec));
}

}  // namespace millstream
