#include "optimizer/optimizer.h"
#include "plan/logical_operators.h"

namespace millstream {
namespace {

/// Folds the row filter of a read that feeds a group-by into the group-by: the read still
/// skips the row groups and files the filter rules out by their statistics, but hands on
/// every row of the rest, and the partial aggregation leaves out the rows the filter
/// drops instead of aggregating a filtered copy of the rows it keeps.
class FilterIntoAggregateRule : public Rule {
 public:
  std::string name() const override { return "FilterIntoAggregate"; }

  arrow::Result<PlanPtr> Apply(PlanPtr plan) const override {
    return RewriteBottomUp(plan, [](PlanPtr node) -> arrow::Result<PlanPtr> {
      const auto* aggregate = node->As<AggregateOp>();
      if (!aggregate || aggregate->filter) return node;
      const auto* read = aggregate->input()->As<ReadOp>();
      if (!read) return node;
      ARROW_ASSIGN_OR_RAISE(auto deferred, read->source->WithoutRowFilter());
      if (!deferred) return node;
      return std::make_shared<AggregateOp>(read->WithSource(std::move(deferred->source)), aggregate->keys,
                                           aggregate->aggregates, aggregate->num_partitions,
                                           std::move(deferred->predicate));
    });
  }
};

}  // namespace

std::unique_ptr<Rule> MakeFilterIntoAggregateRule() { return std::make_unique<FilterIntoAggregateRule>(); }

}  // namespace millstream
