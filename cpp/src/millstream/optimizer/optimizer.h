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
std::unique_ptr<Rule> MakeProjectionPushdownRule();
std::unique_ptr<Rule> MakeFuseMapsRule();

/// The rules in the order the optimizer applies them.
std::vector<std::unique_ptr<Rule>> DefaultRules();

/// Applies every default rule once, in order.
arrow::Result<PlanPtr> Optimize(PlanPtr plan);

/// Copies of the chain's nodes (source first), each linked to the previous copy: rules
/// edit the copies freely, then take the last one as the new sink.
std::vector<std::shared_ptr<LogicalOperator>> CopyChain(const PlanPtr& sink);
/// Relinks `chain` (source first) and returns its sink.
PlanPtr LinkChain(const std::vector<std::shared_ptr<LogicalOperator>>& chain);

}  // namespace millstream
