#include "optimizer/optimizer.h"
#include "plan/logical_operators.h"

namespace millstream {
namespace {

/// Has a read that feeds a group-by produce its string and binary keys as dictionary
/// arrays: a file that stores a key dictionary-encoded then never copies each value, and
/// the partial aggregation groups the dictionary's indices. The aggregation decodes its
/// keys, so its output is what it was.
class DictionaryKeysRule : public Rule {
 public:
  std::string name() const override { return "DictionaryKeys"; }

  arrow::Result<PlanPtr> Apply(PlanPtr plan) const override {
    return RewriteBottomUp(plan, [](PlanPtr node) -> arrow::Result<PlanPtr> {
      const auto* aggregate = node->As<AggregateOp>();
      if (!aggregate || aggregate->keys.empty()) return node;
      const auto* read = aggregate->input()->As<ReadOp>();
      if (!read) return node;
      ARROW_ASSIGN_OR_RAISE(auto encoded, read->source->WithDictionaryColumns(aggregate->keys));
      if (!encoded) return node;
      return aggregate->WithInputs({read->WithSource(std::move(encoded))});
    });
  }
};

}  // namespace

std::unique_ptr<Rule> MakeDictionaryKeysRule() { return std::make_unique<DictionaryKeysRule>(); }

}  // namespace millstream
