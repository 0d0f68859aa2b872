#include "exec/transforms.h"
#include "optimizer/optimizer.h"
#include "plan/logical_operators.h"
#include "shuffle/aggregate.h"

namespace millstream {
namespace {

/// Moves a group-by's partial aggregation into the task-pool map or read that feeds it:
/// each task turns the blocks it makes into their partial rows (one per group) before
/// handing them on, so the rows are aggregated where they were decoded, while in cache,
/// and only the partial rows wait for the exchange. The group-by then merges partials;
/// a filter folded into it moves with the partial aggregation.
class PartialAggregateIntoMapRule : public Rule {
 public:
  std::string name() const override { return "PartialAggregateIntoMap"; }

  arrow::Result<PlanPtr> Apply(PlanPtr plan) const override {
    return RewriteBottomUp(plan, [](PlanPtr node) -> arrow::Result<PlanPtr> {
      const auto* aggregate = node->As<AggregateOp>();
      if (!aggregate || aggregate->input_is_partial) return node;
      const auto& input = aggregate->input();
      std::shared_ptr<MapOp> map;
      if (const auto* read = input->As<ReadOp>()) {
        map = std::make_shared<MapOp>(nullptr);
        ReadFirst(*read, map.get());
      } else if (const auto* upstream = input->As<MapOp>();
                 upstream && upstream->compute.kind == ComputeStrategy::Kind::kTasks) {
        // An actor pool's tasks are its actors' calls: the aggregation stays off them.
        map = upstream->CopyOver(upstream->input());
      } else {
        return node;
      }
      ARROW_ASSIGN_OR_RAISE(auto partial,
                            MakePartialAggregation(aggregate->keys, aggregate->aggregates, aggregate->filter));
      map->transforms.push_back(MakePartialAggregateTransform(
          std::move(partial),
          "PartialAggregate[" + AggregateOp::Description(aggregate->keys, aggregate->aggregates, aggregate->filter) +
              "]"));
      return PlanPtr(std::make_shared<AggregateOp>(std::move(map), aggregate->keys, aggregate->aggregates,
                                                   aggregate->num_partitions, std::nullopt,
                                                   /*input_is_partial=*/true));
    });
  }
};

}  // namespace

std::unique_ptr<Rule> MakePartialAggregateIntoMapRule() {
  return std::make_unique<PartialAggregateIntoMapRule>();
}

}  // namespace millstream
