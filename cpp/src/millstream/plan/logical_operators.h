#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "exec/transform.h"
#include "io/datasource.h"
#include "millstream/udf.h"
#include "plan/logical_operator.h"
#include "shuffle/exchange.h"

namespace millstream {

/// \brief Produces the blocks of `source` (ReadParquet, ReadRange, FromArrow...).
class ReadOp : public LogicalOperator {
 public:
  ReadOp(std::shared_ptr<Datasource> source, std::optional<int64_t> override_num_blocks)
      : LogicalOperator({}), source(std::move(source)), override_num_blocks(override_num_blocks) {}
  std::string Name() const override { return source->name(); }
  std::optional<int64_t> RowsOut(const std::vector<std::optional<int64_t>>&) const override {
    return source->num_rows();
  }
  std::shared_ptr<arrow::Schema> SchemaOut(
      const std::vector<std::shared_ptr<arrow::Schema>>&) const override {
    return source->schema();
  }
  PlanPtr WithInputs(std::vector<PlanPtr>) const override {
    return std::make_shared<ReadOp>(*this);
  }
  static PlanPtr Make(std::shared_ptr<Datasource> source, std::optional<int64_t> num_blocks,
                      int concurrency = 0) {
    auto read = std::make_shared<ReadOp>(std::move(source), num_blocks);
    read->concurrency = concurrency;
    return read;
  }
  /// This read with another source (a pushdown's narrowed one), its other fields kept.
  PlanPtr WithSource(std::shared_ptr<Datasource> narrowed) const {
    auto copy = std::make_shared<ReadOp>(*this);
    copy->source = std::move(narrowed);
    return copy;
  }

  std::shared_ptr<Datasource> source;
  /// The number of read tasks the user asked for.
  std::optional<int64_t> override_num_blocks;
  /// The most read tasks running at once (Ray's `concurrency`); 0: no cap.
  int concurrency = 0;
};

/// \brief A map-like step — MapBatches, Map, FlatMap, Filter, Project, Write — run over
/// each block as tasks. What the step does is its transform (one class per kind, in
/// exec/); after fusion one MapOp runs several transforms, and may start with a read
/// (`source`: it reads, then transforms, one task each).
class MapOp : public LogicalOperator {
 public:
  explicit MapOp(PlanPtr input) : LogicalOperator(input ? std::vector<PlanPtr>{std::move(input)}
                                                        : std::vector<PlanPtr>{}) {}
  std::string Name() const override;
  bool RowPreserving() const override;
  std::optional<int64_t> RowsOut(const std::vector<std::optional<int64_t>>& inputs) const override;
  std::shared_ptr<arrow::Schema> SchemaOut(
      const std::vector<std::shared_ptr<arrow::Schema>>& inputs) const override;
  PlanPtr WithInputs(std::vector<PlanPtr> inputs) const override;
  /// A copy to edit, over `input` (null: none).
  std::shared_ptr<MapOp> CopyOver(PlanPtr input) const;
  static PlanPtr Make(PlanPtr input, std::shared_ptr<const Transform> transform,
                      ComputeStrategy compute = {}, double num_cpus = 1, double num_gpus = 0,
                      int64_t min_rows_per_bundle = 0, int64_t memory = 0);

  /// Set when a read was fused into this operator (it then has no inputs).
  std::shared_ptr<Datasource> source;
  std::optional<int64_t> override_num_blocks;
  std::vector<std::shared_ptr<const Transform>> transforms;
  ComputeStrategy compute;
  double num_cpus = 1;
  double num_gpus = 0;
  /// Bytes a running task holds beyond its blocks (see MapBatchesOptions::memory).
  int64_t memory = 0;
  /// Rows to bundle before launching a task (a map_batches batch_size), 0: one bundle.
  int64_t min_rows_per_bundle = 0;
  /// Each task gets an exact multiple of `min_rows_per_bundle` rows (blocks sliced at the
  /// cut, the rest left for the next task), but the last (a strict repartition to a row
  /// count). Never fused: its input must be blocks, as they come.
  bool exact_bundles = false;
};

/// \brief Keeps the first `limit` rows.
class LimitOp : public LogicalOperator {
 public:
  LimitOp(PlanPtr input, int64_t limit) : LogicalOperator({std::move(input)}), limit(limit) {}
  std::string Name() const override { return "Limit[" + std::to_string(limit) + "]"; }
  std::optional<int64_t> RowsOut(const std::vector<std::optional<int64_t>>& inputs) const override;
  std::shared_ptr<arrow::Schema> SchemaOut(
      const std::vector<std::shared_ptr<arrow::Schema>>& inputs) const override {
    return inputs[0];
  }
  PlanPtr WithInputs(std::vector<PlanPtr> inputs) const override {
    return std::make_shared<LimitOp>(std::move(inputs.at(0)), limit);
  }
  int64_t limit;
};

/// \brief The rows of every input, streamed as they come (in input order under
/// preserve_order: all of the first input, then the second...).
class UnionOp : public LogicalOperator {
 public:
  explicit UnionOp(std::vector<PlanPtr> inputs) : LogicalOperator(std::move(inputs)) {}
  std::string Name() const override { return "Union"; }
  std::optional<int64_t> RowsOut(const std::vector<std::optional<int64_t>>& inputs) const override;
  std::shared_ptr<arrow::Schema> SchemaOut(
      const std::vector<std::shared_ptr<arrow::Schema>>& inputs) const override;
  PlanPtr WithInputs(std::vector<PlanPtr> inputs) const override {
    return std::make_shared<UnionOp>(std::move(inputs));
  }
};

/// \brief The columns of every input side by side, row by row: row r of the output is
/// row r of each input (they must have as many rows; the execution fails naming both
/// counts if not). A column name already taken gets Ray's suffix: "id", "id_1", "id_2"...
class ZipOp : public LogicalOperator {
 public:
  explicit ZipOp(std::vector<PlanPtr> inputs) : LogicalOperator(std::move(inputs)) {}
  std::string Name() const override { return "Zip"; }
  std::optional<int64_t> RowsOut(const std::vector<std::optional<int64_t>>& inputs) const override;
  std::shared_ptr<arrow::Schema> SchemaOut(
      const std::vector<std::shared_ptr<arrow::Schema>>& inputs) const override;
  PlanPtr WithInputs(std::vector<PlanPtr> inputs) const override {
    return std::make_shared<ZipOp>(std::move(inputs));
  }
};

/// The schema of zipped blocks of `inputs`: their fields in order, a name already taken
/// renamed to the first free "name_1", "name_2"... (Ray's rule, input by input).
std::shared_ptr<arrow::Schema> ZipSchemas(const std::vector<std::shared_ptr<arrow::Schema>>& inputs);

/// \brief An operator that needs all of its input before its output is complete (sort,
/// shuffle, repartition): it runs as an exchange (shuffle/exchange.h) — a map stage over
/// the input blocks as they stream in, then a reduce stage.
class AllToAllOp : public LogicalOperator {
 public:
  explicit AllToAllOp(PlanPtr input) : LogicalOperator({std::move(input)}) {}
  std::optional<int64_t> RowsOut(const std::vector<std::optional<int64_t>>& inputs) const override {
    return inputs.at(0);
  }
  std::shared_ptr<arrow::Schema> SchemaOut(
      const std::vector<std::shared_ptr<arrow::Schema>>& inputs) const override {
    return inputs.at(0);
  }
};

/// \brief How a random operator seeds each execution (Ray's RandomSeedConfig): unset
/// seed: different every run; a seed: the same order every run, or — with
/// `reseed_after_execution` — a different but reproducible order per execution.
struct RandomSeed {
  explicit RandomSeed(RandomSeedConfig config = {})
      : seed(config.seed), reseed_after_execution(config.reseed_after_execution) {}
  std::optional<uint64_t> seed;
  bool reseed_after_execution = false;
  /// The seed of the next execution (counts executions when reseeding).
  std::optional<uint64_t> ForExecution() const;
  std::shared_ptr<std::atomic<uint64_t>> executions = std::make_shared<std::atomic<uint64_t>>(0);
};

/// \brief Rows sorted by `keys` (nulls last), stable; with `boundaries` (ascending,
/// distinct), the output split at those values of the first key.
class SortOp : public AllToAllOp {
 public:
  SortOp(PlanPtr input, std::vector<SortKey> keys, std::vector<SortBoundary> boundaries = {})
      : AllToAllOp(std::move(input)), keys(std::move(keys)), boundaries(std::move(boundaries)) {}
  std::string Name() const override;
  PlanPtr WithInputs(std::vector<PlanPtr> inputs) const override {
    return std::make_shared<SortOp>(std::move(inputs.at(0)), keys, boundaries);
  }
  std::vector<SortKey> keys;
  std::vector<SortBoundary> boundaries;
};

/// \brief A uniformly random permutation of the rows.
class RandomShuffleOp : public AllToAllOp {
 public:
  RandomShuffleOp(PlanPtr input, RandomSeed seed) : AllToAllOp(std::move(input)), seed(std::move(seed)) {}
  std::string Name() const override { return "RandomShuffle"; }
  PlanPtr WithInputs(std::vector<PlanPtr> inputs) const override {
    return std::make_shared<RandomShuffleOp>(std::move(inputs.at(0)), seed);
  }
  RandomSeed seed;
};

/// \brief The blocks in a random order, each unchanged.
class RandomizeBlockOrderOp : public AllToAllOp {
 public:
  RandomizeBlockOrderOp(PlanPtr input, RandomSeed seed) : AllToAllOp(std::move(input)), seed(std::move(seed)) {}
  std::string Name() const override { return "RandomizeBlockOrder"; }
  PlanPtr WithInputs(std::vector<PlanPtr> inputs) const override {
    return std::make_shared<RandomizeBlockOrderOp>(std::move(inputs.at(0)), seed);
  }
  RandomSeed seed;
};

/// \brief Exactly `num_blocks` blocks: split and combined in order, hashed by `keys`, or
/// shuffled.
class RepartitionOp : public AllToAllOp {
 public:
  RepartitionOp(PlanPtr input, int64_t num_blocks, bool shuffle, std::vector<std::string> keys,
                bool sort = false)
      : AllToAllOp(std::move(input)), num_blocks(num_blocks), shuffle(shuffle), keys(std::move(keys)),
        sort(sort) {}
  std::string Name() const override;
  PlanPtr WithInputs(std::vector<PlanPtr> inputs) const override {
    return std::make_shared<RepartitionOp>(std::move(inputs.at(0)), num_blocks, shuffle, keys, sort);
  }
  int64_t num_blocks;
  bool shuffle;
  std::vector<std::string> keys;
  bool sort;  // each block sorted by `keys`
};

/// \brief One row per group of `keys` (none: the whole dataset) with the `aggregates`, in
/// `num_partitions` reduce tasks (0: chosen from the data size). With a `filter` (a
/// filter of the input folded in by the optimizer), only the rows where it is true are
/// aggregated.
class AggregateOp : public AllToAllOp {
 public:
  AggregateOp(PlanPtr input, std::vector<std::string> keys, std::vector<AggregateSpec> aggregates,
              int64_t num_partitions = 0, std::optional<arrow::compute::Expression> filter = std::nullopt,
              bool input_is_partial = false)
      : AllToAllOp(std::move(input)), keys(std::move(keys)), aggregates(std::move(aggregates)),
        num_partitions(num_partitions), filter(std::move(filter)), input_is_partial(input_is_partial) {}
  /// "Aggregate[k1, k2; count(), sum(x)]", with a filter "...; filter=(x > 1)]", over
  /// partial rows "...; of partials]".
  std::string Name() const override {
    return std::string("Aggregate[") + Description(keys, aggregates, filter) +
           (input_is_partial ? "; of partials" : "") + "]";
  }
  /// "k1, k2; count(), sum(x)" and "; filter=(x > 1)" with a filter.
  static std::string Description(const std::vector<std::string>& keys, const std::vector<AggregateSpec>& aggregates,
                                 const std::optional<arrow::compute::Expression>& filter) {
    std::string out;
    for (size_t i = 0; i < keys.size(); ++i) out += (i ? ", " : "") + keys[i];
    if (!keys.empty()) out += "; ";
    for (size_t i = 0; i < aggregates.size(); ++i) out += (i ? ", " : "") + aggregates[i].name;
    if (filter) out += "; filter=" + filter->ToString();
    return out;
  }
  std::optional<int64_t> RowsOut(const std::vector<std::optional<int64_t>>&) const override {
    return std::nullopt;
  }
  std::shared_ptr<arrow::Schema> SchemaOut(
      const std::vector<std::shared_ptr<arrow::Schema>>&) const override {
    return nullptr;
  }
  PlanPtr WithInputs(std::vector<PlanPtr> inputs) const override {
    return std::make_shared<AggregateOp>(std::move(inputs.at(0)), keys, aggregates, num_partitions, filter,
                                         input_is_partial);
  }
  std::vector<std::string> keys;
  std::vector<AggregateSpec> aggregates;
  int64_t num_partitions = 0;
  std::optional<arrow::compute::Expression> filter;
  /// The input is the partial rows of these keys and aggregates (see
  /// MakePartialAggregation), made by a step the optimizer put at the end of the map
  /// before it; `filter` is then that step's.
  bool input_is_partial = false;
};

/// \brief The rows of two inputs (0 left, 1 right) joined on keys (see Dataset::Join):
/// a two-input exchange that hash-partitions both sides by key and joins each partition.
class JoinOp : public LogicalOperator {
 public:
  JoinOp(PlanPtr left, PlanPtr right, JoinSpec spec)
      : LogicalOperator({std::move(left), std::move(right)}), spec(std::move(spec)) {}
  /// "Join[inner; id = id; build=smaller side per partition (est. right)]".
  std::string Name() const override;
  std::shared_ptr<arrow::Schema> SchemaOut(
      const std::vector<std::shared_ptr<arrow::Schema>>& inputs) const override;
  PlanPtr WithInputs(std::vector<PlanPtr> inputs) const override {
    return std::make_shared<JoinOp>(std::move(inputs.at(0)), std::move(inputs.at(1)), spec);
  }
  /// Right keys filled in (ValidateJoin).
  JoinSpec spec;
};

}  // namespace millstream
