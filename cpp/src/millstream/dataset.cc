#include "millstream/dataset.h"

#include <algorithm>
#include <iomanip>
#include <random>
#include <sstream>

#include <arrow/api.h>
#include <arrow/filesystem/api.h>

#include "exec/schema_unify.h"
#include "exec/streaming_executor.h"
#include "exec/transforms.h"
#include "exec/with_column_transform.h"
#include "io/sources.h"
#include "optimizer/optimizer.h"
#include "plan/logical_operators.h"
#include "planner/planner.h"
#include "shuffle/aggregate.h"
#include "shuffle/hash_join.h"
#include "shuffle/sort_boundaries.h"

namespace millstream {

namespace {

/// The schema the plan produces, when no step with an unknown output (a UDF) is in the way.
std::shared_ptr<arrow::Schema> StaticSchema(const PlanPtr& plan) { return PlanSchema(plan); }

std::string RandomId() {
  std::random_device device;
  std::mt19937_64 rng(device());
  std::ostringstream out;
  out << std::hex << std::setw(16) << std::setfill('0') << rng();
  return out.str().substr(0, 12);
}

/// A call that collects every row returns them in input order: the executor hands each
/// operator's output on in task order (held blocks cost memory only until the earlier
/// task finishes; the collector keeps every block anyway).
DataContext Collecting(const DataContext& context) {
  DataContext ordered = context;
  ordered.execution_options.preserve_order = true;
  return ordered;
}

/// Every remaining block of `stream`.
arrow::Result<std::vector<Block>> ReadAll(BlockStream& stream) {
  std::vector<Block> blocks;
  while (true) {
    ARROW_ASSIGN_OR_RAISE(auto block, stream.Next());
    if (!block) return blocks;
    blocks.push_back(std::move(block));
  }
}

std::string FormatBytes(int64_t bytes) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(1);
  if (bytes >= (1LL << 30)) out << bytes / double(1LL << 30) << " GiB";
  else if (bytes >= (1LL << 20)) out << bytes / double(1LL << 20) << " MiB";
  else if (bytes >= (1LL << 10)) out << bytes / double(1LL << 10) << " KiB";
  else out << bytes << " B";
  return out.str();
}

}  // namespace

// ---- BlockStream / BatchIterator ------------------------------------------------------

BlockStream::BlockStream(std::unique_ptr<Execution> execution) : execution_(std::move(execution)) {}
BlockStream::~BlockStream() = default;

arrow::Result<Block> BlockStream::Next() {
  return execution_->Next(std::chrono::milliseconds(-1), nullptr);
}
arrow::Result<Block> BlockStream::NextFor(std::chrono::milliseconds timeout, bool* timed_out) {
  return execution_->Next(timeout, timed_out);
}
void BlockStream::Cancel() { execution_->Cancel(); }
bool BlockStream::WaitForTasks(std::chrono::milliseconds timeout) {
  return execution_->WaitForTasks(timeout);
}
ExecutionStats BlockStream::stats() const { return execution_->stats(); }
int64_t BlockStream::accounted_bytes() const { return execution_->accounted_bytes(); }

BatchIterator::BatchIterator(std::unique_ptr<BlockStream> stream,
                             std::optional<int64_t> batch_size, bool drop_last,
                             bool keep_empty_blocks)
    : stream_(std::move(stream)), batch_size_(batch_size), drop_last_(drop_last),
      keep_empty_blocks_(keep_empty_blocks) {}

arrow::Result<Block> BatchIterator::Next() {
  bool timed_out = false;
  return NextFor(std::chrono::milliseconds(-1), &timed_out);
}

arrow::Result<Block> BatchIterator::NextFor(std::chrono::milliseconds timeout, bool* timed_out) {
  *timed_out = false;
  while (true) {
    if (!batch_size_) {
      if (exhausted_) return nullptr;
      ARROW_ASSIGN_OR_RAISE(auto block, stream_->NextFor(timeout, timed_out));
      if (*timed_out) return nullptr;
      if (!block) {
        exhausted_ = true;
        return nullptr;
      }
      if (block->num_rows() == 0 && !keep_empty_blocks_) continue;
      return block;
    }
    if (pending_rows_ >= *batch_size_ || (exhausted_ && pending_rows_ > 0)) {
      // Cut one batch from the front of the pending blocks.
      int64_t want = std::min(*batch_size_, pending_rows_);
      if (exhausted_ && want < *batch_size_ && drop_last_) {
        pending_.clear();
        pending_rows_ = 0;
        return nullptr;
      }
      std::vector<Block> parts;
      int64_t have = 0;
      while (have < want) {
        Block& front = pending_.front();
        int64_t take = std::min(want - have, front->num_rows());
        parts.push_back(front->Slice(0, take));
        have += take;
        if (take == front->num_rows()) {
          pending_.erase(pending_.begin());
        } else {
          front = front->Slice(take);
        }
      }
      pending_rows_ -= want;
      // Blocks from different tasks may differ in columns or types: unified here.
      return ConcatenateBlocks(std::move(parts));
    }
    if (exhausted_) return nullptr;
    ARROW_ASSIGN_OR_RAISE(auto block, stream_->NextFor(timeout, timed_out));
    if (*timed_out) return nullptr;
    if (!block) {
      exhausted_ = true;
      continue;
    }
    if (block->num_rows() == 0) continue;
    pending_rows_ += block->num_rows();
    pending_.push_back(std::move(block));
  }
}

// ---- Stats ------------------------------------------------------------------------------

std::string ExecutionStats::ToString() const {
  std::ostringstream out;
  out << std::fixed << std::setprecision(3);
  for (size_t i = 0; i < operators.size(); ++i) {
    const auto& op = operators[i];
    out << "Operator " << i << " " << op.name << ": " << op.tasks << " tasks, "
        << op.blocks_out << " blocks produced\n"
        << "* Rows in: " << op.rows_in << ", rows out: " << op.rows_out << "\n"
        << "* Blocks in: " << op.blocks_in << ", bytes in: " << FormatBytes(op.bytes_in)
        << ", bytes out: " << FormatBytes(op.bytes_out) << "\n"
        << "* Task wall time (sum): " << op.task_wall_s << " s, CPU time: " << op.cpu_s
        << " s, in UDFs: " << op.udf_s << " s\n"
        << "* Held back by backpressure: " << op.backpressure_s << " s\n"
        << "* Peak memory held: " << FormatBytes(op.peak_bytes) << "\n";
    if (op.peak_actors > 0) {
      out << "* Actors: peak " << op.peak_actors << ", constructed " << op.actors_started << "\n";
    }
    if (op.spilled_bytes > 0) {
      out << "* Spilled: " << op.spilled_bytes << " bytes (" << FormatBytes(op.spilled_bytes)
          << ")\n";
    }
    if (op.regrouped_partitions > 0 || op.streamed_partitions > 0 || op.chunked_partitions > 0) {
      out << "* Grace hash join: " << op.regrouped_partitions
          << " partitions re-partitioned past the reduce memory share, " << op.streamed_partitions
          << " joined with the larger side streamed in chunks, " << op.chunked_partitions
          << " joined in chunks of both sides (block nested loops)\n";
    }
    if (op.errored_tasks > 0) {
      out << "* Failed tasks tolerated (max_errored_blocks): " << op.errored_tasks << "\n";
    }
    out << "\n";
  }
  int64_t rows = operators.empty() ? 0 : operators.back().rows_out;
  double cpu = 0, udf = 0;
  for (const auto& op : operators) {
    cpu += op.cpu_s;
    udf += op.udf_s;
  }
  out << "Dataset: " << rows << " rows out, " << (finished ? "finished" : "running") << " in " << wall_s
      << " s (" << (wall_s > 0 ? rows / wall_s : 0) << " rows/s), CPU " << cpu << " s, UDFs " << udf
      << " s, peak "
      << FormatBytes(peak_bytes) << " of blocks held (limit " << FormatBytes(memory_limit) << ")\n";
  return out.str();
}

// ---- Dataset ----------------------------------------------------------------------------

arrow::Result<Dataset> Dataset::Range(int64_t n, std::optional<int64_t> override_num_blocks) {
  if (n < 0) return arrow::Status::Invalid("range: n must be >= 0, got ", n);
  if (override_num_blocks && *override_num_blocks <= 0) {
    return arrow::Status::Invalid("override_num_blocks must be positive, got ", *override_num_blocks);
  }
  return Dataset(ReadOp::Make(MakeRangeSource(n), override_num_blocks.value_or(200)));
}

arrow::Result<Dataset> Dataset::FromArrow(std::shared_ptr<arrow::Table> table,
                                          std::optional<int64_t> override_num_blocks) {
  if (override_num_blocks && *override_num_blocks <= 0) {
    return arrow::Status::Invalid("override_num_blocks must be positive, got ", *override_num_blocks);
  }
  std::vector<Block> blocks;
  arrow::TableBatchReader reader(*table);
  std::shared_ptr<arrow::RecordBatch> batch;
  while (true) {
    ARROW_RETURN_NOT_OK(reader.ReadNext(&batch));
    if (!batch) break;
    blocks.push_back(batch);
  }
  if (blocks.empty()) {
    ARROW_ASSIGN_OR_RAISE(auto empty, arrow::RecordBatch::MakeEmpty(table->schema()));
    blocks.push_back(std::move(empty));
  }
  return Dataset(ReadOp::Make(
      MakeBlocksSource(std::move(blocks), table->schema(), "FromArrow"), override_num_blocks));
}

arrow::Result<Dataset> Dataset::FromBlocks(std::vector<Block> blocks,
                                           std::shared_ptr<arrow::Schema> schema) {
  if (!schema) return arrow::Status::Invalid("FromBlocks: no schema given");
  for (const auto& block : blocks) {
    if (!block) return arrow::Status::Invalid("FromBlocks: a block is null");
  }
  if (blocks.empty()) {
    ARROW_ASSIGN_OR_RAISE(auto empty, arrow::RecordBatch::MakeEmpty(schema));
    blocks.push_back(std::move(empty));
  }
  return Dataset(ReadOp::Make(MakeBlocksSource(std::move(blocks), schema, "FromArrow"), std::nullopt));
}

arrow::Result<Dataset> Dataset::ReadParquet(std::vector<std::string> paths,
                                            ReadParquetOptions options) {
  if (options.override_num_blocks && *options.override_num_blocks <= 0) {
    return arrow::Status::Invalid("override_num_blocks must be positive, got ",
                                  *options.override_num_blocks);
  }
  ARROW_ASSIGN_OR_RAISE(auto source, MakeParquetSource(paths, options));
  return Dataset(ReadOp::Make(std::move(source), options.override_num_blocks));
}

arrow::Result<Dataset> Dataset::FromSource(std::shared_ptr<Datasource> source,
                                           std::optional<int64_t> override_num_blocks,
                                           int concurrency) {
  if (concurrency < 0) return arrow::Status::Invalid("concurrency must be >= 1, got ", concurrency);
  if (override_num_blocks && *override_num_blocks <= 0) {
    return arrow::Status::Invalid("override_num_blocks must be positive, got ", *override_num_blocks);
  }
  if (!source) return arrow::Status::Invalid("FromSource: no source given");
  return Dataset(ReadOp::Make(std::move(source), override_num_blocks, concurrency));
}

Dataset Dataset::MapBatches(BatchUdfFactory udf, MapBatchesOptions options) const {
  auto transform = MakeUdfTransform(std::move(udf), options);
  return Dataset(MapOp::Make(plan_, std::move(transform), options.compute, options.num_cpus,
                             options.num_gpus, options.batch_size.value_or(0), options.memory));
}

Dataset Dataset::Filter(arrow::compute::Expression predicate) const {
  return Dataset(MapOp::Make(plan_, MakeFilterTransform(std::move(predicate))));
}

Dataset Dataset::WithColumn(std::string name, arrow::compute::Expression expr) const {
  return Dataset(
      MapOp::Make(plan_, MakeWithColumnTransform(std::move(name), std::move(expr))));
}

arrow::Result<Dataset> Dataset::SelectColumns(std::vector<std::string> columns) const {
  auto project = std::make_shared<ProjectTransform>(std::move(columns),
                                                    std::map<std::string, std::string>{});
  if (auto schema = StaticSchema(plan_)) ARROW_RETURN_NOT_OK(project->Apply(*schema).status());
  return Dataset(MapOp::Make(plan_, std::move(project)));
}

arrow::Result<Dataset> Dataset::DropColumns(std::vector<std::string> columns) const {
  auto schema = StaticSchema(plan_);
  if (!schema) {
    return arrow::Status::NotImplemented(
        "drop_columns needs the schema; it is unknown after a UDF until execution");
  }
  std::vector<std::string> keep;
  for (const auto& column : columns) {
    if (schema->GetFieldIndex(column) < 0) {
      return arrow::Status::KeyError("drop_columns: column '", column, "' not found; the columns are: ",
                                     schema->ToString());
    }
  }
  for (const auto& name : schema->field_names()) {
    if (std::find(columns.begin(), columns.end(), name) == columns.end()) keep.push_back(name);
  }
  return SelectColumns(std::move(keep));
}

arrow::Result<Dataset> Dataset::RenameColumns(std::map<std::string, std::string> renames) const {
  auto project = std::make_shared<ProjectTransform>(std::nullopt, std::move(renames));
  if (auto schema = StaticSchema(plan_)) ARROW_RETURN_NOT_OK(project->Apply(*schema).status());
  return Dataset(MapOp::Make(plan_, std::move(project)));
}

Dataset Dataset::Limit(int64_t n) const {
  return Dataset(std::make_shared<LimitOp>(plan_, std::max<int64_t>(0, n)));
}

arrow::Result<std::unique_ptr<BlockStream>> Dataset::Execute(const DataContext& context) const {
  ARROW_RETURN_NOT_OK(Initialize());
  ARROW_ASSIGN_OR_RAISE(auto optimized, Optimize(plan_));
  ARROW_ASSIGN_OR_RAISE(auto physical, PlanPhysical(optimized, context));
  ARROW_ASSIGN_OR_RAISE(auto execution, Execution::Start(std::move(physical), context));
  return std::unique_ptr<BlockStream>(new BlockStream(std::move(execution)));
}

arrow::Result<std::shared_ptr<arrow::Table>> Dataset::ToTable(const DataContext& context) const {
  ARROW_ASSIGN_OR_RAISE(auto stream, Execute(Collecting(context)));
  ARROW_ASSIGN_OR_RAISE(auto blocks, ReadAll(*stream));
  if (blocks.empty()) {
    ARROW_ASSIGN_OR_RAISE(auto schema, Schema(context));
    if (!schema) schema = arrow::schema({});
    return arrow::Table::MakeEmpty(schema);
  }
  ARROW_ASSIGN_OR_RAISE(blocks, UnifyBlocks(std::move(blocks)));
  return arrow::Table::FromRecordBatches(blocks.front()->schema(), blocks);
}

std::optional<int64_t> Dataset::CountFromMetadata() const { return PlanRows(plan_); }

namespace {

bool NoBlocks(const PlanPtr& node) {
  if (const auto* read = node->As<ReadOp>()) {
    if (auto blocks = read->source->num_blocks()) return *blocks == 0;
    return read->source->num_rows() == 0;
  }
  const auto& inputs = node->inputs();
  if (inputs.empty() || (inputs.size() > 1 && !node->As<UnionOp>())) return false;
  return std::all_of(inputs.begin(), inputs.end(), NoBlocks);
}

}  // namespace

bool Dataset::KnownToHaveNoBlocks() const { return NoBlocks(plan_); }

namespace {

void CollectInputFiles(const PlanPtr& node, std::vector<std::string>& files) {
  for (const auto& input : node->inputs()) CollectInputFiles(input, files);
  std::shared_ptr<Datasource> source;
  if (const auto* read = node->As<ReadOp>()) source = read->source;
  if (const auto* map = node->As<MapOp>()) source = map->source;
  if (!source) return;
  for (auto& path : source->input_files()) {
    if (std::find(files.begin(), files.end(), path) == files.end()) files.push_back(std::move(path));
  }
}

}  // namespace

std::vector<std::string> Dataset::InputFiles() const {
  std::vector<std::string> files;
  CollectInputFiles(plan_, files);
  return files;
}

std::shared_ptr<arrow::Schema> Dataset::KnownSchema() const { return StaticSchema(plan_); }

arrow::Result<int64_t> Dataset::Count(const DataContext& context) const {
  if (auto rows = CountFromMetadata()) return *rows;
  ARROW_ASSIGN_OR_RAISE(auto stream, Execute(context));
  int64_t count = 0;
  while (true) {
    ARROW_ASSIGN_OR_RAISE(auto block, stream->Next());
    if (!block) break;
    count += block->num_rows();
  }
  return count;
}

arrow::Result<std::shared_ptr<arrow::Schema>> Dataset::Schema(const DataContext& context) const {
  if (auto schema = StaticSchema(plan_)) return schema;
  ARROW_ASSIGN_OR_RAISE(auto stream, Limit(1).Execute(context));
  std::shared_ptr<arrow::Schema> schema;
  while (true) {
    ARROW_ASSIGN_OR_RAISE(auto block, stream->Next());
    if (!block) break;
    if (!schema) schema = block->schema();
  }
  return schema;
}

arrow::Result<Dataset> Dataset::Materialize(const DataContext& context,
                                            ExecutionStats* stats) const {
  ARROW_ASSIGN_OR_RAISE(auto stream, Execute(Collecting(context)));
  ARROW_ASSIGN_OR_RAISE(auto blocks, ReadAll(*stream));
  if (stats) *stats = stream->stats();
  std::shared_ptr<arrow::Schema> schema;
  if (!blocks.empty()) {
    ARROW_ASSIGN_OR_RAISE(blocks, UnifyBlocks(std::move(blocks)));
    schema = blocks.front()->schema();
  } else {
    schema = StaticSchema(plan_);
    if (!schema) schema = arrow::schema({});
    ARROW_ASSIGN_OR_RAISE(auto empty, arrow::RecordBatch::MakeEmpty(schema));
    blocks.push_back(std::move(empty));
  }
  return Dataset(ReadOp::Make(MakeBlocksSource(std::move(blocks), schema, "InputData"),
                                           std::nullopt));
}

Dataset Dataset::WithWrite(const std::string& directory, FileFormat format,
                           std::vector<std::string> partition_cols) const {
  WriteOptions options;
  options.partition_cols = std::move(partition_cols);
  return WithWrite(directory, format, std::move(options));
}

Dataset Dataset::WithWrite(const std::string& directory, FileFormat format,
                           WriteOptions options) const {
  int64_t min_rows = options.min_rows_per_file;
  auto compute = ComputeStrategy::Tasks(options.concurrency);
  return Dataset(MapOp::Make(
      plan_, MakeWriteTransform(directory, format, RandomId(), std::move(options)),
      compute, /*num_cpus=*/1, /*num_gpus=*/0, /*min_rows_per_bundle=*/min_rows));
}

arrow::Status Dataset::Write(const std::string& directory, FileFormat format,
                             const DataContext& context, ExecutionStats* stats) const {
  return Write(directory, format, WriteOptions{}, SaveMode::kAppend, context, stats);
}

arrow::Status Dataset::Write(const std::string& directory, FileFormat format, WriteOptions options,
                             SaveMode mode, const DataContext& context,
                             ExecutionStats* stats) const {
  ARROW_ASSIGN_OR_RAISE(auto given, LocalPath(directory, "Write"));
  std::string local = AbsoluteLocalPath(given);
  ARROW_RETURN_NOT_OK(ValidateWriteOptions(format, options));
  ARROW_ASSIGN_OR_RAISE(bool write, PrepareWriteDirectory(local, mode, "Write"));
  if (!write) return arrow::Status::OK();
  ARROW_ASSIGN_OR_RAISE(auto stream, WithWrite(local, format, std::move(options)).Execute(context));
  while (true) {
    ARROW_ASSIGN_OR_RAISE(auto block, stream->Next());
    if (!block) break;
  }
  if (stats) *stats = stream->stats();
  return arrow::Status::OK();
}

std::string Dataset::Explain(const DataContext& context) const {
  std::string out = "-------- Logical Plan --------\n" + FormatPlan(plan_);
  auto optimized = Optimize(plan_);
  if (!optimized.ok()) return out + "(optimizer failed: " + optimized.status().ToString() + ")\n";
  out += "-------- Logical Plan (Optimized) --------\n" + FormatPlan(*optimized);
  auto physical = PlanPhysical(*optimized, context);
  out += "-------- Physical Plan --------\n";
  out += physical.ok() ? physical->ToString() : physical.status().ToString() + "\n";
  return out;
}

std::string Dataset::ToString() const {
  std::string out;
  for (const auto& op : PlanChain(plan_)) out += (out.empty() ? "" : " -> ") + op->Name();
  return out;
}

arrow::Result<Dataset> Dataset::GroupByAggregate(std::vector<std::string> keys,
                                                 std::vector<AggregateSpec> aggregates,
                                                 int64_t num_partitions) const {
  ARROW_RETURN_NOT_OK(ValidateAggregates(keys, aggregates));
  if (num_partitions < 0) {
    return arrow::Status::Invalid("groupby: num_partitions must be a positive integer, got ", num_partitions);
  }
  std::vector<SortKey> order;
  for (const auto& key : keys) order.push_back({key, false});
  PlanPtr plan = std::make_shared<AggregateOp>(plan_, keys, std::move(aggregates), num_partitions);
  if (!order.empty()) plan = std::make_shared<SortOp>(std::move(plan), std::move(order));
  return Dataset(std::move(plan));
}

Dataset Dataset::Sort(std::vector<SortKey> keys) const {
  return Dataset(std::make_shared<SortOp>(plan_, std::move(keys)));
}

arrow::Result<Dataset> Dataset::Sort(std::vector<SortKey> keys,
                                     std::vector<SortBoundary> boundaries) const {
  ARROW_ASSIGN_OR_RAISE(boundaries, NormalizeSortBoundaries(std::move(boundaries)));
  return Dataset(std::make_shared<SortOp>(plan_, std::move(keys), std::move(boundaries)));
}

Dataset Dataset::RandomShuffle(RandomSeedConfig seed) const {
  return Dataset(std::make_shared<RandomShuffleOp>(plan_, RandomSeed(seed)));
}

Dataset Dataset::RandomizeBlockOrder(RandomSeedConfig seed) const {
  return Dataset(std::make_shared<RandomizeBlockOrderOp>(plan_, RandomSeed(seed)));
}

arrow::Result<Dataset> Dataset::Repartition(int64_t num_blocks, bool shuffle,
                                            std::vector<std::string> keys, bool sort) const {
  if (num_blocks < 0 || (num_blocks == 0 && keys.empty())) {
    return arrow::Status::Invalid("repartition: num_blocks must be positive, got ", num_blocks);
  }
  if (sort && keys.empty()) {
    return arrow::Status::Invalid("repartition: sort=True sorts each output block by the keys; pass keys");
  }
  return Dataset(std::make_shared<RepartitionOp>(plan_, num_blocks, shuffle, std::move(keys), sort));
}

arrow::Result<Dataset> Dataset::RepartitionRows(int64_t target_rows, bool strict) const {
  if (target_rows <= 0) {
    return arrow::Status::Invalid("repartition: target_num_rows_per_block must be positive, got ",
                                  target_rows);
  }
  auto op = std::make_shared<MapOp>(plan_);
  op->transforms.push_back(MakeRebatchTransform(target_rows));
  op->min_rows_per_bundle = target_rows;
  op->exact_bundles = strict;
  return Dataset(PlanPtr(op));
}

Dataset Dataset::Zip(const std::vector<Dataset>& others) const {
  if (others.empty()) return *this;
  std::vector<PlanPtr> inputs{plan_};
  for (const auto& other : others) inputs.push_back(other.plan_);
  return Dataset(std::make_shared<ZipOp>(std::move(inputs)));
}

arrow::Result<Dataset> Dataset::RandomSample(double fraction, RandomSeedConfig seed) const {
  if (!(fraction >= 0 && fraction <= 1)) {
    return arrow::Status::Invalid("Fraction must be between 0 and 1.");
  }
  return Dataset(MapOp::Make(plan_, MakeRandomSampleTransform(fraction, seed)));
}

arrow::Result<Dataset> Dataset::Join(const Dataset& right, JoinSpec spec) const {
  ARROW_RETURN_NOT_OK(ValidateJoin(spec, PlanSchema(plan_), PlanSchema(right.plan_)));
  return Dataset(std::make_shared<JoinOp>(plan_, right.plan_, std::move(spec)));
}

Dataset Dataset::Union(const std::vector<Dataset>& others) const {
  std::vector<PlanPtr> inputs{plan_};
  for (const auto& other : others) inputs.push_back(other.plan_);
  return Dataset(std::make_shared<UnionOp>(std::move(inputs)));
}

}  // namespace millstream
