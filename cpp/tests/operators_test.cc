// Physical operators driven directly, without the executor: the test plays the executor
// (inputs in, tasks launched and run on the test's thread, outputs out) so each
// operator's own rules — slicing, release order, bundling, stage transitions — are
// checked in isolation. Also the planner registry.

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "exec/backend.h"
#include "exec/operators/operators.h"
#include "exec/policies/backpressure_policy.h"
#include "exec/transforms.h"
#include "exec/streaming_executor.h"
#include "optimizer/optimizer.h"
#include "plan/logical_operators.h"
#include "planner/planner.h"
#include "shuffle/sort.h"
#include "test_util.h"

namespace millstream {
namespace {

/// An int64 column "id" = start..start+n-1.
Block Ids(int64_t start, int64_t n) {
  arrow::Int64Builder builder;
  for (int64_t i = 0; i < n; ++i) (void)builder.Append(start + i);
  return arrow::RecordBatch::Make(arrow::schema({arrow::field("id", arrow::int64())}), n,
                                  {builder.Finish().ValueOrDie()});
}

std::vector<int64_t> Values(const Block& block) {
  auto ids = std::static_pointer_cast<arrow::Int64Array>(block->GetColumnByName("id"));
  return std::vector<int64_t>(ids->raw_values(), ids->raw_values() + ids->length());
}

/// Every id the operator has in its output queue, in queue order (taking them).
std::vector<int64_t> Drain(PhysicalOperator& op) {
  std::vector<int64_t> out;
  while (op.HasNext()) {
    for (const auto& ref : op.TakeNext().blocks) {
      for (int64_t v : Values(ref.Get().ValueOrDie())) out.push_back(v);
    }
  }
  return out;
}

std::vector<int64_t> Range(int64_t start, int64_t end) {
  std::vector<int64_t> v;
  for (int64_t i = start; i < end; ++i) v.push_back(i);
  return v;
}

/// Runs one launched task to completion on this thread, reporting its outputs and its
/// end to the operator as the executor would.
arrow::Status RunToCompletion(PhysicalOperator& op, const TaskSpec& spec,
                              const DataContext& context) {
  std::vector<Block> outputs;
  TaskRunContext run;
  run.context = &context;
  run.stopped = [] { return false; };
  run.emit = [&](Block block) {
    outputs.push_back(std::move(block));
    return arrow::Status::OK();
  };
  run.sunk = [](const arrow::RecordBatch&) {};
  TaskResult result;
  result.status = op.RunTask(spec, run);
  result.read_blocks = run.read_blocks;
  result.read_rows = run.read_rows;
  result.read_bytes = run.read_bytes;
  for (auto& block : outputs) op.OnTaskOutput(spec.task_index, std::move(block));
  op.OnTaskDone(spec.task_index, result);
  return result.status;
}

// ---- LimitOperator --------------------------------------------------------------------

TEST(LimitOperator, SlicesTheBlockThatCrossesTheLimit) {
  auto op = MakeLimitOperator(10);
  op->AddInput(0, RefBundle::Of(Ids(0, 4)));
  EXPECT_FALSE(op->InputSatisfied());
  op->AddInput(0, RefBundle::Of(Ids(4, 4)));
  EXPECT_FALSE(op->InputSatisfied());
  op->AddInput(0, RefBundle::Of(Ids(8, 4)));
  EXPECT_TRUE(op->InputSatisfied());
  EXPECT_TRUE(op->AllInputsDone());  // it needs no more: the executor stops upstream
  EXPECT_EQ(Drain(*op), Range(0, 10));
  EXPECT_EQ(op->stats.rows_out, 10);
  EXPECT_EQ(op->stats.rows_in, 12);
  EXPECT_TRUE(op->Completed());
}

TEST(LimitOperator, SlicesInsideABundleOfManyBlocks) {
  auto op = MakeLimitOperator(6);
  RefBundle bundle;
  for (int k = 0; k < 4; ++k) bundle.Add(BlockRef(Ids(3 * k, 3)));
  op->AddInput(0, std::move(bundle));
  EXPECT_TRUE(op->InputSatisfied());
  EXPECT_EQ(Drain(*op), Range(0, 6));
  // More input after it is satisfied passes nothing.
  op->AddInput(0, RefBundle::Of(Ids(100, 5)));
  EXPECT_FALSE(op->HasNext());
}

TEST(LimitOperator, ZeroIsSatisfiedAtOnce) {
  auto op = MakeLimitOperator(0);
  EXPECT_TRUE(op->InputSatisfied());
  op->AddInput(0, RefBundle::Of(Ids(0, 3)));
  EXPECT_FALSE(op->HasNext());
  EXPECT_TRUE(op->NeedsOrderedInput());
}

TEST(LimitOperator, ExactBoundaryPassesWholeBlocks) {
  auto op = MakeLimitOperator(8);
  op->AddInput(0, RefBundle::Of(Ids(0, 4)));
  op->AddInput(0, RefBundle::Of(Ids(4, 4)));
  EXPECT_TRUE(op->InputSatisfied());
  EXPECT_EQ(Drain(*op), Range(0, 8));
}

// ---- UnionOperator --------------------------------------------------------------------

TEST(UnionOperator, UnorderedHandsOnAsInputsCome) {
  auto op = MakeUnionOperator(3);
  op->AddInput(2, RefBundle::Of(Ids(20, 2)));
  op->AddInput(0, RefBundle::Of(Ids(0, 2)));
  op->AddInput(1, RefBundle::Of(Ids(10, 2)));
  EXPECT_EQ(Drain(*op), (std::vector<int64_t>{20, 21, 0, 1, 10, 11}));
  EXPECT_FALSE(op->Completed());
  for (int i = 0; i < 3; ++i) op->InputDone(i);
  EXPECT_TRUE(op->Completed());
}

TEST(UnionOperator, OrderedHandsOnInputZeroFirstThenEachInTurn) {
  auto op = MakeUnionOperator(3);
  op->set_ordered(true);
  op->AddInput(1, RefBundle::Of(Ids(10, 2)));
  op->AddInput(2, RefBundle::Of(Ids(20, 2)));
  op->AddInput(0, RefBundle::Of(Ids(0, 2)));
  EXPECT_EQ(Drain(*op), (std::vector<int64_t>{0, 1}));
  // Later inputs wait, counted in its usage.
  EXPECT_EQ(op->CurrentUsage(), BlockBytes(*Ids(10, 2)) + BlockBytes(*Ids(20, 2)));
  op->AddInput(0, RefBundle::Of(Ids(2, 1)));
  EXPECT_EQ(Drain(*op), (std::vector<int64_t>{2}));
  op->InputDone(0);
  EXPECT_EQ(Drain(*op), (std::vector<int64_t>{10, 11}));
  op->AddInput(1, RefBundle::Of(Ids(12, 1)));  // the current input now streams through
  EXPECT_EQ(Drain(*op), (std::vector<int64_t>{12}));
  op->InputDone(1);
  EXPECT_EQ(Drain(*op), (std::vector<int64_t>{20, 21}));
  EXPECT_FALSE(op->Completed());
  op->InputDone(2);
  EXPECT_TRUE(op->Completed());
  EXPECT_EQ(op->CurrentUsage(), 0);
}

TEST(UnionOperator, OrderedSkipsInputsThatFinishedEarly) {
  auto op = MakeUnionOperator(3);
  op->set_ordered(true);
  op->AddInput(1, RefBundle::Of(Ids(10, 1)));
  op->InputDone(1);
  op->AddInput(2, RefBundle::Of(Ids(20, 1)));
  op->AddInput(0, RefBundle::Of(Ids(0, 1)));
  EXPECT_EQ(Drain(*op), (std::vector<int64_t>{0}));
  op->InputDone(0);  // moves past input 1 (done) to input 2
  EXPECT_EQ(Drain(*op), (std::vector<int64_t>{10, 20}));
  op->AddInput(2, RefBundle::Of(Ids(21, 1)));
  EXPECT_EQ(Drain(*op), (std::vector<int64_t>{21}));
}

TEST(UnionOperator, StopDropsWhatWaits) {
  auto op = MakeUnionOperator(2);
  op->set_ordered(true);
  op->AddInput(1, RefBundle::Of(Ids(10, 3)));
  op->Stop();
  EXPECT_EQ(op->CurrentUsage(), 0);
  EXPECT_TRUE(op->Completed());
  op->AddInput(0, RefBundle::Of(Ids(0, 3)));
  EXPECT_FALSE(op->HasNext());
}

// ---- MapOperator ----------------------------------------------------------------------

std::shared_ptr<MapOp> PassThrough(int64_t min_rows_per_bundle = 0) {
  auto spec = std::make_shared<MapOp>(nullptr);
  spec->min_rows_per_bundle = min_rows_per_bundle;
  return spec;
}

TEST(MapOperator, OrderedReleasesInTaskOrder) {
  auto op = MakeTaskPoolMapOperator(PassThrough());
  op->set_ordered(true);
  for (int k = 0; k < 3; ++k) op->AddInput(0, RefBundle::Of(Ids(10 * k, 2)));
  std::vector<TaskSpec> tasks;
  while (op->HasTaskReady()) tasks.push_back(op->LaunchTask());
  ASSERT_EQ(tasks.size(), 3u);
  // Tasks 2 and 1 finish first: their outputs wait for task 0.
  op->OnTaskOutput(tasks[2].task_index, Ids(20, 2));
  op->OnTaskDone(tasks[2].task_index, {});
  op->OnTaskOutput(tasks[1].task_index, Ids(10, 2));
  EXPECT_FALSE(op->HasNext());
  EXPECT_GT(op->CurrentUsage(), 0);  // held outputs count as its memory
  op->OnTaskOutput(tasks[0].task_index, Ids(0, 1));
  EXPECT_EQ(Drain(*op), (std::vector<int64_t>{0}));  // task 0 still runs: its output flows
  op->OnTaskOutput(tasks[0].task_index, Ids(1, 1));
  op->OnTaskDone(tasks[0].task_index, {});
  // Task 1 is not done: its first block leaves, task 2's waits.
  EXPECT_EQ(Drain(*op), (std::vector<int64_t>{1, 10, 11}));
  op->OnTaskDone(tasks[1].task_index, {});
  EXPECT_EQ(Drain(*op), (std::vector<int64_t>{20, 21}));
  op->InputDone(0);
  EXPECT_TRUE(op->Completed());
}

TEST(MapOperator, UnorderedReleasesAsTasksReport) {
  auto op = MakeTaskPoolMapOperator(PassThrough());
  for (int k = 0; k < 2; ++k) op->AddInput(0, RefBundle::Of(Ids(10 * k, 1)));
  auto t0 = op->LaunchTask();
  auto t1 = op->LaunchTask();
  op->OnTaskOutput(t1.task_index, Ids(10, 1));
  EXPECT_EQ(Drain(*op), (std::vector<int64_t>{10}));
  op->OnTaskDone(t1.task_index, {});
  op->OnTaskOutput(t0.task_index, Ids(0, 1));
  op->OnTaskDone(t0.task_index, {});
  EXPECT_EQ(Drain(*op), (std::vector<int64_t>{0}));
}

TEST(MapOperator, BundlesInputsUpToMinRowsPerBundle) {
  auto op = MakeTaskPoolMapOperator(PassThrough(10));
  op->AddInput(0, RefBundle::Of(Ids(0, 4)));
  op->AddInput(0, RefBundle::Of(Ids(4, 4)));
  EXPECT_FALSE(op->HasTaskReady());  // 8 rows: not a whole bundle yet
  op->AddInput(0, RefBundle::Of(Ids(8, 4)));
  op->AddInput(0, RefBundle::Of(Ids(12, 4)));
  ASSERT_TRUE(op->HasTaskReady());
  TaskSpec first = op->LaunchTask();
  EXPECT_EQ(first.inputs.rows, 12);  // three bundles: the first to reach 10 rows
  EXPECT_EQ(first.inputs.blocks.size(), 3u);
  EXPECT_FALSE(op->HasTaskReady());  // 4 rows wait for more input
  op->InputDone(0);
  ASSERT_TRUE(op->HasTaskReady());  // ... or for the end of the input
  TaskSpec rest = op->LaunchTask();
  EXPECT_EQ(rest.inputs.rows, 4);
  DataContext context;
  ASSERT_OK(RunToCompletion(*op, first, context));
  ASSERT_OK(RunToCompletion(*op, rest, context));
  auto out = Drain(*op);
  std::sort(out.begin(), out.end());
  EXPECT_EQ(out, Range(0, 16));
  EXPECT_TRUE(op->Completed());
}

TEST(MapOperator, ToleratedFailureDropsWhatWasHeld) {
  auto op = MakeTaskPoolMapOperator(PassThrough());
  op->set_ordered(true);
  op->AddInput(0, RefBundle::Of(Ids(0, 1)));
  op->AddInput(0, RefBundle::Of(Ids(1, 1)));
  auto t0 = op->LaunchTask();
  auto t1 = op->LaunchTask();
  op->OnTaskOutput(t1.task_index, Ids(1, 1));  // held: task 0 runs
  TaskResult failed;
  failed.status = arrow::Status::Invalid("tolerated");
  failed.discard = true;
  op->OnTaskDone(t1.task_index, failed);
  op->OnTaskOutput(t0.task_index, Ids(0, 1));
  op->OnTaskDone(t0.task_index, {});
  EXPECT_EQ(Drain(*op), (std::vector<int64_t>{0}));
  EXPECT_EQ(op->stats.errored_tasks, 1);
  EXPECT_EQ(op->CurrentUsage(), 0);
}

// ---- AllToAllOperator -----------------------------------------------------------------

std::unique_ptr<PhysicalOperator> SortDescending(int64_t partitions) {
  ExchangeOptions options;
  options.num_partitions = partitions;
  auto exchange = MakeSortExchange({SortKey{"id", true}}, options).ValueOrDie();
  return MakeAllToAllOperator("Sort", std::move(exchange), DataContext{}).ValueOrDie();
}

TEST(AllToAllOperator, MapThenPlanThenReduceInPartitionOrder) {
  DataContext context;
  auto op = SortDescending(3);
  EXPECT_EQ(op->Describe(), "AllToAllOperator[Sort]");
  EXPECT_TRUE(op->NeedsOrderedInput());
  EXPECT_FALSE(op->HasTaskReady());
  // Map stage: one task per input bundle, as the input streams in.
  for (int k = 0; k < 4; ++k) op->AddInput(0, RefBundle::Of(Ids(250 * k, 250)));
  std::vector<TaskSpec> maps;
  while (op->HasTaskReady()) maps.push_back(op->LaunchTask());
  ASSERT_EQ(maps.size(), 4u);
  for (const auto& spec : maps) EXPECT_EQ(spec.stage, 0);
  EXPECT_EQ(op->QueuedInputBundles(), 0);
  EXPECT_GT(op->CurrentUsage(), 0);  // the running maps' inputs
  op->InputDone(0);
  // Planning waits for every map task.
  EXPECT_FALSE(op->HasTaskReady());
  for (const auto& spec : maps) ASSERT_OK(RunToCompletion(*op, spec, context));
  ASSERT_TRUE(op->HasTaskReady());
  TaskSpec plan = op->LaunchTask();
  EXPECT_EQ(plan.stage, 1);
  EXPECT_FALSE(op->HasTaskReady());  // nothing runs beside the planning task
  ASSERT_OK(RunToCompletion(*op, plan, context));
  EXPECT_FALSE(op->Completed());
  // Reduce stage: one task per partition; run them last to first.
  std::vector<TaskSpec> reduces;
  while (op->HasTaskReady()) reduces.push_back(op->LaunchTask());
  ASSERT_EQ(reduces.size(), 3u);
  for (size_t p = 0; p < reduces.size(); ++p) {
    EXPECT_EQ(reduces[p].stage, 2);
    EXPECT_EQ(reduces[p].partition, static_cast<int64_t>(p));
  }
  ASSERT_OK(RunToCompletion(*op, reduces[2], context));
  ASSERT_OK(RunToCompletion(*op, reduces[1], context));
  EXPECT_FALSE(op->HasNext());  // partition 0 first
  EXPECT_FALSE(op->Completed());
  ASSERT_OK(RunToCompletion(*op, reduces[0], context));
  std::vector<int64_t> expected = Range(0, 1000);
  std::reverse(expected.begin(), expected.end());
  EXPECT_EQ(Drain(*op), expected);
  EXPECT_TRUE(op->Completed());
  EXPECT_EQ(op->stats.rows_in, 1000);
  EXPECT_EQ(op->stats.rows_out, 1000);
  EXPECT_EQ(op->stats.tasks, 4 + 1 + 3);
}

TEST(AllToAllOperator, EmptyInputPlansNoReduce) {
  DataContext context;
  auto op = SortDescending(0);
  op->InputDone(0);
  ASSERT_TRUE(op->HasTaskReady());
  TaskSpec plan = op->LaunchTask();
  EXPECT_EQ(plan.stage, 1);
  ASSERT_OK(RunToCompletion(*op, plan, context));
  EXPECT_FALSE(op->HasTaskReady());
  EXPECT_TRUE(op->Completed());
  EXPECT_FALSE(op->HasNext());
}

TEST(AllToAllOperator, StopEndsOnceRunningTasksReport) {
  DataContext context;
  auto op = SortDescending(2);
  op->AddInput(0, RefBundle::Of(Ids(0, 10)));
  op->AddInput(0, RefBundle::Of(Ids(10, 10)));
  TaskSpec running = op->LaunchTask();
  op->Stop();
  EXPECT_FALSE(op->HasTaskReady());
  EXPECT_FALSE(op->Completed());  // a task still runs
  op->OnTaskDone(running.task_index, {});
  EXPECT_TRUE(op->Completed());
  EXPECT_EQ(op->QueuedInputBundles(), 0);
}

TEST(AllToAllOperator, MissingKeyColumnIsNamed) {
  DataContext context;
  ExchangeOptions options;
  auto exchange = MakeSortExchange({SortKey{"nope", false}}, options).ValueOrDie();
  auto op = MakeAllToAllOperator("Sort", std::move(exchange), context).ValueOrDie();
  op->AddInput(0, RefBundle::Of(Ids(0, 5)));
  op->InputDone(0);
  // A block may lack a key column that others have (it sorts as nulls): the column is
  // missing only once every block is mapped, so planning the reduce stage fails.
  ASSERT_OK(RunToCompletion(*op, op->LaunchTask(), context));
  ASSERT_TRUE(op->HasTaskReady());
  auto status = RunToCompletion(*op, op->LaunchTask(), context);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("nope"), std::string::npos) << status.ToString();
}

// ---- Planner registry -----------------------------------------------------------------

/// A logical operator no factory knows.
class MysteryOp : public LogicalOperator {
 public:
  MysteryOp() : LogicalOperator({}) {}
  std::string Name() const override { return "Mystery[42]"; }
  PlanPtr WithInputs(std::vector<PlanPtr>) const override { return std::make_shared<MysteryOp>(); }
};

TEST(PlannerRegistry, UnknownLogicalClassIsNotImplementedNamingIt) {
  PlanPtr node = std::make_shared<MysteryOp>();
  EXPECT_EQ(PlannerRegistry::Default().Find(*node), nullptr);
  auto plan = PlanPhysical(node, DataContext{});
  ASSERT_FALSE(plan.ok());
  EXPECT_TRUE(plan.status().IsNotImplemented());
  EXPECT_NE(plan.status().message().find("Mystery[42]"), std::string::npos) << plan.status().ToString();
}

TEST(PlannerRegistry, UnknownClassBelowAKnownOneIsNamedToo) {
  PlanPtr node = std::make_shared<LimitOp>(std::make_shared<MysteryOp>(), 3);
  auto plan = PlanPhysical(node, DataContext{});
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("Mystery[42]"), std::string::npos);
}

TEST(PlannerRegistry, EveryBuiltInClassHasAFactory) {
  PlanPtr read = Dataset::Range(10).ValueOrDie().plan();
  const auto& registry = PlannerRegistry::Default();
  EXPECT_NE(registry.Find(*read), nullptr);
  EXPECT_NE(registry.Find(LimitOp(read, 1)), nullptr);
  EXPECT_NE(registry.Find(UnionOp({read, read})), nullptr);
  EXPECT_NE(registry.Find(SortOp(read, {SortKey{"id"}})), nullptr);
  EXPECT_NE(registry.Find(RandomShuffleOp(read, RandomSeed{})), nullptr);
  EXPECT_NE(registry.Find(RandomizeBlockOrderOp(read, RandomSeed{})), nullptr);
  EXPECT_NE(registry.Find(RepartitionOp(read, 2, false, {})), nullptr);
}

TEST(Planner, UnionPlansATree) {
  auto a = Dataset::Range(10, 2).ValueOrDie();
  auto b = Dataset::Range(5, 1).ValueOrDie();
  auto c = Dataset::Range(7, 1).ValueOrDie().Sort({SortKey{"id", true}});
  auto optimized = Optimize(a.Union({b, c}).Limit(4).plan()).ValueOrDie();
  auto plan = PlanPhysical(optimized, DataContext{}).ValueOrDie();
  const int root = static_cast<int>(plan.operators.size()) - 1;
  const auto& limit = *plan.operators[root];
  EXPECT_EQ(limit.Describe(), "LimitOperator[4]");
  ASSERT_EQ(limit.upstream.size(), 1u);
  const int union_index = limit.upstream[0];
  const auto& union_op = *plan.operators[union_index];
  EXPECT_EQ(union_op.Describe(), "UnionOperator[3 inputs]");
  ASSERT_EQ(union_op.upstream.size(), 3u);
  for (int k = 0; k < 3; ++k) {
    const auto& input = *plan.operators[union_op.upstream[k]];
    EXPECT_EQ(input.downstream, union_index);
    EXPECT_EQ(input.downstream_input, k);
  }
  // Input 2 is the sort, over its own read.
  const auto& sort = *plan.operators[union_op.upstream[2]];
  EXPECT_EQ(sort.Describe(), "AllToAllOperator[Sort[id desc]]");
  ASSERT_EQ(sort.upstream.size(), 1u);
  // Upstream of a limit everything hands on its output in order.
  EXPECT_TRUE(union_op.ordered());
  for (int u : union_op.upstream) EXPECT_TRUE(plan.operators[u]->ordered());
  // Printed as a tree, the union's inputs indented under it.
  const std::string text = plan.ToString();
  EXPECT_NE(text.find("LimitOperator[4]\n  +- UnionOperator[3 inputs]\n    +- "), std::string::npos) << text;
}

// ---- The executor over a fake backend ---------------------------------------------------

/// Runs tasks one at a time on its own thread, the most recently submitted first: later
/// tasks finish before earlier ones, the order that ordered release must undo.
class LifoBackend : public Backend {
 public:
  LifoBackend() : worker_([this] { Work(); }) {}
  ~LifoBackend() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      closing_ = true;
    }
    wake_.notify_all();
    worker_.join();
  }
  void Submit(std::function<void()> task) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      tasks_.push_back(std::move(task));
      submitted_ += 1;
    }
    wake_.notify_all();
  }
  int64_t submitted() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return submitted_;
  }

 private:
  void Work() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
      wake_.wait(lock, [this] { return closing_ || !tasks_.empty(); });
      if (tasks_.empty()) return;  // closing, nothing left
      auto task = std::move(tasks_.back());
      tasks_.pop_back();
      lock.unlock();
      task();
      lock.lock();
    }
  }
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::function<void()>> tasks_;
  int64_t submitted_ = 0;
  bool closing_ = false;
  std::thread worker_;
};

/// Runs `ds` on a LifoBackend; returns its output blocks in the order they came.
arrow::Result<std::vector<Block>> RunOnLifo(const Dataset& ds, DataContext context,
                                            int64_t* tasks = nullptr) {
  ARROW_ASSIGN_OR_RAISE(auto optimized, Optimize(ds.plan()));
  ARROW_ASSIGN_OR_RAISE(auto plan, PlanPhysical(optimized, context));
  auto backend = std::make_unique<LifoBackend>();
  LifoBackend* fake = backend.get();
  ARROW_ASSIGN_OR_RAISE(auto execution, Execution::Start(std::move(plan), context, std::move(backend)));
  std::vector<Block> out;
  while (true) {
    bool timed_out = false;
    ARROW_ASSIGN_OR_RAISE(auto block, execution->Next(std::chrono::milliseconds(-1), &timed_out));
    if (!block) break;
    out.push_back(std::move(block));
  }
  if (tasks) *tasks = fake->submitted();
  return out;
}

std::vector<int64_t> AllIds(const std::vector<Block>& blocks) {
  std::vector<int64_t> out;
  for (const auto& block : blocks) {
    for (int64_t v : Values(block)) out.push_back(v);
  }
  return out;
}

BatchUdfFactory Identity() {
  return testing::Udf([](const std::shared_ptr<arrow::RecordBatch>& b) {
    return arrow::Table::FromRecordBatches({b});
  });
}

TEST(FakeBackend, PreserveOrderUndoesLastFirstTasks) {
  DataContext context;
  context.execution_options.preserve_order = true;
  context.execution_options.resource_limits.cpu = 4;
  MapBatchesOptions options;
  options.name = "MapBatches(identity)";
  auto ds = Dataset::Range(400, 40).ValueOrDie().MapBatches(Identity(), options);
  int64_t tasks = 0;
  ASSERT_OK_AND_ASSIGN(auto blocks, RunOnLifo(ds, context, &tasks));
  EXPECT_EQ(AllIds(blocks), Range(0, 400));
  EXPECT_GT(tasks, 1);
}

TEST(FakeBackend, UnionThenLimitKeepsTheFirstRows) {
  DataContext context;
  context.execution_options.resource_limits.cpu = 4;
  auto a = Dataset::Range(30, 6).ValueOrDie();
  auto b = Dataset::Range(30, 3).ValueOrDie().Sort({SortKey{"id", true}});
  ASSERT_OK_AND_ASSIGN(auto blocks, RunOnLifo(a.Union({b}).Limit(40), context));
  std::vector<int64_t> expected = Range(0, 30);
  for (int64_t i = 29; i >= 20; --i) expected.push_back(i);
  EXPECT_EQ(AllIds(blocks), expected);
}

TEST(FakeBackend, SortAndRepartitionComeOutInPartitionOrder) {
  DataContext context;
  context.execution_options.resource_limits.cpu = 4;
  context.execution_options.resource_limits.object_store_memory = 64 << 10;  // below the data
  auto ds = Dataset::Range(20000, 16).ValueOrDie().Sort({SortKey{"id", true}});
  auto sorted = RunOnLifo(ds, context);
  ASSERT_OK(sorted.status());
  std::vector<int64_t> expected = Range(0, 20000);
  std::reverse(expected.begin(), expected.end());
  EXPECT_EQ(AllIds(*sorted), expected);
  auto result = RunOnLifo(Dataset::Range(1000, 7).ValueOrDie().Repartition(3).ValueOrDie(), context);
  ASSERT_OK(result.status());
  const auto& repartitioned = *result;
  ASSERT_EQ(repartitioned.size(), 3u);
  EXPECT_EQ(AllIds(repartitioned), Range(0, 1000));
  for (const auto& block : repartitioned) EXPECT_NEAR(block->num_rows(), 1000.0 / 3, 1);
}

TEST(FakeBackend, FailingTaskEndsTheExecution) {
  DataContext context;
  context.execution_options.resource_limits.cpu = 4;
  MapBatchesOptions options;
  options.name = "MapBatches(fails)";
  auto ds = Dataset::Range(100, 10).ValueOrDie().Sort({SortKey{"id"}}).MapBatches(
      testing::Udf([](const std::shared_ptr<arrow::RecordBatch>& b)
                       -> arrow::Result<std::shared_ptr<arrow::Table>> {
        return arrow::Status::Invalid("planned failure");
      }),
      options);
  auto result = RunOnLifo(ds, context);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("planned failure"), std::string::npos)
      << result.status().ToString();
}

TEST(ExecutionStats, PrintsSpilledBytesOfOperatorsThatSpilled) {
  ExecutionStats stats;
  stats.operators.resize(2);
  stats.operators[0].name = "TaskPoolMapOperator[ReadRange]";
  stats.operators[1].name = "AllToAllOperator[Sort[id]]";
  stats.operators[1].spilled_bytes = 3 * 1024 * 1024;
  const std::string text = stats.ToString();
  EXPECT_NE(text.find("* Spilled: 3145728 bytes (3.0 MiB)"), std::string::npos) << text;
  EXPECT_EQ(text.find("Spilled"), text.rfind("Spilled")) << text;  // only the sort's line
  EXPECT_GT(text.find("Spilled"), text.find("AllToAllOperator[Sort[id]]"));
}

// ---- Memory budget: the first task of an operator --------------------------------------

/// The execution as the memory budget sees it: one operator and a limit, nothing held.
class OneOperatorView : public ExecutionView {
 public:
  OneOperatorView(std::unique_ptr<PhysicalOperator> op, int64_t limit) {
    ops_.push_back(std::move(op));
    limits_.memory = limit;
    context_.op_resource_reservation_enabled = false;
  }
  PhysicalOperator& op() { return *ops_[0]; }
  const std::vector<std::unique_ptr<PhysicalOperator>>& operators() const override { return ops_; }
  int64_t OperatorUsage(size_t) const override { return 0; }
  int64_t TotalUsage() const override { return 0; }
  int64_t TaskScratchPeak(size_t) const override { return 0; }
  const EffectiveLimits& limits() const override { return limits_; }
  const DataContext& context() const override { return context_; }

 private:
  std::vector<std::unique_ptr<PhysicalOperator>> ops_;
  EffectiveLimits limits_;
  DataContext context_;
};

/// A step whose output size nothing tells before it runs (as a user function's).
class UnsizedStep : public Transform {
 public:
  std::string name() const override { return "MapBatches(f)"; }
  arrow::Result<std::unique_ptr<TransformState>> MakeState(const TaskContext&) const override {
    return arrow::Status::NotImplemented("not run here");
  }
};

/// Whether a second task may start while the operator's first one still runs, for an
/// operator of `step` over blocks of 1,000 ids (8,000 bytes each) under `limit` bytes.
bool SecondTaskMayStart(std::shared_ptr<const Transform> step, int64_t limit) {
  auto spec = std::make_shared<MapOp>(nullptr);
  spec->transforms.push_back(std::move(step));
  OneOperatorView view(MakeTaskPoolMapOperator(spec), limit);
  for (int k = 0; k < 3; ++k) view.op().AddInput(0, RefBundle::Of(Ids(1000 * k, 1000)));
  auto policy = MakeMemoryBudgetPolicy();
  EXPECT_TRUE(policy->CanLaunch(view, 0));
  view.op().LaunchTask();
  return policy->CanLaunch(view, 0);
}

TEST(MemoryBudgetPolicy, FirstTaskOfAUserFunctionRunsAlone) {
  EXPECT_FALSE(SecondTaskMayStart(std::make_shared<UnsizedStep>(), int64_t{1} << 30));
}

TEST(MemoryBudgetPolicy, EngineStepsAreSizedFromTheirInput) {
  auto filter = [] { return MakeFilterTransform(arrow::compute::literal(true)); };
  // Two tasks at four times their input's 8,000 bytes each fit 1 GiB: both start.
  EXPECT_TRUE(SecondTaskMayStart(filter(), int64_t{1} << 30));
  // They would not fit 48,000 bytes (one task's input would): the first runs alone.
  EXPECT_FALSE(SecondTaskMayStart(filter(), 48000));
}

}  // namespace
}  // namespace millstream
