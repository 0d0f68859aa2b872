#include <atomic>
#include <chrono>
#include <thread>

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
