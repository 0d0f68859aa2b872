#include "optimizer/optimizer.h"
#include "plan/logical_operators.h"

#include "exec/transforms.h"
#include "io/sources.h"
#include "test_util.h"

#include <atomic>

#include <arrow/compute/api.h>

namespace millstream {
namespace {

using testing::SortedBy;
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

TEST(FuseMaps, ConsecutiveTaskUdfsBecomeOneStep) {
  auto actor = Named("MapBatches(Model)");
  actor.compute = ComputeStrategy::Actors(1, 2);
  auto batched = Named("MapBatches(batched)");
  batched.batch_size = 10;
  auto ds = Source()
                .MapBatches(Identity(), Named("MapBatches(f)"))
                .MapBatches(Identity(), Named("Map(g)", /*row_preserving=*/true))
                .MapBatches(Identity(), batched)
                .MapBatches(Identity(), actor);
  auto optimized = MakeFuseMapsRule()->Apply(ds.plan()).ValueOrDie();
  EXPECT_EQ(Names(optimized),
            "ReadRange->MapBatches(f)->Map(g)->MapBatches(batched)->MapBatches(Model)");
  const auto& transforms = PlanChain(optimized)[0]->As<MapOp>()->transforms;
  // f and g join; a batch size of its own and an actor's UDF stay steps of their own.
  ASSERT_EQ(transforms.size(), 3u);
  EXPECT_EQ(transforms[0]->name(), "MapBatches(f)->Map(g)");
  EXPECT_FALSE(transforms[0]->row_preserving());  // f may change the row count
}

TEST(FuseMaps, JoinedUdfStepsCallEachUdfOnEveryBatchOfTheOneBefore) {
  // split keeps even ids and hands them on as two chunks; thrice counts its calls and
  // multiplies the ids by 3. By hand: ids 0, 6, 12, ... (50 rows), 2 calls per block.
  auto split = Udf([](const std::shared_ptr<arrow::RecordBatch>& b) {
    auto odd = cp::CallFunction("bit_wise_and", {b->column(0), arrow::Datum(int64_t{1})}).ValueOrDie();
    auto even = cp::CallFunction("equal", {odd, arrow::Datum(int64_t{0})}).ValueOrDie();
    auto kept = cp::Filter(b, even).ValueOrDie().record_batch();
    int64_t half = kept->num_rows() / 2;
    return arrow::Table::FromRecordBatches({kept->Slice(0, half), kept->Slice(half)});
  });
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto thrice = Udf([calls](const std::shared_ptr<arrow::RecordBatch>& b) {
    *calls += 1;
    auto ids = cp::Multiply(b->column(0), arrow::Datum(int64_t{3})).ValueOrDie();
    return arrow::Table::FromRecordBatches(
        {arrow::RecordBatch::Make(b->schema(), b->num_rows(), {ids.make_array()})});
  });
  auto ds = Dataset::Range(100, 4).ValueOrDie().MapBatches(split, Named("MapBatches(split)"));
  ds = ds.MapBatches(thrice, Named("MapBatches(thrice)"));
  DataContext context;
  auto table = SortedBy(ds.ToTable(context).ValueOrDie(), "id");
  ASSERT_EQ(table->num_rows(), 50);
  auto ids = std::static_pointer_cast<arrow::Int64Array>(table->GetColumnByName("id")->chunk(0));
  for (int64_t i = 0; i < 50; ++i) EXPECT_EQ(ids->Value(i), 6 * i);
  EXPECT_EQ(calls->load(), 8);  // 4 blocks, 2 chunks each
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

TEST(PartialAggregateIntoMap, TheMapOrReadBeforeAGroupByMakesItsPartialRows) {
  const std::vector<AggregateSpec> count = {{AggregateSpec::Kind::kCount, "", true, 1, "count()"}};
  auto mapped = Source().MapBatches(Identity(), Named("MapBatches(f)")).GroupByAggregate({"id"}, count).ValueOrDie();
  auto optimized = Optimize(mapped.plan()).ValueOrDie();
  EXPECT_NE(Names(optimized).find("ReadRange->MapBatches(f)->PartialAggregate[id; count()] | "
                                  "Aggregate[id; count(); of partials]"),
            std::string::npos)
      << Names(optimized);
  auto read = Source().GroupByAggregate({"id"}, count).ValueOrDie();
  EXPECT_NE(Names(Optimize(read.plan()).ValueOrDie()).find("ReadRange->PartialAggregate[id; count()] | "),
            std::string::npos);
  // An actor pool's calls are its own: the exchange aggregates what it hands on.
  auto actor = Named("MapBatches(Model)");
  actor.compute = ComputeStrategy::Actors(1, 2);
  auto actors = Source().MapBatches(Identity(), actor).GroupByAggregate({"id"}, count).ValueOrDie();
  const std::string names = Names(Optimize(actors.plan()).ValueOrDie());
  EXPECT_EQ(names.find("PartialAggregate"), std::string::npos) << names;
  EXPECT_NE(names.find("Aggregate[id; count()]"), std::string::npos) << names;
}

TEST(Optimizer, RulesLeaveTheInputPlanUnchanged) {
  auto ds = Source().MapBatches(Identity(), Named("MapBatches(f)")).Limit(1);
  std::string before = Names(ds.plan());
  (void)Optimize(ds.plan()).ValueOrDie();
  EXPECT_EQ(Names(ds.plan()), before);
}

}  // namespace
}  // namespace millstream
