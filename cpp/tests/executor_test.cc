#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <future>
#include <chrono>
#include <thread>

#include "runtime/counting_memory_pool.h"
#include "test_util.h"

namespace millstream {
namespace {

using testing::IdTable;
using testing::SortedBy;
using testing::Udf;
namespace cp = arrow::compute;

MapBatchesOptions Named(std::string name) {
  MapBatchesOptions options;
  options.name = std::move(name);
  return options;
}

/// A UDF that sleeps `delay` per batch and returns it unchanged.
BatchUdfFactory Slow(std::chrono::milliseconds delay) {
  return Udf([delay](const std::shared_ptr<arrow::RecordBatch>& b) {
    std::this_thread::sleep_for(delay);
    return arrow::Table::FromRecordBatches({b});
  });
}

/// A UDF making a block of `bytes` bytes per input batch.
BatchUdfFactory Inflate(int64_t bytes) {
  return Udf([bytes](const std::shared_ptr<arrow::RecordBatch>& b)
                 -> arrow::Result<std::shared_ptr<arrow::Table>> {
    ARROW_ASSIGN_OR_RAISE(auto buffer, arrow::AllocateBuffer(bytes));
    std::memset(buffer->mutable_data(), 1, bytes);
    auto values = std::make_shared<arrow::Int64Array>(bytes / 8, std::move(buffer));
    return arrow::Table::Make(arrow::schema({arrow::field("v", arrow::int64())}), {values});
  });
}

TEST(Executor, ResultsMatchTheInput) {
  auto table = IdTable(10000);
  auto ds = Dataset::FromArrow(table, 37).ValueOrDie().MapBatches(Slow(std::chrono::milliseconds(0)),
                                                                  Named("MapBatches(id)"));
  auto out = ds.ToTable(DataContext{}).ValueOrDie();
  EXPECT_TRUE(SortedBy(out, "id")->Equals(*table->CombineChunks().ValueOrDie()));
}

TEST(Executor, PreserveOrderDeliversInInputOrder) {
  DataContext context;
  context.execution_options.preserve_order = true;
  // Earlier blocks are slower, so without ordering they would arrive last.
  auto ds = Dataset::Range(64, 16).ValueOrDie().MapBatches(
      Udf([](const std::shared_ptr<arrow::RecordBatch>& b) {
        auto first = std::static_pointer_cast<arrow::Int64Array>(b->column(0))->Value(0);
        std::this_thread::sleep_for(std::chrono::milliseconds(64 - first));
        return arrow::Table::FromRecordBatches({b});
      }),
      Named("MapBatches(slow_first)"));
  auto out = ds.ToTable(context).ValueOrDie()->CombineChunks().ValueOrDie();
  auto ids = std::static_pointer_cast<arrow::Int64Array>(out->column(0)->chunk(0));
  ASSERT_EQ(ids->length(), 64);
  for (int64_t i = 0; i < 64; ++i) EXPECT_EQ(ids->Value(i), i);
}

/// A UDF that sleeps longer for earlier rows (64 - first id ms): unordered, the earlier
/// blocks would finish last.
BatchUdfFactory SlowFirst() {
  return Udf([](const std::shared_ptr<arrow::RecordBatch>& b) {
    auto first = std::static_pointer_cast<arrow::Int64Array>(b->column(0))->Value(0);
    std::this_thread::sleep_for(std::chrono::milliseconds(std::max<int64_t>(0, 64 - first)));
    return arrow::Table::FromRecordBatches({b});
  });
}

std::vector<int64_t> Ids(const std::shared_ptr<arrow::Table>& table) {
  std::vector<int64_t> ids;
  for (const auto& chunk : table->GetColumnByName("id")->chunks()) {
    auto values = std::static_pointer_cast<arrow::Int64Array>(chunk);
    for (int64_t i = 0; i < values->length(); ++i) ids.push_back(values->Value(i));
  }
  return ids;
}

std::vector<int64_t> Iota(int64_t n) {
  std::vector<int64_t> out(n);
  for (int64_t i = 0; i < n; ++i) out[i] = i;
  return out;
}

TEST(Executor, ToTableAndMaterializeKeepInputOrderWithoutPreserveOrder) {
  auto ds = Dataset::Range(64, 16).ValueOrDie().MapBatches(SlowFirst(), Named("MapBatches(slow_first)"));
  EXPECT_EQ(Ids(ds.ToTable(DataContext{}).ValueOrDie()), Iota(64));
  auto materialized = ds.Materialize(DataContext{}).ValueOrDie();
  EXPECT_EQ(Ids(materialized.ToTable(DataContext{}).ValueOrDie()), Iota(64));
}

TEST(Executor, LimitKeepsTheFirstRowsEvenWhenStreaming) {
  auto ds = Dataset::Range(64, 16).ValueOrDie().MapBatches(SlowFirst(), Named("MapBatches(slow_first)"));
  // Execute streams (no preserve_order): the limit still sees the rows in input order.
  auto stream = ds.Limit(10).Execute(DataContext{}).ValueOrDie();
  std::vector<int64_t> ids;
  while (true) {
    auto block = stream->Next().ValueOrDie();
    if (!block) break;
    auto values = std::static_pointer_cast<arrow::Int64Array>(block->column(0));
    for (int64_t i = 0; i < values->length(); ++i) ids.push_back(values->Value(i));
  }
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, Iota(10));
}

TEST(Executor, LimitZeroRunsNothingUpstream) {
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto ds = Dataset::Range(100, 10).ValueOrDie().MapBatches(
      Udf([calls](const std::shared_ptr<arrow::RecordBatch>& b) {
        *calls += 1;
        return arrow::Table::FromRecordBatches({b});
      }),
      Named("MapBatches(count)"));
  auto out = ds.Limit(0).ToTable(DataContext{}).ValueOrDie();
  EXPECT_EQ(out->num_rows(), 0);
  EXPECT_EQ(*calls, 0);
}

TEST(Executor, FilterRejectsANonBooleanPredicate) {
  auto ds = Dataset::Range(10).ValueOrDie();
  for (const auto& predicate : {cp::literal(int64_t{0}), cp::literal(0.0),
                                cp::call("add", {cp::field_ref("id"), cp::literal(int64_t{1})})}) {
    auto out = ds.Filter(predicate).ToTable(DataContext{});
    ASSERT_FALSE(out.ok()) << predicate.ToString();
    EXPECT_EQ(out.status().code(), arrow::StatusCode::TypeError);
    EXPECT_NE(out.status().message().find("not boolean"), std::string::npos) << out.status().ToString();
  }
  auto kept = ds.Filter(cp::literal(true)).ToTable(DataContext{}).ValueOrDie();
  EXPECT_EQ(kept->num_rows(), 10);
}

TEST(Executor, RenameOntoAnExistingOrSharedNameFails) {
  auto ds = Dataset::FromArrow(IdTable(4)).ValueOrDie();
  auto onto_existing = ds.RenameColumns({{"id", "x"}});
  ASSERT_FALSE(onto_existing.ok());
  EXPECT_EQ(onto_existing.status().code(), arrow::StatusCode::Invalid);
  EXPECT_NE(onto_existing.status().message().find("'x'"), std::string::npos);
  auto onto_one = ds.RenameColumns({{"id", "y"}, {"x", "y"}});
  ASSERT_FALSE(onto_one.ok());
  EXPECT_NE(onto_one.status().message().find("'y'"), std::string::npos);
  // A swap leaves every name once.
  auto swapped = ds.RenameColumns({{"id", "x"}, {"x", "id"}}).ValueOrDie().ToTable(DataContext{}).ValueOrDie();
  EXPECT_EQ(swapped->schema()->field(0)->name(), "x");
  EXPECT_EQ(swapped->schema()->field(1)->name(), "id");
}

TEST(Range, HugeRangeCountsFromMetadataAndALimitReadsOnlyItsRows) {
  const int64_t n = int64_t{1} << 62;
  auto ds = Dataset::Range(n).ValueOrDie();
  EXPECT_EQ(ds.CountFromMetadata(), n);
  auto first = ds.Limit(2).ToTable(DataContext{}).ValueOrDie();
  EXPECT_EQ(Ids(first), Iota(2));
  // Without a limit, blocks stay under target_max_block_size, made as they are taken.
  DataContext context;
  context.target_max_block_size = 8 << 10;  // 1024 rows
  auto stream = ds.Execute(context).ValueOrDie();
  auto block = stream->Next().ValueOrDie();
  ASSERT_NE(block, nullptr);
  EXPECT_LE(block->num_rows(), 1024);
  EXPECT_EQ(std::static_pointer_cast<arrow::Int64Array>(block->column(0))->Value(0) % 1024, 0);
  stream->Cancel();
}

TEST(Range, BlocksAreCappedByTargetMaxBlockSize) {
  DataContext context;
  context.target_max_block_size = 80;  // 10 rows
  context.target_min_block_size = 0;
  context.execution_options.preserve_order = true;
  auto stream = Dataset::Range(95, 1).ValueOrDie().Execute(context).ValueOrDie();
  std::vector<int64_t> sizes;
  int64_t next_id = 0;
  while (true) {
    auto block = stream->Next().ValueOrDie();
    if (!block) break;
    sizes.push_back(block->num_rows());
    EXPECT_EQ(std::static_pointer_cast<arrow::Int64Array>(block->column(0))->Value(0), next_id);
    next_id += block->num_rows();
  }
  EXPECT_EQ(next_id, 95);
  EXPECT_EQ(sizes.size(), 10u);
  for (auto rows : sizes) EXPECT_LE(rows, 10);
}

TEST(Executor, BatchSizeBundlesSmallBlocks) {
  std::atomic<int> calls{0};
  std::atomic<int> wrong_sizes{0};
  MapBatchesOptions options = Named("MapBatches(check)");
  options.batch_size = 100;
  auto ds = Dataset::Range(1000, 100).ValueOrDie().MapBatches(
      Udf([&](const std::shared_ptr<arrow::RecordBatch>& b) {
        ++calls;
        if (b->num_rows() != 100) ++wrong_sizes;
        return arrow::Table::FromRecordBatches({b});
      }),
      options);
  EXPECT_EQ(ds.Count(DataContext{}).ValueOrDie(), 1000);
  EXPECT_EQ(calls.load(), 10);
  EXPECT_EQ(wrong_sizes.load(), 0);
}

TEST(Executor, BlocksSplitAtTargetMaxBlockSize) {
  DataContext context;
  context.target_max_block_size = 1 << 20;
  auto ds = Dataset::Range(10, 1).ValueOrDie().MapBatches(Inflate(8 << 20), Named("MapBatches(big)"));
  auto stream = ds.Execute(context).ValueOrDie();
  int blocks = 0;
  while (auto block = stream->Next().ValueOrDie()) {
    EXPECT_LE(BlockBytes(*block), (1 << 20) + 8);
    ++blocks;
  }
  EXPECT_EQ(blocks, 8);
}

TEST(Executor, UdfErrorFailsTheExecutionWithTheOperatorName) {
  auto ds = Dataset::Range(100, 10).ValueOrDie().MapBatches(
      Udf([](const std::shared_ptr<arrow::RecordBatch>& b) -> arrow::Result<std::shared_ptr<arrow::Table>> {
        auto first = std::static_pointer_cast<arrow::Int64Array>(b->column(0))->Value(0);
        if (first == 50) return arrow::Status::Invalid("bad row ", first);
        return arrow::Table::FromRecordBatches({b});
      }),
      Named("MapBatches(picky)"));
  auto result = ds.ToTable(DataContext{});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), arrow::StatusCode::Invalid);
  EXPECT_NE(result.status().message().find("MapBatches(picky)"), std::string::npos);
  EXPECT_NE(result.status().message().find("bad row 50"), std::string::npos);
}

TEST(Executor, MaxErroredBlocksToleratesThatManyFailures) {
  auto picky = Udf([](const std::shared_ptr<arrow::RecordBatch>& b) -> arrow::Result<std::shared_ptr<arrow::Table>> {
    auto first = std::static_pointer_cast<arrow::Int64Array>(b->column(0))->Value(0);
    if (first % 30 == 0) return arrow::Status::Invalid("bad block at ", first);  // 0, 30, 60, 90
    return arrow::Table::FromRecordBatches({b});
  });
  auto ds = Dataset::Range(100, 10).ValueOrDie().MapBatches(picky, Named("MapBatches(picky)"));
  DataContext context;
  context.max_errored_blocks = 2;  // blocks starting at 0, 30, 60, 90 fail: 4 > 2
  EXPECT_FALSE(ds.ToTable(context).ok());
  context.max_errored_blocks = 4;
  ExecutionStats stats;
  auto out = ds.Materialize(context, &stats);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->Count(context).ValueOrDie(), 60);  // 10 blocks of 10 rows, 4 dropped
  EXPECT_EQ(stats.operators.back().errored_tasks, 4);
  context.max_errored_blocks = -1;
  EXPECT_EQ(ds.ToTable(context).ValueOrDie()->num_rows(), 60);
}

TEST(Executor, LimitStopsUpstreamEarly) {
  std::atomic<int> calls{0};
  auto ds = Dataset::Range(100000, 1000).ValueOrDie().MapBatches(
      Udf([&](const std::shared_ptr<arrow::RecordBatch>& b) {
        ++calls;
        return arrow::Table::FromRecordBatches({b});
      }),
      Named("MapBatches(count)")).Limit(10);
  auto out = ds.ToTable(DataContext{}).ValueOrDie();
  EXPECT_EQ(out->num_rows(), 10);
  EXPECT_LT(calls.load(), 100);
}

TEST(Executor, CancelStopsPromptly) {
  auto ds = Dataset::Range(1000, 1000).ValueOrDie().MapBatches(Slow(std::chrono::milliseconds(20)),
                                                                Named("MapBatches(slow)"));
  auto stream = ds.Execute(DataContext{}).ValueOrDie();
  ASSERT_NE(stream->Next().ValueOrDie(), nullptr);
  auto start = std::chrono::steady_clock::now();
  stream->Cancel();
  auto next = stream->Next();
  EXPECT_FALSE(next.ok());
  EXPECT_EQ(next.status().code(), arrow::StatusCode::Cancelled);
  stream.reset();  // joins the execution
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST(Executor, CancelDoesNotWaitForAUdfCallInProgress) {
  std::atomic<int> started{0};
  auto ds = Dataset::Range(4, 4).ValueOrDie().MapBatches(
      Udf([&](const std::shared_ptr<arrow::RecordBatch>& b) {
        started += 1;
        std::this_thread::sleep_for(std::chrono::milliseconds(1500));
        return arrow::Table::FromRecordBatches({b});
      }),
      Named("MapBatches(slow)"));
  DataContext context;
  context.execution_options.resource_limits.cpu = 1;
  auto stream = ds.Execute(context).ValueOrDie();
  while (started.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto cancelled = std::chrono::steady_clock::now();
  stream->Cancel();
  auto next = stream->Next();
  EXPECT_EQ(next.status().code(), arrow::StatusCode::Cancelled);
  EXPECT_LT(std::chrono::steady_clock::now() - cancelled, std::chrono::milliseconds(1000));
  // The call in progress runs to its end; nothing else starts.
  EXPECT_FALSE(stream->WaitForTasks(std::chrono::milliseconds(10)));
  EXPECT_TRUE(stream->WaitForTasks(std::chrono::milliseconds(-1)));
  EXPECT_EQ(started.load(), 1);
}

TEST(Executor, StalledConsumerKeepsAccountedMemoryUnderTheLimit) {
  // Fast producer (8 MiB blocks), consumer that stops pulling: the accounted bytes stay
  // under the limit plus one task's output.
  const int64_t limit = 64LL << 20, block = 8LL << 20;
  DataContext context;
  context.execution_options.resource_limits.object_store_memory = limit;
  auto ds = Dataset::Range(400, 400).ValueOrDie().MapBatches(Inflate(block), Named("MapBatches(inflate)"));
  auto stream = ds.Execute(context).ValueOrDie();
  ASSERT_NE(stream->Next().ValueOrDie(), nullptr);
  int64_t peak = 0;
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
    peak = std::max(peak, stream->accounted_bytes());
  }
  EXPECT_LE(peak, limit + 2 * block);
  auto stats = stream->stats();
  EXPECT_FALSE(stats.finished);
  EXPECT_LT(stats.operators.back().tasks, 400);
}

TEST(Executor, TaskScratchInTheEnginePoolCountsTowardTheLimit) {
  // Each task allocates 2x the limit of scratch through the engine's pool, holds it until
  // the test has seen it, and returns one small batch. The accounted bytes include the
  // scratch while it is held, and once one task has shown what it needs, the others are
  // held back and run one at a time (4 CPU slots would otherwise run 4 at once).
  const int64_t limit = 16LL << 20, scratch = 2 * limit;
  DataContext context;
  context.execution_options.resource_limits.object_store_memory = limit;
  context.execution_options.resource_limits.cpu = 4;
  std::atomic<int> running{0}, most{0};
  std::atomic<bool> seen{false};
  auto udf = Udf([&](const std::shared_ptr<arrow::RecordBatch>& batch)
                     -> arrow::Result<std::shared_ptr<arrow::Table>> {
    int now = running.fetch_add(1) + 1;
    int top = most.load();
    while (now > top && !most.compare_exchange_weak(top, now)) {
    }
    {
      ARROW_ASSIGN_OR_RAISE(auto buffer, arrow::AllocateBuffer(scratch, EngineMemoryPool()));
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (!seen.load() && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      // Held a while longer, so tasks launched beside it would overlap.
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    running.fetch_sub(1);
    return arrow::Table::FromRecordBatches({batch});
  });
  auto ds = Dataset::Range(64, 8).ValueOrDie().MapBatches(udf, Named("MapBatches(scratch)"));
  auto stream = ds.Execute(context).ValueOrDie();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  int64_t accounted = 0;
  while (accounted < scratch && std::chrono::steady_clock::now() < deadline) {
    accounted = stream->accounted_bytes();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_GE(accounted, scratch);
  seen = true;
  int64_t rows = 0;
  while (true) {
    auto block = stream->Next();
    ASSERT_TRUE(block.ok()) << block.status().ToString();
    if (*block == nullptr) break;
    rows += (*block)->num_rows();
  }
  EXPECT_EQ(rows, 64);
  EXPECT_EQ(most.load(), 1);
  EXPECT_GE(stream->stats().peak_bytes, scratch);
}

TEST(Executor, FirstTaskSizesTheOthers) {
  // Tiny inputs, 32 MiB outputs, 4 CPU slots and a 16 MiB limit: nothing tells the
  // outputs' size before a task finishes, so one task runs first; launching one per CPU
  // would hold 4 x 32 MiB. The consumer takes one block, then stalls.
  const int64_t limit = 16LL << 20, block = 32LL << 20;
  DataContext context;
  context.execution_options.resource_limits.object_store_memory = limit;
  context.execution_options.resource_limits.cpu = 4;
  auto ds = Dataset::Range(64, 64).ValueOrDie().MapBatches(Inflate(block), Named("MapBatches(inflate)"));
  auto stream = ds.Execute(context).ValueOrDie();
  ASSERT_NE(stream->Next().ValueOrDie(), nullptr);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto stats = stream->stats();
  // The promise: the limit plus one task's input (8 bytes) and output.
  EXPECT_LE(stats.peak_bytes, limit + block + 1024);
  EXPECT_LT(stats.operators.back().tasks, 4) << stats.ToString();
}

TEST(Executor, SlowMiddleStageBoundsMemory) {
  const int64_t limit = 48LL << 20, block = 4LL << 20;
  DataContext context;
  context.execution_options.resource_limits.object_store_memory = limit;
  auto ds = Dataset::Range(120, 120).ValueOrDie()
                .MapBatches(Inflate(block), Named("MapBatches(inflate)"))
                .MapBatches(Slow(std::chrono::milliseconds(5)), [] {
                  auto o = Named("MapBatches(slow)");
                  o.num_cpus = 0.5;
                  return o;
                }());
  ExecutionStats stats;
  auto out = ds.Materialize(context, &stats);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  // The consumer (Materialize) keeps every block, so only the pipeline's own accounting
  // is bounded: the peak stays within the limit plus one task's input and output.
  EXPECT_EQ(stats.operators.back().rows_out, 120 * (block / 8));
  EXPECT_LE(stats.peak_bytes, limit + 2 * block);
}

TEST(Executor, ImpossibleResourceRequestFailsAtOnce) {
  auto options = Named("MapBatches(gpu)");
  options.num_gpus = 1;
  auto ds = Dataset::Range(10).ValueOrDie().MapBatches(Slow(std::chrono::milliseconds(0)), options);
  auto result = ds.ToTable(DataContext{});
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("num_gpus"), std::string::npos);
}

TEST(Context, InvalidValuesFailNamingTheField) {
  struct Case {
    std::string field;
    std::function<void(DataContext&)> set;
  };
  std::vector<Case> cases = {
      {"target_max_block_size", [](DataContext& c) { c.target_max_block_size = 0; }},
      {"target_min_block_size", [](DataContext& c) { c.target_min_block_size = -1; }},
      {"resource_limits.cpu", [](DataContext& c) { c.execution_options.resource_limits.cpu = 0; }},
      {"resource_limits.cpu", [](DataContext& c) { c.execution_options.resource_limits.cpu = NAN; }},
      {"resource_limits.gpu", [](DataContext& c) { c.execution_options.resource_limits.gpu = -1; }},
      {"resource_limits.object_store_memory",
       [](DataContext& c) { c.execution_options.resource_limits.object_store_memory = -5; }},
      {"exclude_resources.cpu", [](DataContext& c) { c.execution_options.exclude_resources.cpu = INFINITY; }},
      {"op_resource_reservation_ratio", [](DataContext& c) { c.op_resource_reservation_ratio = 1.5; }},
      {"actor_pool_max_upscaling_delta",
       [](DataContext& c) { c.autoscaling_config.actor_pool_max_upscaling_delta = 0; }},
      {"max_errored_blocks", [](DataContext& c) { c.max_errored_blocks = -2; }},
  };
  auto ds = Dataset::Range(100, 4).ValueOrDie().MapBatches(Slow(std::chrono::milliseconds(0)),
                                                           Named("MapBatches(id)"));
  for (const auto& c : cases) {
    DataContext context;
    c.set(context);
    auto status = context.Validate();
    EXPECT_EQ(status.code(), arrow::StatusCode::Invalid) << c.field;
    EXPECT_NE(status.message().find(c.field), std::string::npos) << status.ToString();
    // Every way into an execution checks it: no crash, the same error.
    auto count = ds.Count(context);
    ASSERT_FALSE(count.ok()) << c.field;
    EXPECT_NE(count.status().message().find(c.field), std::string::npos) << count.status().ToString();
  }
  EXPECT_TRUE(DataContext{}.Validate().ok());
}

TEST(Context, ClusterSizedCpuLimitKeepsItsSlotsWithoutAThreadEach) {
  // cpu=40000 is a valid limit (Ray accepts it for a cluster): the pool is capped, the
  // slots stay logical, the result is complete.
  DataContext context;
  context.execution_options.resource_limits.cpu = 40000;
  auto ds = Dataset::Range(1000, 50).ValueOrDie().MapBatches(Slow(std::chrono::milliseconds(1)),
                                                             Named("MapBatches(slow)"));
  auto count = ds.Count(context);
  ASSERT_TRUE(count.ok()) << count.status().ToString();
  EXPECT_EQ(*count, 1000);
}

TEST(Executor, CpuLimitBeyondIntRangeRuns) {
  DataContext context;
  context.execution_options.resource_limits.cpu = 1e30;  // "no CPU limit"
  auto ds = Dataset::Range(100, 10).ValueOrDie().MapBatches(Slow(std::chrono::milliseconds(0)),
                                                            Named("MapBatches(noop)"));
  auto out = ds.ToTable(context);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ((*out)->num_rows(), 100);
}

TEST(Executor, ActorPoolConstructsOncePerActor) {
  std::atomic<int> constructed{0};
  MapBatchesOptions options = Named("MapBatches(Model)");
  options.compute = ComputeStrategy::Actors(2, 2);
  auto udf = std::make_shared<testing::FnUdf>([](const std::shared_ptr<arrow::RecordBatch>& b) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return arrow::Table::FromRecordBatches({b});
  });
  auto ds = Dataset::Range(1000, 50).ValueOrDie().MapBatches(
      [&]() -> arrow::Result<std::shared_ptr<BatchUdf>> {
        ++constructed;
        return udf;
      },
      options);
  EXPECT_EQ(ds.ToTable(DataContext{}).ValueOrDie()->num_rows(), 1000);
  EXPECT_GE(constructed.load(), 1);
  EXPECT_LE(constructed.load(), 2);
}

TEST(ActorPool, AutoscalesUpUnderLoadWithinBounds) {
  MapBatchesOptions options = Named("MapBatches(Model)");
  options.compute = ComputeStrategy::Actors(1, 3);
  options.num_cpus = 0.5;
  std::atomic<int> constructed{0};
  auto udf = std::make_shared<testing::FnUdf>([](const std::shared_ptr<arrow::RecordBatch>& b) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return arrow::Table::FromRecordBatches({b});
  });
  auto ds = Dataset::Range(4000, 200).ValueOrDie().MapBatches(
      [&]() -> arrow::Result<std::shared_ptr<BatchUdf>> {
        ++constructed;
        return udf;
      },
      options);
  ExecutionStats stats;
  auto out = ds.Materialize(DataContext{}, &stats).ValueOrDie();
  const auto& op = stats.operators.back();
  EXPECT_EQ(op.rows_out, 4000);
  EXPECT_EQ(op.peak_actors, 3);  // 200 queued bundles: the pool grows to its max, no further
  EXPECT_EQ(constructed.load(), 3);
  EXPECT_EQ(op.actors_started, 3);
}

TEST(ActorPool, StaysSmallWhenInputTrickles) {
  MapBatchesOptions slow = Named("MapBatches(slow_source)");
  slow.compute = ComputeStrategy::Tasks(1);  // capped: stays its own operator
  MapBatchesOptions actor = Named("MapBatches(Fast)");
  actor.compute = ComputeStrategy::Actors(1, 4);
  actor.num_cpus = 0.5;
  auto ds = Dataset::Range(40, 40).ValueOrDie()
                .MapBatches(Slow(std::chrono::milliseconds(15)), slow)
                .MapBatches(Slow(std::chrono::milliseconds(0)), actor);
  ExecutionStats stats;
  DataContext context;
  context.execution_options.resource_limits.cpu = 1.5;
  auto out = ds.Materialize(context, &stats).ValueOrDie();
  EXPECT_EQ(stats.operators.back().rows_out, 40);
  EXPECT_EQ(stats.operators.back().peak_actors, 1);
}

TEST(ActorPool, ActorsAskingForEveryCpuDoNotStarveUpstream) {
  DataContext context;
  context.execution_options.resource_limits.cpu = 2;
  MapBatchesOptions upstream = Named("MapBatches(prepare)");
  MapBatchesOptions actor = Named("MapBatches(Model)");
  actor.compute = ComputeStrategy::Actors(2, 2);
  actor.num_cpus = 1;  // two actors x one CPU: every CPU of the limit
  upstream.num_cpus = 1;
  upstream.compute = ComputeStrategy::Tasks(1);  // not fusable: different strategy
  auto ds = Dataset::Range(1000, 50).ValueOrDie()
                .MapBatches(Slow(std::chrono::milliseconds(1)), upstream)
                .MapBatches(Slow(std::chrono::milliseconds(1)), actor);
  auto start = std::chrono::steady_clock::now();
  auto out = ds.ToTable(context);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ((*out)->num_rows(), 1000);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
}

/// Counts the calls inside at once and the most there ever were.
struct EntryCounter {
  std::atomic<int> inside{0};
  std::atomic<int> peak{0};
  void Enter() {
    int now = ++inside;
    int seen = peak.load();
    while (now > seen && !peak.compare_exchange_weak(seen, now)) {
    }
  }
  void Leave() { --inside; }
};

/// An actor's UDF (one instance per actor) that records concurrent entry into itself and
/// into the pool as a whole; each call sleeps `delay` to widen the window.
struct ReentryProbe {
  std::mutex mutex;
  std::vector<std::shared_ptr<EntryCounter>> instances;
  EntryCounter pool;
  std::chrono::milliseconds delay{2};

  BatchUdfFactory Factory() {
    return [this]() -> arrow::Result<std::shared_ptr<BatchUdf>> {
      auto mine = std::make_shared<EntryCounter>();
      {
        std::lock_guard<std::mutex> lock(mutex);
        instances.push_back(mine);
      }
      return std::make_shared<testing::FnUdf>([this, mine](const std::shared_ptr<arrow::RecordBatch>& b) {
        mine->Enter();
        pool.Enter();
        std::this_thread::sleep_for(delay);
        pool.Leave();
        mine->Leave();
        return arrow::Table::FromRecordBatches({b});
      });
    };
  }
  int InstancePeak() {
    std::lock_guard<std::mutex> lock(mutex);
    int most = 0;
    for (const auto& counter : instances) most = std::max(most, counter->peak.load());
    return most;
  }
};

TEST(ActorPool, AnActorRunsOneCallAtATime) {
  // Fixed pools of 1 and 2, and an autoscaling one: never two calls inside one instance,
  // while the actors of a pool do run side by side.
  struct Case {
    int min_size, max_size;
  };
  for (Case c : {Case{1, 1}, Case{2, 2}, Case{1, 3}}) {
    ReentryProbe probe;
    MapBatchesOptions options = Named("MapBatches(Stateful)");
    options.compute = ComputeStrategy::Actors(c.min_size, c.max_size);
    options.num_cpus = 0.5;
    DataContext context;
    context.execution_options.resource_limits.cpu = 8;  // threads to spare for overlap
    auto ds = Dataset::Range(3000, 300).ValueOrDie().MapBatches(probe.Factory(), options);
    ExecutionStats stats;
    auto out = ds.Materialize(context, &stats);
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    EXPECT_EQ(stats.operators.back().rows_out, 3000);
    EXPECT_EQ(probe.InstancePeak(), 1) << c.min_size << ".." << c.max_size;
    EXPECT_LE(probe.pool.peak.load(), c.max_size);
    if (c.min_size == 2) EXPECT_EQ(probe.pool.peak.load(), 2);  // both actors at work at once
  }
}

TEST(ActorPool, MaxConcurrencyRunsTasksSideBySideButCallsOneAtATime) {
  // Ray's threaded actor without true multi-threading: up to max_concurrency tasks run on
  // the actor (their other steps, here a fused function, overlap), its UDF one call at a time.
  ReentryProbe probe;
  EntryCounter prepare;
  MapBatchesOptions before = Named("MapBatches(prepare)");
  MapBatchesOptions options = Named("MapBatches(Stateful)");
  options.compute = ComputeStrategy::Actors(1, 1, 4, /*max_concurrency=*/3);
  DataContext context;
  context.execution_options.resource_limits.cpu = 8;
  auto ds = Dataset::Range(600, 60).ValueOrDie()
                .MapBatches(Udf([&](const std::shared_ptr<arrow::RecordBatch>& b) {
                              prepare.Enter();
                              std::this_thread::sleep_for(std::chrono::milliseconds(20));
                              prepare.Leave();
                              return arrow::Table::FromRecordBatches({b});
                            }),
                            before)
                .MapBatches(probe.Factory(), options);
  ExecutionStats stats;
  auto out = ds.Materialize(context, &stats);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  ASSERT_EQ(stats.operators.size(), 1u);  // fused: the function runs in the actor's tasks
  EXPECT_EQ(stats.operators.back().rows_out, 600);
  EXPECT_EQ(probe.instances.size(), 1u);
  EXPECT_EQ(probe.InstancePeak(), 1);
  EXPECT_EQ(prepare.peak.load(), 3);  // three tasks on the one actor at once, no more
}

TEST(ActorPool, TrueMultiThreadingLetsMaxConcurrencyCallsIn) {
  ReentryProbe probe;
  probe.delay = std::chrono::milliseconds(10);
  MapBatchesOptions options = Named("MapBatches(ThreadSafe)");
  options.compute = ComputeStrategy::Actors(1, 1, 4, /*max_concurrency=*/3,
                                            /*enable_true_multi_threading=*/true);
  DataContext context;
  context.execution_options.resource_limits.cpu = 8;
  auto ds = Dataset::Range(600, 60).ValueOrDie().MapBatches(probe.Factory(), options);
  ExecutionStats stats;
  auto out = ds.Materialize(context, &stats);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(stats.operators.back().rows_out, 600);
  EXPECT_EQ(probe.instances.size(), 1u);
  EXPECT_EQ(probe.InstancePeak(), 3);
}

TEST(ActorPool, MaxConcurrencyDividesTheActorsCpus) {
  // One actor asking for every CPU, max_concurrency=2: its two tasks share that CPU
  // between them, as Ray divides an actor's resources among its concurrent tasks.
  ReentryProbe probe;
  MapBatchesOptions options = Named("MapBatches(ThreadSafe)");
  options.compute = ComputeStrategy::Actors(1, 1, 4, 2, true);
  options.num_cpus = 2;
  DataContext context;
  context.execution_options.resource_limits.cpu = 2;
  auto ds = Dataset::Range(400, 40).ValueOrDie().MapBatches(probe.Factory(), options);
  auto out = ds.ToTable(context);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ((*out)->num_rows(), 400);
  EXPECT_EQ(probe.InstancePeak(), 2);
}

TEST(ActorPool, ATaskWaitingForItsActorsCallEndsOnCancel) {
  // max_concurrency=2, calls one at a time: the second task waits for the first's call,
  // which does not return until released. Cancel ends the waiting one at once.
  std::atomic<int> calls{0};
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  MapBatchesOptions options = Named("MapBatches(Stuck)");
  options.compute = ComputeStrategy::Actors(1, 1, 4, /*max_concurrency=*/2);
  auto udf = std::make_shared<testing::FnUdf>([&](const std::shared_ptr<arrow::RecordBatch>& b) {
    if (calls++ == 1) released.wait();
    return arrow::Table::FromRecordBatches({b});
  });
  DataContext context;
  context.execution_options.resource_limits.cpu = 4;
  auto stream = Dataset::Range(100, 10).ValueOrDie()
                    .MapBatches([udf]() -> arrow::Result<std::shared_ptr<BatchUdf>> { return udf; },
                                options)
                    .Execute(context)
                    .ValueOrDie();
  auto active = [&] { return stream->stats().operators.back().active_tasks; };
  auto until = [](auto done) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return done();
  };
  // The first task runs alone (it sizes the rest) and finishes; the second's call sticks.
  ASSERT_TRUE(until([&] { return calls.load() == 2 && active() == 2; }));
  stream->Cancel();
  EXPECT_TRUE(until([&] { return active() == 1; }));  // the waiting task ended
  EXPECT_EQ(calls.load(), 2) << "a call entered while another was inside";
  release.set_value();
  EXPECT_TRUE(stream->WaitForTasks(std::chrono::seconds(5)));
}

TEST(ActorPool, InvalidPoolSettingsNameTheArgument) {
  struct Case {
    ComputeStrategy compute;
    std::string argument;
  };
  for (const Case& c : {Case{ComputeStrategy::Actors(1, 2, 0), "max_tasks_in_flight_per_actor"},
                        Case{ComputeStrategy::Actors(1, 2, 4, 0), "max_concurrency"},
                        Case{ComputeStrategy::Actors(0, 2), "min_size"},
                        Case{ComputeStrategy::Actors(3, 2), "max_size"}}) {
    MapBatchesOptions options = Named("MapBatches(Model)");
    options.compute = c.compute;
    auto out = Dataset::Range(10, 2).ValueOrDie().MapBatches(Slow(std::chrono::milliseconds(0)), options)
                   .ToTable(DataContext{});
    ASSERT_FALSE(out.ok()) << c.argument;
    EXPECT_EQ(out.status().code(), arrow::StatusCode::Invalid);
    EXPECT_NE(out.status().message().find(c.argument), std::string::npos) << out.status().ToString();
  }
}

TEST(ActorPool, ConstructorFailureNamesTheOperator) {
  MapBatchesOptions options = Named("MapBatches(BrokenModel)");
  options.compute = ComputeStrategy::Actors(1, 2);
  auto ds = Dataset::Range(10, 2).ValueOrDie().MapBatches(
      []() -> arrow::Result<std::shared_ptr<BatchUdf>> {
        return arrow::Status::IOError("weights file missing");
      },
      options);
  auto result = ds.ToTable(DataContext{});
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("BrokenModel"), std::string::npos);
  EXPECT_NE(result.status().message().find("weights file missing"), std::string::npos);
}

TEST(Stats, RowEstimatesUseFinishedTasksOnly) {
  // A one-to-one map over 1000 rows: while it runs, the estimate is the input's size.
  auto ds = Dataset::Range(1000, 100).ValueOrDie().MapBatches(Slow(std::chrono::milliseconds(3)),
                                                               Named("MapBatches(same)"));
  auto stream = ds.Execute(DataContext{}).ValueOrDie();
  for (int i = 0; i < 5; ++i) ASSERT_NE(stream->Next().ValueOrDie(), nullptr);
  auto stats = stream->stats();
  EXPECT_FALSE(stats.finished);
  EXPECT_EQ(stats.operators.back().estimated_rows_out, 1000);
  while (stream->Next().ValueOrDie()) {
  }
  EXPECT_EQ(stream->stats().operators.back().estimated_rows_out, 1000);
  EXPECT_EQ(stream->stats().held_bytes, 0);
}

TEST(Stats, CountersMatchTheData) {
  // The map fuses into the read; the filter, asking for other resources, stays apart.
  MapBatchesOptions map = Named("MapBatches(a)");
  map.num_cpus = 0.5;
  auto ds = Dataset::Range(1000, 10).ValueOrDie()
                .MapBatches(Slow(std::chrono::milliseconds(1)), map)
                .Filter(cp::less(cp::field_ref("id"), cp::literal(int64_t{300})));
  ExecutionStats stats;
  (void)ds.Materialize(DataContext{}, &stats).ValueOrDie();
  ASSERT_EQ(stats.operators.size(), 2u);
  const auto& first = stats.operators[0];
  const auto& filter = stats.operators[1];
  EXPECT_NE(first.name.find("ReadRange->MapBatches(a)"), std::string::npos) << first.name;
  EXPECT_EQ(first.rows_out, 1000);
  EXPECT_EQ(first.tasks, 10);
  EXPECT_GE(first.udf_s, 0.009);  // ten calls sleeping 1 ms each
  EXPECT_GE(first.task_wall_s, first.udf_s);
  EXPECT_EQ(filter.rows_in, first.rows_out);
  EXPECT_EQ(filter.bytes_in, first.bytes_out);
  EXPECT_EQ(filter.rows_out, 300);
  EXPECT_EQ(filter.udf_s, 0);
  EXPECT_TRUE(stats.finished);
}

}  // namespace
}  // namespace millstream
