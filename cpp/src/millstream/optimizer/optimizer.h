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

class MapOp;
class ReadOp;

/// Makes `map` (a map with no input) read first, as `read` would: its source, block count
/// and concurrency cap. For the rules that fold a read into the map after it.
void ReadFirst(const ReadOp& read, MapOp* map);

/// The rules in the order the optimizer applies them.
std::vector<std::unique_ptr<Rule>> DefaultRules();

/// Applies every default rule once, in order.
arrow::Result<PlanPtr> Optimize(PlanPtr plan);

}  // namespace millstream
