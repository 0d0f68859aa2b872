#include <algorithm>

#include "optimizer/optimizer.h"
#include "plan/logical_operators.h"

namespace millstream {
namespace {

/// `limit` rows of `input`, placed as far down as it can go: ahead of row-preserving
/// maps, merged with a limit below it.
PlanPtr PushLimit(int64_t limit, const PlanPtr& input) {
  if (const auto* below = input->As<LimitOp>()) {
    return PushLimit(std::min(limit, below->limit), below->input());
  }
  if (input->RowPreserving() && input->inputs().size() == 1) {
    return input->WithInputs({PushLimit(limit, input->input())});
  }
  return std::make_shared<LimitOp>(input, limit);
}

/// Moves each Limit ahead of the row-preserving maps before it, so fewer rows flow
/// through them, and merges adjacent limits into the smaller one.
class LimitPushdownRule : public Rule {
 public:
  std::string name() const override { return "LimitPushdown"; }

  arrow::Result<PlanPtr> Apply(PlanPtr plan) const override {
    return RewriteBottomUp(plan, [](PlanPtr node) -> arrow::Result<PlanPtr> {
      const auto* limit = node->As<LimitOp>();
      return limit ? PushLimit(limit->limit, limit->input()) : node;
    });
  }
};

}  // namespace

std::unique_ptr<Rule> MakeLimitPushdownRule() { return std::make_unique<LimitPushdownRule>(); }

}  // namespace millstream
