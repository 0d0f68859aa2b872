#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <arrow/compute/expression.h>

#include "exec/transform.h"
#include "millstream/dataset.h"
#include "millstream/udf.h"

namespace millstream {

class PartialAggregation;

/// A user function over batches of `options.batch_size` rows (whole blocks if unset).
std::shared_ptr<const Transform> MakeUdfTransform(BatchUdfFactory factory,
                                                  const MapBatchesOptions& options);

/// `first` then `second` as one step when both are task-pool UDF transforms and
/// `second` takes whole batches (no batch_size of its own): their instances are joined
/// with `BatchUdf::Then`, so a block makes one trip through both (for Python, one GIL
/// acquisition and one conversion in and out). Null when they cannot be joined. The
/// step's name is both names joined by "->", as the fused operator's name shows them.
std::shared_ptr<const Transform> FuseUdfTransforms(const Transform& first, const Transform& second);

/// Keeps rows where `predicate` is true; the expression is bound to each block's schema.
std::shared_ptr<const Transform> MakeFilterTransform(arrow::compute::Expression predicate);

/// Keeps each row with probability `fraction` (a Bernoulli sample, order kept). With a
/// seed, the draws of block k of task i come from a generator seeded by (the execution's
/// seed, i, k), so a seeded sample is the same on every run whatever the timing.
std::shared_ptr<const Transform> MakeRandomSampleTransform(double fraction, RandomSeedConfig seed);

/// Cuts each task's rows into blocks of exactly `rows` rows, the rest of the task in one
/// smaller block (repartition(target_num_rows_per_block=rows)); a run within one input
/// block is a zero-copy slice, one across blocks is concatenated.
std::shared_ptr<const Transform> MakeRebatchTransform(int64_t rows);

/// Turns each block into its partial aggregation (one row per group, see
/// MakePartialAggregation): the map side of a group-by, run in the tasks that make the
/// rows. `name` is shown in plans ("PartialAggregate[k; sum(x)]").
std::shared_ptr<const Transform> MakePartialAggregateTransform(std::shared_ptr<const PartialAggregation> aggregation,
                                                               std::string name);

/// The predicate of a transform made by MakeFilterTransform; null for any other.
const arrow::compute::Expression* FilterPredicate(const Transform& transform);

/// \brief Selects columns (all if `select` is unset), then renames some of them.
class ProjectTransform : public Transform {
 public:
  ProjectTransform(std::optional<std::vector<std::string>> select,
                   std::map<std::string, std::string> renames);
  std::string name() const override;
  bool row_preserving() const override { return true; }
  bool output_sized_by_input() const override { return true; }
  arrow::Result<std::unique_ptr<TransformState>> MakeState(const TaskContext&) const override;
  arrow::Result<std::shared_ptr<arrow::Schema>> SchemaOut(
      const std::shared_ptr<arrow::Schema>& input) const override {
    return Apply(*input);
  }
  /// Applies the projection to one block or schema.
  arrow::Result<Block> Apply(const Block& block) const;
  arrow::Result<std::shared_ptr<arrow::Schema>> Apply(const arrow::Schema& schema) const;

  const std::optional<std::vector<std::string>>& select() const { return select_; }
  const std::map<std::string, std::string>& renames() const { return renames_; }

 private:
  std::optional<std::vector<std::string>> select_;
  std::map<std::string, std::string> renames_;
};

/// Writes every block it gets into one file per task under `directory` (with
/// `options.partition_cols`, one per task and `key=value/...` directory, Hive style; with
/// `options.max_rows_per_file`, as many files as that takes), each committed by a rename
/// when complete. Emits nothing.
std::shared_ptr<const Transform> MakeWriteTransform(std::string directory, FileFormat format,
                                                    std::string write_id, WriteOptions options = {});

/// The file name extension of a format, e.g. "parquet".
std::string FormatExtension(FileFormat format);

}  // namespace millstream
