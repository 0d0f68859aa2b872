#include <algorithm>

#include "optimizer/optimizer.h"

namespace millstream {
namespace {

/// Moves each Limit ahead of the row-preserving maps before it, so fewer rows flow
/// through them, and merges adjacent limits into the smaller one.
class LimitPushdownRule : public Rule {
 public:
  std::string name() const override { return "LimitPushdown"; }

  arrow::Result<PlanPtr> Apply(PlanPtr plan) const override {
    auto chain = CopyChain(plan);
    using Kind = LogicalOperator::Kind;
    for (size_t i = 1; i < chain.size(); ++i) {
      if (chain[i]->kind != Kind::kLimit) continue;
      size_t at = i;
      while (at > 0) {
        auto& before = chain[at - 1];
        if (before->kind == Kind::kLimit) {
          before->limit = std::min(before->limit, chain[at]->limit);
          chain.erase(chain.begin() + at);
          --at;
          break;
        }
        if (!before->RowPreserving()) break;
        std::swap(chain[at - 1], chain[at]);
        --at;
      }
      i = std::max(i, at);
    }
    return LinkChain(chain);
  }
};

}  // namespace

std::unique_ptr<Rule> MakeLimitPushdownRule() { return std::make_unique<LimitPushdownRule>(); }

}  // namespace millstream
