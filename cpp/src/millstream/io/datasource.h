#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <arrow/compute/expression.h>
#include <arrow/result.h>
#include <arrow/type_fwd.h>

#include "millstream/block.h"

namespace millstream {

using Emit = std::function<arrow::Status(Block)>;

/// \brief One unit of reading: a file, some row groups of a file, a range of integers.
/// Immutable; Run may be called from any thread.
class ReadTask {
 public:
  virtual ~ReadTask() = default;
  /// Produces the task's blocks, in order, through `emit`; stops at the first error.
  virtual arrow::Status Run(const Emit& emit) const = 0;
  /// Expected rows and in-memory bytes (from metadata), for budgets and progress.
  virtual int64_t estimated_rows() const = 0;
  virtual int64_t estimated_bytes() const = 0;
  /// `estimated_bytes` bounds the decoded data within a small factor: it comes from
  /// metadata about the decoded data (Parquet's uncompressed sizes, a range's row count)
  /// or is the size of an uncompressed text or binary file, not the size of a compressed
  /// file or an image, which its decoded data may exceed many times.
  virtual bool sized_by_metadata() const { return false; }
};

/// \brief Several small reads (many small files) run one after the other as one task.
std::shared_ptr<ReadTask> MakeGroupedReadTask(std::vector<std::shared_ptr<ReadTask>> parts);

/// \brief How a source should split its read.
struct ReadTaskOptions {
  /// Tasks the user asked for (override_num_blocks); 0: the source decides.
  int64_t parallelism = 0;
  /// When the source decides: small pieces are grouped, but never into fewer tasks than
  /// this (DataContext::read_op_min_num_blocks).
  int64_t min_tasks = 200;
  int64_t target_max_block_size = 128LL << 20;
  /// The plan needs at most this many rows (a limit right after the read); a source may
  /// plan a smaller read. Unset: every row.
  std::optional<int64_t> row_limit;
};

/// \brief Where a Read operator's data comes from.
class Datasource {
 public:
  virtual ~Datasource() = default;
  /// The operator name in plans: "ReadParquet", "Range", "FromArrow".
  virtual std::string name() const = 0;
  /// Splits the read into tasks (see ReadTaskOptions).
  virtual arrow::Result<std::vector<std::shared_ptr<ReadTask>>> GetReadTasks(
      const ReadTaskOptions& options) const = 0;
  /// Rows the source will produce, if known without reading data.
  virtual std::optional<int64_t> num_rows() const = 0;
  /// The output schema, if known without reading data.
  virtual std::shared_ptr<arrow::Schema> schema() const = 0;
  /// How many blocks the source holds in memory (a from_* or materialized dataset, empty
  /// blocks included); unset for a source that makes its blocks as it reads.
  virtual std::optional<int64_t> num_blocks() const { return std::nullopt; }
  /// The files this source reads (in listing order), or none if it reads no files.
  virtual std::vector<std::string> input_files() const { return {}; }
  /// A copy reading only `columns`, or nullptr if this source cannot push a projection.
  virtual arrow::Result<std::shared_ptr<Datasource>> WithColumns(
      const std::vector<std::string>& columns) const {
    return nullptr;
  }
  /// A copy producing the string or binary `columns` as dictionary arrays (same values,
  /// type dictionary<int32, value>), which is cheap where the files store them
  /// dictionary-encoded; nullptr if this source cannot. Values, not types, are what a
  /// consumer may rely on: the optimizer asks this only for group-by keys.
  virtual arrow::Result<std::shared_ptr<Datasource>> WithDictionaryColumns(
      const std::vector<std::string>& columns) const {
    return nullptr;
  }
  /// A copy producing only the rows where `predicate` is true (and pruning what it
  /// can, such as row groups by statistics), or nullptr if this source cannot take it.
  virtual arrow::Result<std::shared_ptr<Datasource>> WithFilter(
      const arrow::compute::Expression& predicate) const {
    return nullptr;
  }
  /// A row filter taken out of a source for the operator after the read to apply.
  struct DeferredFilter {
    /// The source producing every row of what the filter does not prune (row groups,
    /// files ruled out by statistics are still skipped), with the filter's columns.
    std::shared_ptr<Datasource> source;
    arrow::compute::Expression predicate;
  };
  /// The filter pushed into this source, for an operator that applies it without copying
  /// the rows it drops (the partial aggregation); nullopt if the source has none or must
  /// filter rows itself (its output numbers the rows it keeps, or leaves out a column
  /// the filter reads).
  virtual arrow::Result<std::optional<DeferredFilter>> WithoutRowFilter() const { return std::nullopt; }
};

}  // namespace millstream
