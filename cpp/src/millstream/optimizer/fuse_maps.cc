#include <algorithm>

#include "exec/transforms.h"
#include "optimizer/optimizer.h"
#include "plan/logical_operators.h"

namespace millstream {
namespace {

/// Whether `next` can run inside the tasks of `prev` (a map, or a read).
bool CanFuse(const LogicalOperator& prev, const MapOp& next) {
  // Exact bundles are cut from blocks as they arrive, not from what a step before makes.
  if (next.exact_bundles) return false;
  if (const auto* map = prev.As<MapOp>(); map && map->exact_bundles) return false;
  if (const auto* read = prev.As<ReadOp>()) {
    // A read's concurrency cap is kept by a fused task map that has none or the same one.
    return read->concurrency == 0 ||
           (next.compute.kind == ComputeStrategy::Kind::kTasks &&
            (next.compute.max_size == 0 || next.compute.max_size == read->concurrency));
  }
  const auto* map = prev.As<MapOp>();
  if (!map) return false;
  // An actor's work is its own: nothing joins it from behind.
  if (map->compute.kind == ComputeStrategy::Kind::kActors) return false;
  // A task→actor pair runs as the actor's work, unless the tasks carry a concurrency cap
  // of their own that fusion would lose.
  if (next.compute.kind == ComputeStrategy::Kind::kActors) return map->compute.max_size == 0;
  return map->compute == next.compute && map->num_cpus == next.num_cpus &&
         map->num_gpus == next.num_gpus && map->memory == next.memory;
}

/// Merges chains of map-like operators (a read included) into one operator whose task
/// runs every step on each block: one task per block instead of one per step.
class FuseMapsRule : public Rule {
 public:
  std::string name() const override { return "FuseMaps"; }

  arrow::Result<PlanPtr> Apply(PlanPtr plan) const override {
    return RewriteBottomUp(plan, [](PlanPtr node) -> arrow::Result<PlanPtr> {
      const auto* next = node->As<MapOp>();
      if (!next || !next->input() || !CanFuse(*next->input(), *next)) return node;
      const auto& prev = *next->input();
      std::shared_ptr<MapOp> fused;
      if (const auto* read = prev.As<ReadOp>()) {
        // A read fused with what follows runs as the map asks, reading first.
        fused = next->CopyOver(nullptr);
        ReadFirst(*read, fused.get());
        return PlanPtr(fused);
      }
      const auto& map = *prev.As<MapOp>();
      fused = map.CopyOver(map.input());
      if (next->compute.kind == ComputeStrategy::Kind::kActors) {
        // The fused operator runs as the actor pool asks.
        fused->compute = next->compute;
        fused->num_cpus = next->num_cpus;
        fused->num_gpus = next->num_gpus;
        fused->memory = std::max(map.memory, next->memory);
      }
      for (const auto& transform : next->transforms) {
        // Consecutive user functions of the task pool become one step (one call per block).
        auto joined = fused->transforms.empty()
                          ? nullptr
                          : FuseUdfTransforms(*fused->transforms.back(), *transform);
        if (joined) {
          fused->transforms.back() = std::move(joined);
        } else {
          fused->transforms.push_back(transform);
        }
      }
      fused->min_rows_per_bundle = std::max(map.min_rows_per_bundle, next->min_rows_per_bundle);
      return PlanPtr(fused);
    });
  }
};

}  // namespace

std::unique_ptr<Rule> MakeFuseMapsRule() { return std::make_unique<FuseMapsRule>(); }

}  // namespace millstream
