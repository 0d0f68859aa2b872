#include "optimizer/optimizer.h"
#include "plan/logical_operators.h"

#include "exec/transforms.h"
#include "io/sources.h"
#include "test_util.h"

namespace millstream {
namespace {

using testing::Udf;
namespace cp = arrow::compute;

std::string Names(const PlanPtr& plan) {
  std::string out;
  for (const auto& op : PlanChain(plan)) out += (out.empty() ? "" : " | ") + op->Name();
  return out;
}

Dataset Source() { return Dataset::Range(100, 4).ValueOrDie(); }

BatchUdfFactory Identity() {
  return Udf([](const std::shared_ptr<arrow::RecordBatch>& b) {
    return arrow::Table::FromRecordBatches({b});
  });
}

MapBatchesOptions Named(std::string name, bool row_preserving = false) {
  MapBatchesOptions options;
  options.name = std::move(name);
  options.row_preserving = row_preserving;
  return options;
}

TEST(FuseMaps, ReadAndMapsBecomeOneOperator) {
  auto ds = Source().MapBatches(Identity(), Named("MapBatches(f)"))
                .Filter(cp::greater(cp::field_ref("id"), cp::literal(int64_t{3})));
  EXPECT_EQ(Names(ds.plan()), "ReadRange | MapBatches(f) | Filter((id > 3))");
  auto optimized = MakeFuseMapsRule()->Apply(ds.plan()).ValueOrDie();
  EXPECT_EQ(Names(optimized), "ReadRange->MapBatches(f)->Filter((id > 3))");
}

TEST(FuseMaps, DifferentResourcesDoNotFuse) {
  auto gpu = Named("MapBatches(g)");
  gpu.num_gpus = 1;
  auto ds = Source().MapBatches(Identity(), Named("MapBatches(f)")).MapBatches(Identity(), gpu);
  auto optimized = MakeFuseMapsRule()->Apply(ds.plan()).ValueOrDie();
  EXPECT_EQ(Names(optimized), "ReadRange->MapBatches(f) | MapBatches(g)");
}

TEST(FuseMaps, TaskIntoActorFusesButActorIsNeverFusedInto) {
  auto actor = Named("MapBatches(Model)");
  actor.compute = ComputeStrategy::Actors(1, 2);
  auto ds = Source()
                .MapBatches(Identity(), Named("MapBatches(pre)"))
                .MapBatches(Identity(), actor)
                .MapBatches(Identity(), Named("MapBatches(post)"));
  auto optimized = MakeFuseMapsRule()->Apply(ds.plan()).ValueOrDie();
  EXPECT_EQ(Names(optimized), "ReadRange->MapBatches(pre)->MapBatches(Model) | MapBatches(post)");
  EXPECT_EQ(PlanChain(optimized)[0]->As<MapOp>()->compute.kind, ComputeStrategy::Kind::kActors);
}

TEST(FuseMaps, CappedTasksDoNotFuseIntoActors) {
  auto capped = Named("MapBatches(capped)");
  capped.compute = ComputeStrategy::Tasks(2);
  auto actor = Named("MapBatches(Model)");
  actor.compute = ComputeStrategy::Actors(1, 2);
  auto ds = Source().MapBatches(Identity(), capped).MapBatches(Identity(), actor);
  auto optimized = MakeFuseMapsRule()->Apply(ds.plan()).ValueOrDie();
  EXPECT_EQ(Names(optimized), "ReadRange->MapBatches(capped) | MapBatches(Model)");
}

TEST(FuseMaps, LimitBreaksFusion) {
  auto ds = Source().Limit(5).MapBatches(Identity(), Named("MapBatches(f)"));
  auto optimized = Optimize(ds.plan()).ValueOrDie();
  EXPECT_EQ(Names(optimized), "ReadRange | Limit[5] | MapBatches(f)");
}

TEST(LimitPushdown, MovesAheadOfRowPreservingMapsOnly) {
  auto ds = Source()
                .MapBatches(Identity(), Named("MapBatches(any)"))
                .MapBatches(Identity(), Named("Map(row)", /*row_preserving=*/true))
                .Limit(10);
  auto pushed = MakeLimitPushdownRule()->Apply(ds.plan()).ValueOrDie();
  EXPECT_EQ(Names(ds.plan()), "ReadRange | MapBatches(any) | Map(row) | Limit[10]");
  EXPECT_EQ(Names(pushed), "ReadRange | MapBatches(any) | Limit[10] | Map(row)");
}

TEST(LimitPushdown, MergesAdjacentLimits) {
  auto ds = Source().Limit(10).Limit(3);
  auto pushed = MakeLimitPushdownRule()->Apply(ds.plan()).ValueOrDie();
  EXPECT_EQ(Names(pushed), "ReadRange | Limit[3]");
}

TEST(LimitPushdown, StopsAtFilter) {
  auto ds = Source().Filter(cp::greater(cp::field_ref("id"), cp::literal(int64_t{50}))).Limit(2);
  auto pushed = MakeLimitPushdownRule()->Apply(ds.plan()).ValueOrDie();
  EXPECT_EQ(Names(pushed), "ReadRange | Filter((id > 50)) | Limit[2]");
}

TEST(Optimizer, RulesLeaveTheInputPlanUnchanged) {
  auto ds = Source().MapBatches(Identity(), Named("MapBatches(f)")).Limit(1);
  std::string before = Names(ds.plan());
  (void)Optimize(ds.plan()).ValueOrDie();
  EXPECT_EQ(Names(ds.plan()), before);
}

}  // namespace
}  // namespace millstream
