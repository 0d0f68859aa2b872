#pragma once

#include <memory>
#include <string>
#include <vector>

#include <arrow/result.h>

#include "plan/logical_operator.h"

namespace millstream {

/// \brief A rewrite of a logical plan into an equivalent, cheaper one. Stateless.
class Rule {
 public:
  virtual ~Rule() = default;
  virtual std::string name() const = 0;
  virtual arrow::Result<PlanPtr> Apply(PlanPtr plan) const = 0;
};

std::unique_ptr<Rule> MakeLimitPushdownRule();
std::unique_ptr<Rule> MakePredicatePushdownRule();
std::unique_ptr<Rule> MakeProjectionPushdownRule();
std::unique_ptr<Rule> MakeDictionaryKeysRule();
std::unique_ptr<Rule> MakeFilterIntoAggregateRule();
std::unique_ptr<Rule> MakeFuseMapsRule();
std::unique_ptr<Rule> MakePartialAggregateIntoMapRule();

/// The rules in the order the optimizer applies them.
std::vector<std::unique_ptr<Rule>> DefaultRules();

/// Applies every default rule once, in order.
arrow::Result<PlanPtr> Optimize(PlanPtr plan);

}  // namespace millstream
