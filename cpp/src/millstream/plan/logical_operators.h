#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "exec/transform.h"
#include "io/datasource.h"
#include "millstream/udf.h"
#include "plan/logical_operator.h"

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
  static PlanPtr Make(std::shared_ptr<Datasource> source, std::optional<int64_t> num_blocks) {
    return std::make_shared<ReadOp>(std::move(source), num_blocks);
  }

  std::shared_ptr<Datasource> source;
  /// The number of read tasks the user asked for.
  std::optional<int64_t> override_num_blocks;
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

}  // namespace millstream
