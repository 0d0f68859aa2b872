#include "optimizer/optimizer.h"

namespace millstream {

std::vector<std::unique_ptr<Rule>> DefaultRules() {
  std::vector<std::unique_ptr<Rule>> rules;
  rules.push_back(MakeLimitPushdownRule());
  rules.push_back(MakeProjectionPushdownRule());
  rules.push_back(MakeFuseMapsRule());
  return rules;
}

arrow::Result<PlanPtr> Optimize(PlanPtr plan) {
  for (const auto& rule : DefaultRules()) {
    ARROW_ASSIGN_OR_RAISE(plan, rule->Apply(std::move(plan)));
  }
  return plan;
}

std::vector<std::shared_ptr<LogicalOperator>> CopyChain(const PlanPtr& sink) {
  std::vector<std::shared_ptr<LogicalOperator>> copies;
  for (const auto& op : PlanChain(sink)) {
    copies.push_back(std::make_shared<LogicalOperator>(*op));
  }
  return copies;
}

PlanPtr LinkChain(const std::vector<std::shared_ptr<LogicalOperator>>& chain) {
  PlanPtr previous;
  for (const auto& op : chain) {
    op->input = previous;
    previous = op;
  }
  return previous;
}

}  // namespace millstream
