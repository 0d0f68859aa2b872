#include "exec/transforms.h"
#include "optimizer/optimizer.h"
#include "plan/logical_operators.h"

namespace millstream {
namespace {

/// Folds a column selection that follows a read, directly or past a limit (which the
/// limit pushdown puts below it), into the read, so the columns left out are never
/// decoded.
class ProjectionPushdownRule : public Rule {
 public:
  std::string name() const override { return "ProjectionPushdown"; }

  arrow::Result<PlanPtr> Apply(PlanPtr plan) const override {
    return RewriteBottomUp(plan, [](PlanPtr node) -> arrow::Result<PlanPtr> {
      const auto* map = node->As<MapOp>();
      if (!map || map->source || map->transforms.size() != 1 ||
          map->compute.kind != ComputeStrategy::Kind::kTasks) {
        return node;
      }
      // A limit keeps rows whatever their columns: the selection passes it.
      const auto* limit = map->input()->As<LimitOp>();
      const auto* read = (limit ? limit->input() : map->input())->As<ReadOp>();
      auto project = dynamic_cast<const ProjectTransform*>(map->transforms[0].get());
      // An empty selection keeps the rows and no columns: a read with no columns means
      // every column, so it stays a step of its own.
      if (!read || !project || !project->select() || project->select()->empty()) return node;
      ARROW_ASSIGN_OR_RAISE(auto narrowed, read->source->WithColumns(*project->select()));
      if (!narrowed) return node;
      PlanPtr pushed = read->WithSource(std::move(narrowed));
      if (limit) pushed = limit->WithInputs({std::move(pushed)});
      if (project->renames().empty()) return pushed;
      auto renamed = map->CopyOver(pushed);
      renamed->transforms[0] = std::make_shared<ProjectTransform>(std::nullopt, project->renames());
      return PlanPtr(renamed);
    });
  }
};

}  // namespace

std::unique_ptr<Rule> MakeProjectionPushdownRule() {
  return std::make_unique<ProjectionPushdownRule>();
}

}  // namespace millstream
