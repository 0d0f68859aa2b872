#include <algorithm>

#include "optimizer/optimizer.h"

namespace millstream {
namespace {

using Kind = LogicalOperator::Kind;

/// Whether `next` can run inside the tasks of `prev`.
bool CanFuse(const LogicalOperator& prev, const LogicalOperator& next) {
  if (next.kind != Kind::kMap) return false;
  if (prev.kind == Kind::kRead) return true;
  if (prev.kind != Kind::kMap) return false;
  // An actor's work is its own: nothing joins it from behind.
  if (prev.compute.kind == ComputeStrategy::Kind::kActors) return false;
  // A task→actor pair runs as the actor's work, unless the tasks carry a concurrency cap
  // of their own that fusion would lose.
  if (next.compute.kind == ComputeStrategy::Kind::kActors) return prev.compute.max_size == 0;
  return prev.compute == next.compute && prev.num_cpus == next.num_cpus &&
         prev.num_gpus == next.num_gpus && prev.memory == next.memory;
}

/// Merges chains of map-like operators (a read included) into one operator whose task
/// runs every step on each block: one task per block instead of one per step.
class FuseMapsRule : public Rule {
 public:
  std::string name() const override { return "FuseMaps"; }

  arrow::Result<PlanPtr> Apply(PlanPtr plan) const override {
    auto chain = CopyChain(plan);
    std::vector<std::shared_ptr<LogicalOperator>> fused;
    for (auto& op : chain) {
      if (!fused.empty() && CanFuse(*fused.back(), *op)) {
        auto& prev = fused.back();
        if (prev->kind == Kind::kRead || op->compute.kind == ComputeStrategy::Kind::kActors) {
          // The fused operator runs as the later one asks (tasks after a read, or actors).
          prev->kind = Kind::kMap;
          prev->compute = op->compute;
          prev->num_cpus = op->num_cpus;
          prev->num_gpus = op->num_gpus;
          prev->memory = std::max(prev->memory, op->memory);
        }
        prev->transforms.insert(prev->transforms.end(), op->transforms.begin(),
                                op->transforms.end());
        prev->min_rows_per_bundle = std::max(prev->min_rows_per_bundle, op->min_rows_per_bundle);
        continue;
      }
      fused.push_back(op);
    }
    return LinkChain(fused);
  }
};

}  // namespace

std::unique_ptr<Rule> MakeFuseMapsRule() { return std::make_unique<FuseMapsRule>(); }

}  // namespace millstream
