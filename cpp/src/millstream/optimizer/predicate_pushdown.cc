#include <algorithm>

#include "exec/transforms.h"
#include "optimizer/optimizer.h"
#include "plan/logical_operators.h"

namespace millstream {
namespace {

/// The predicate of a map that is only a filter (on the task pool), or null.
const arrow::compute::Expression* FilterOf(const LogicalOperator& node) {
  const auto* map = node.As<MapOp>();
  if (!map || map->source || map->transforms.size() != 1 ||
      map->compute.kind != ComputeStrategy::Kind::kTasks) {
    return nullptr;
  }
  return FilterPredicate(*map->transforms[0]);
}

/// A column selection without renames that keeps every column `predicate` reads.
bool SelectionKeeps(const LogicalOperator& node, const arrow::compute::Expression& predicate) {
  const auto* map = node.As<MapOp>();
  if (!map || map->source || map->transforms.size() != 1) return false;
  auto project = dynamic_cast<const ProjectTransform*>(map->transforms[0].get());
  if (!project || !project->renames().empty() || !project->select()) return false;
  const auto& kept = *project->select();
  for (const auto& ref : arrow::compute::FieldsInExpression(predicate)) {
    if (!ref.name() || std::find(kept.begin(), kept.end(), *ref.name()) == kept.end()) return false;
  }
  return true;
}

/// Whether every input's schema is known and has every column `predicate` reads (a
/// union fills a column an input lacks with nulls; that input's own filter would fail).
bool EveryInputHas(const LogicalOperator& node, const arrow::compute::Expression& predicate) {
  for (const auto& input : node.inputs()) {
    auto schema = PlanSchema(input);
    if (!schema) return false;
    for (const auto& ref : arrow::compute::FieldsInExpression(predicate)) {
      if (!ref.name() || schema->GetFieldIndex(*ref.name()) < 0) return false;
    }
  }
  return true;
}

/// `filter` (a filter-only map) applied to `input`, moved as far down as it goes: past
/// column selections that keep its columns, into every input of a union, and into a
/// read whose source can apply it (a Parquet read then prunes row groups by statistics
/// and partitions by their keys).
arrow::Result<PlanPtr> Push(const MapOp& filter, const arrow::compute::Expression& predicate,
                            const PlanPtr& input) {
  if (const auto* read = input->As<ReadOp>()) {
    ARROW_ASSIGN_OR_RAISE(auto narrowed, read->source->WithFilter(predicate));
    if (narrowed) return read->WithSource(std::move(narrowed));
  } else if (SelectionKeeps(*input, predicate)) {
    ARROW_ASSIGN_OR_RAISE(auto below, Push(filter, predicate, input->input()));
    return input->WithInputs({std::move(below)});
  } else if (input->As<UnionOp>() && EveryInputHas(*input, predicate)) {
    std::vector<PlanPtr> inputs;
    for (const auto& branch : input->inputs()) {
      ARROW_ASSIGN_OR_RAISE(auto pushed, Push(filter, predicate, branch));
      inputs.push_back(std::move(pushed));
    }
    return input->WithInputs(std::move(inputs));
  }
  return filter.WithInputs({input});
}

/// Moves filters toward the reads (see Push), so fewer rows are decoded and flow.
class PredicatePushdownRule : public Rule {
 public:
  std::string name() const override { return "PredicatePushdown"; }

  arrow::Result<PlanPtr> Apply(PlanPtr plan) const override {
    return RewriteBottomUp(plan, [](PlanPtr node) -> arrow::Result<PlanPtr> {
      const auto* predicate = FilterOf(*node);
      if (!predicate || !node->input()) return node;
      return Push(*node->As<MapOp>(), *predicate, node->input());
    });
  }
};

}  // namespace

std::unique_ptr<Rule> MakePredicatePushdownRule() {
  return std::make_unique<PredicatePushdownRule>();
}

}  // namespace millstream
