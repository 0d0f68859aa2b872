#include "exec/transforms.h"
#include "optimizer/optimizer.h"

namespace millstream {
namespace {

using Kind = LogicalOperator::Kind;

/// Folds a column selection that directly follows a read into the read, so the columns
/// left out are never decoded.
class ProjectionPushdownRule : public Rule {
 public:
  std::string name() const override { return "ProjectionPushdown"; }

  arrow::Result<PlanPtr> Apply(PlanPtr plan) const override {
    auto chain = CopyChain(plan);
    for (size_t i = 1; i < chain.size(); ++i) {
      auto& read = chain[i - 1];
      auto& next = chain[i];
      if (read->kind != Kind::kRead || next->kind != Kind::kMap ||
          next->transforms.size() != 1 || next->compute.kind != ComputeStrategy::Kind::kTasks) {
        continue;
      }
      auto project = dynamic_cast<const ProjectTransform*>(next->transforms[0].get());
      // An empty selection keeps the rows and no columns: a read with no columns means
      // every column, so it stays a step of its own.
      if (!project || !project->select() || project->select()->empty()) continue;
      ARROW_ASSIGN_OR_RAISE(auto narrowed, read->source->WithColumns(*project->select()));
      if (!narrowed) continue;
      read->source = std::move(narrowed);
      if (project->renames().empty()) {
        chain.erase(chain.begin() + i);
        --i;
      } else {
        next->transforms[0] =
            std::make_shared<ProjectTransform>(std::nullopt, project->renames());
      }
    }
    return LinkChain(chain);
  }
};

}  // namespace

std::unique_ptr<Rule> MakeProjectionPushdownRule() {
  return std::make_unique<ProjectionPushdownRule>();
}

}  // namespace millstream
