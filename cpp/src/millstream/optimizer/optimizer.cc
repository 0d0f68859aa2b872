#include "optimizer/optimizer.h"

#include "plan/logical_operators.h"

namespace millstream {

void ReadFirst(const ReadOp& read, MapOp* map) {
  map->source = read.source;
  map->override_num_blocks = read.override_num_blocks;
  if (read.concurrency > 0) map->compute = ComputeStrategy::Tasks(read.concurrency);
}

std::vector<std::unique_ptr<Rule>> DefaultRules() {
  std::vector<std::unique_ptr<Rule>> rules;
  rules.push_back(MakeLimitPushdownRule());
  rules.push_back(MakePredicatePushdownRule());
  rules.push_back(MakeProjectionPushdownRule());
  rules.push_back(MakeDictionaryKeysRule());
  rules.push_back(MakeFilterIntoAggregateRule());
  rules.push_back(MakeFuseMapsRule());
  rules.push_back(MakePartialAggregateIntoMapRule());
  return rules;
}

arrow::Result<PlanPtr> Optimize(PlanPtr plan) {
  for (const auto& rule : DefaultRules()) {
    ARROW_ASSIGN_OR_RAISE(plan, rule->Apply(std::move(plan)));
  }
  return plan;
}

}  // namespace millstream
