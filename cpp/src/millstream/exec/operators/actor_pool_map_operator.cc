#include <algorithm>

#include "exec/operators/map_operator.h"

namespace millstream {
namespace {

/// A map whose tasks run on actors: UDF instances built once per actor (ActorState),
/// each actor running up to `max_concurrency` tasks. The pool starts at its minimum size
/// when input arrives, grows (up to its maximum) while every actor is busy and the load
/// is high, shrinks when it is low, and releases every idle actor once its work is over.
class ActorPoolMapOperator : public MapOperator {
 public:
  ActorPoolMapOperator(std::shared_ptr<const MapOp> spec, const DataContext& context)
      : MapOperator(std::move(spec)), autoscaling_(context.autoscaling_config) {}

  std::string Describe() const override {
    return "ActorPoolMapOperator[" + display_name() + "] (actors " +
           std::to_string(spec().compute.min_size) + ".." + std::to_string(spec().compute.max_size) +
           ")";
  }

  bool HasTaskReady() const override { return MapOperator::HasTaskReady() && FreeActor(); }

  /// An actor's share of its request, divided among its concurrent tasks (as Ray
  /// divides an actor's resources).
  TaskResources NextTaskResources() const override {
    const double share = 1.0 / std::max(1, spec().compute.max_concurrency);
    return {spec().num_cpus * share, spec().num_gpus * share};
  }

  std::optional<double> TaskCapacity(const EffectiveLimits&) const override {
    return std::max<double>(1, spec().compute.max_size) * std::max(1, spec().compute.max_concurrency);
  }

  int64_t Actors() const override { return static_cast<int64_t>(actors_.size()); }
  int64_t ActorsStarted() const override {
    int64_t started = stats.actors_started;
    for (const auto& actor : actors_) started += actor->constructed;
    return started;
  }

  void Scale(std::vector<std::unique_ptr<ActorState>>& retired) override {
    const int min_size = std::max(1, spec().compute.min_size);
    const int max_size = std::max(min_size, spec().compute.max_size);
    if (Completed() || stopped()) {
      // The pool's work is over: release every idle actor (and with it, its model).
      for (size_t a = actors_.size(); a-- > 0;) {
        if (actors_[a]->running == 0) Retire(a, retired);
      }
      return;
    }
    if (input_queue_.empty() && actors_.empty()) return;  // not started yet
    while (static_cast<int>(actors_.size()) < min_size) AddActor();
    double slots = static_cast<double>(actors_.size()) *
                   std::max(1, spec().compute.max_tasks_in_flight_per_actor);
    double utilization = (active_tasks_ + static_cast<double>(input_queue_.size())) / slots;
    if (!FreeActor() && utilization >= autoscaling_.actor_pool_util_upscaling_threshold) {
      int add = std::min(std::max(1, autoscaling_.actor_pool_max_upscaling_delta),
                         max_size - static_cast<int>(actors_.size()));
      for (int k = 0; k < add; ++k) AddActor();
    } else if (utilization <= autoscaling_.actor_pool_util_downscaling_threshold &&
               static_cast<int>(actors_.size()) > min_size) {
      for (size_t a = actors_.size(); a-- > 0;) {
        if (actors_[a]->running == 0) {
          Retire(a, retired);
          break;
        }
      }
    }
    stats.peak_actors = std::max<int64_t>(stats.peak_actors, actors_.size());
  }

 protected:
  void AssignTask(TaskSpec& task_spec, RunningTask& task) override {
    ActorState* actor = FreeActor();
    actor->running += 1;
    task.actor = task_spec.actor = actor;
    task_spec.gpu_ids = actor->gpu_ids;
  }
  void TaskEnded(RunningTask& task) override {
    if (task.actor) task.actor->running -= 1;
  }

 private:
  /// The least loaded actor with a free slot (the first of them on a tie), or null.
  ActorState* FreeActor() const {
    const int slots = std::max(1, spec().compute.max_concurrency);
    ActorState* best = nullptr;
    for (const auto& actor : actors_) {
      if (actor->running < slots && (!best || actor->running < best->running)) best = actor.get();
    }
    return best;
  }
  /// A new actor owns its GPUs (num_gpus) from now until it retires.
  void AddActor() {
    auto actor = std::make_unique<ActorState>();
    if (gpus_ && spec().num_gpus > 0) actor->gpu_ids = gpus_->Acquire(spec().num_gpus);
    actors_.push_back(std::move(actor));
  }
  void Retire(size_t index, std::vector<std::unique_ptr<ActorState>>& retired) {
    if (gpus_) gpus_->Release(actors_[index]->gpu_ids, spec().num_gpus);
    stats.actors_started += actors_[index]->constructed;
    retired.push_back(std::move(actors_[index]));
    actors_.erase(actors_.begin() + index);
  }

  AutoscalingConfig autoscaling_;
  std::vector<std::unique_ptr<ActorState>> actors_;
};

}  // namespace

std::unique_ptr<MapOperator> MakeActorPoolMapOperator(std::shared_ptr<const MapOp> spec,
                                                      const DataContext& context) {
  return std::make_unique<ActorPoolMapOperator>(std::move(spec), context);
}

}  // namespace millstream
