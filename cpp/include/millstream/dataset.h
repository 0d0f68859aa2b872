#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <arrow/compute/expression.h>
#include <arrow/filesystem/type_fwd.h>
#include <arrow/result.h>
#include <arrow/status.h>
#include <arrow/table.h>

#include "millstream/block.h"
#include "millstream/context.h"
#include "millstream/udf.h"

namespace millstream {

class LogicalOperator;
class Execution;
class Datasource;

/// \brief One key of a sort: a column, ascending or descending. Nulls come last in both
/// directions, NaN just before them (pyarrow's `null_placement="at_end"`, as Ray Data).
struct SortKey {
  std::string column;
  bool descending = false;
};

/// \brief A value of the first sort key at which a sort starts a new output block (Ray
/// Data's `sort(boundaries=...)`): an integer or a floating-point number, compared
/// exactly with the key's values whatever their numeric type.
struct SortBoundary {
  bool is_integer = true;
  int64_t integer = 0;
  double real = 0;
  static SortBoundary Int(int64_t v) { return {true, v, 0}; }
  static SortBoundary Real(double v) { return {false, 0, v}; }
};

/// \brief One aggregation of a group-by (Ray Data's `Count`, `Sum`, `Min`, `Max`, `Mean`,
/// `Std`, `AbsMax`). `column` empty counts rows (Count only). With `ignore_nulls`, nulls
/// are skipped (a group with no values gives null); without, a null in a group makes its
/// result null (Count then counts nulls too). NaN is a value, as in Arrow.
struct AggregateSpec {
  enum class Kind { kCount, kSum, kMin, kMax, kMean, kStd, kAbsMax, kQuantile, kUnique, kCountDistinct };
  Kind kind = Kind::kCount;
  std::string column;
  bool ignore_nulls = true;
  /// Std's delta degrees of freedom (divisor `n - ddof`).
  int64_t ddof = 1;
  /// The output column's name ("sum(x)", "count()", or an alias).
  std::string name;
  /// Quantile's q, in [0, 1].
  double q = 0.5;
};

/// \brief The kinds of join, by Ray Data's names: "inner", "left_outer", "right_outer",
/// "full_outer", "left_semi", "right_semi", "left_anti", "right_anti".
enum class JoinType { kInner, kLeftOuter, kRightOuter, kFullOuter, kLeftSemi, kRightSemi, kLeftAnti, kRightAnti };

/// \brief `name`'s join type; Invalid naming it and the supported names otherwise.
arrow::Result<JoinType> ParseJoinType(const std::string& name);
/// \brief The join type's name ("left_outer"...).
std::string JoinTypeName(JoinType type);

/// \brief A join of a left and a right dataset (see Dataset::Join). Output columns and
/// their names follow `pyarrow.Table.join` with `coalesce_keys=True`: semi/anti joins keep
/// one side's columns; inner and left outer the left columns then the right non-key
/// columns; right outer the left non-key columns then the right columns; full outer the
/// left columns (keys coalesced) then the right non-key columns. A column whose name the
/// other side also outputs gets that side's suffix appended; with no suffix at all such
/// a collision is an error naming the columns.
struct JoinSpec {
  JoinType type = JoinType::kInner;
  std::vector<std::string> left_keys;
  /// Empty: the same names as `left_keys`.
  std::vector<std::string> right_keys;
  std::optional<std::string> left_suffix;
  std::optional<std::string> right_suffix;
  /// Reduce tasks (partitions, and so at least as many output blocks); more are used
  /// when a partition would not fit the memory limit. 0: chosen from the data size.
  int64_t num_partitions = 0;
};

/// \brief How a random operator is seeded (Ray's RandomSeedConfig): no seed, a different
/// order every run; a seed, the same order every run — or, with
/// `reseed_after_execution`, a different but reproducible order each execution.
struct RandomSeedConfig {
  std::optional<uint64_t> seed;
  bool reseed_after_execution = false;
};

/// \brief Options of a Parquet read.
struct ReadParquetOptions {
  /// Columns to read, in this order; empty reads all.
  std::vector<std::string> columns;
  /// Rows to keep. Row groups whose statistics rule the predicate out are never read.
  std::optional<arrow::compute::Expression> filter;
  /// Number of read tasks to aim for; unset: one per file, or per group of row groups
  /// of about `target_max_block_size`.
  std::optional<int64_t> override_num_blocks;
  /// Files found in directories or by globs are read only with one of these extensions
  /// (case-insensitive, without the dot); empty: every file. Named files are always read.
  std::vector<std::string> file_extensions = {"parquet"};
  /// Hive-style partitions: `key=value` directories below a listed directory become
  /// string columns (unless the files hold a column of that name); a filter on them
  /// skips whole files.
  bool hive_partitioning = true;
  /// String or binary columns read as dictionary arrays (pyarrow's `read_dictionary`):
  /// no copy of each value where the file stores the column dictionary-encoded.
  std::vector<std::string> dictionary_columns;
};

/// \brief `path` as a local filesystem path: itself, or the path of a `file://` URI.
/// Another URI scheme (`s3://`, `gs://`...) is NotImplemented, naming `operation`, the
/// path and the scheme; nothing is touched (no filesystem, no network client).
arrow::Result<std::string> LocalPath(const std::string& path, std::string_view operation);

/// \brief Formats that `Dataset::Write` produces.
enum class FileFormat { kParquet, kCsv, kJson };

/// \brief What a write does when its directory already exists (Ray's SaveMode).
enum class SaveMode {
  kAppend,     ///< add the new files next to what is there
  kOverwrite,  ///< delete the directory's contents first, then write
  kError,      ///< fail (even if the directory is empty); nothing is touched
  kIgnore,     ///< write nothing
};

/// \brief Parquet writer settings (pyarrow.parquet.write_table's names and defaults).
struct ParquetWriteOptions {
  /// A codec name as pyarrow takes it ("snappy", "gzip", "brotli", "zstd", "lz4", "none").
  std::string compression = "snappy";
  std::optional<int> compression_level;
  /// Most rows per row group; 0: Arrow's default (1Mi rows).
  int64_t row_group_size = 0;
  /// Dictionary encoding for every column (true) or none (false). Unset: each file's
  /// columns as its first block's values tell — a column more than half of whose first
  /// values (up to 16Ki; a block of fewer than 1Ki rows decides nothing) are distinct is
  /// written plain, the rest with a dictionary; Arrow would build and then drop that
  /// dictionary for every row group.
  std::optional<bool> use_dictionary;
  bool write_statistics = true;
  /// Format version: "1.0", "2.4" or "2.6".
  std::string version = "2.6";
  /// Bytes per data page before it is compressed; 0: Arrow's default (1 MiB).
  int64_t data_page_size = 0;
  /// When set, every block is cast to this schema (columns selected and ordered by it,
  /// missing ones null) and every file has it.
  std::shared_ptr<arrow::Schema> schema;
};

/// \brief CSV writer settings (pyarrow.csv.WriteOptions' names and defaults).
struct CsvWriteOptions {
  bool include_header = true;
  char delimiter = ',';
  /// "needed", "all_valid" or "none", for values and for the header row.
  std::string quoting_style = "needed";
  std::string quoting_header = "needed";
  int32_t batch_size = 1024;
};

/// \brief Options of a write (Ray's write_* parameters that shape the files).
struct WriteOptions {
  /// Hive-style `key=value/...` subdirectories by these columns (left out of the files).
  std::vector<std::string> partition_cols;
  /// Rows bundled into a write task before it starts (each task writes its own files),
  /// so that files hold at least this many rows when the input has them; 0: no bundling.
  int64_t min_rows_per_file = 0;
  /// A file holds at most this many rows: past it the task's next file opens; 0: no limit.
  int64_t max_rows_per_file = 0;
  /// A task's file name (one path segment) from the write's id and the task's index; the
  /// task's further files (a `max_rows_per_file` split, a widened schema) insert `_<n>`
  /// (six digits) before the extension. Unset: `<write id>_<task index>_<n>.<ext>`.
  /// Called on the task's thread when it starts.
  std::function<arrow::Result<std::string>(const std::string& write_id, int64_t task_index)>
      filename;
  /// The names `filename` gives hold `{i}`, replaced by the file's number in its task
  /// (0, 1...; as pyarrow's basename_template) instead of the `_<n>` suffix.
  bool filename_template = false;
  /// Every file's bytes go through this stream codec ("gzip", "bz2", "brotli", "zstd",
  /// "lz4"; Ray's `arrow_open_stream_args={"compression": ...}`), the name unchanged;
  /// empty: none.
  std::string stream_compression;
  ParquetWriteOptions parquet;
  CsvWriteOptions csv;
  /// The filesystem the directory is on; null: the local one. On an object store (S3)
  /// each file is uploaded under its final name and appears only when complete (a failed
  /// file's multipart upload is aborted).
  std::shared_ptr<arrow::fs::FileSystem> filesystem;
  /// On an object store, a file whose upload fails with an error containing (or matching,
  /// as a regex) one of these is uploaded again from its start, with backoff (Ray's
  /// write_file_retry_on_errors); the task keeps the file's blocks until it is complete.
  std::vector<std::string> retried_io_errors;
  /// The most write tasks running at once (Ray's `concurrency`); 0: no cap.
  int concurrency = 0;
};

/// \brief Checks what can be checked of `options` before anything is written (partition
/// column names, codecs and levels, the Parquet version, CSV options): Invalid or
/// NotImplemented naming the option. Dataset::Write calls it before PrepareWriteDirectory,
/// so a bad option never costs an overwrite its old files.
arrow::Status ValidateWriteOptions(FileFormat format, const WriteOptions& options);

/// \brief Makes `directory` ready for a write in `mode`: creates it if missing; if it
/// exists, kError fails (Invalid, naming it), kIgnore returns false (write nothing),
/// kOverwrite deletes what is inside it (never the directory itself nor anything outside
/// it). A path that is a file is an IOError. Returns whether to write.
arrow::Result<bool> PrepareWriteDirectory(const std::string& directory, SaveMode mode,
                                          std::string_view operation);

/// \brief Counters of one operator over one execution.
struct OperatorStats {
  /// The physical operator: "TaskPoolMapOperator[ReadParquet->MapBatches(f)]".
  std::string name;
  /// What the user asked, for progress: "ReadParquet->MapBatches(f)", "Limit[10]".
  std::string display_name;
  int64_t tasks = 0;
  int64_t blocks_in = 0, rows_in = 0, bytes_in = 0;
  int64_t blocks_out = 0, rows_out = 0, bytes_out = 0;
  /// Summed wall time of this operator's tasks.
  double task_wall_s = 0;
  /// Time during which it had input to work on but a budget held it back.
  double backpressure_s = 0;
  /// Summed CPU time of this operator's task threads, and the part spent inside UDFs.
  double cpu_s = 0;
  double udf_s = 0;
  /// Most bytes of blocks accounted to it at once.
  int64_t peak_bytes = 0;
  /// Most bytes one of its finished tasks held beyond the blocks counted elsewhere:
  /// decode buffers, file bytes read ahead, compute scratch, the output being built.
  int64_t peak_task_scratch_bytes = 0;
  /// Live state, for progress: tasks running, input waiting, actors alive (and built).
  int64_t active_tasks = 0;
  int64_t queued_bundles = 0;
  int64_t queued_bytes = 0;
  int64_t actors = 0;
  int64_t peak_actors = 0;
  int64_t actors_started = 0;
  /// Rows this operator is expected to output in all (from source metadata and the
  /// selectivity seen so far); -1 when unknown.
  int64_t estimated_rows_out = -1;
  bool done = false;
  /// Tasks that failed and were tolerated (DataContext::max_errored_blocks).
  int64_t errored_tasks = 0;
  /// Bytes written to spill files (an exchange over the memory limit).
  int64_t spilled_bytes = 0;
  /// Join partitions (and sub-partitions) whose build side did not fit a reduce task's
  /// share, re-partitioned by a second hash of the key (grace hash join), and the
  /// (sub-)partitions joined with their larger side streamed in chunks (a hot key, or a
  /// larger side many times the share).
  int64_t regrouped_partitions = 0;
  int64_t streamed_partitions = 0;
  /// (Sub-)partitions joined by block nested loops over stored chunks of both sides (a
  /// build side over the share: a key hot on both sides).
  int64_t chunked_partitions = 0;
};

/// \brief Counters of one execution.
struct ExecutionStats {
  std::vector<OperatorStats> operators;
  double wall_s = 0;
  int64_t peak_bytes = 0;
  /// Bytes of blocks held right now (queued, in flight, waiting for the consumer).
  int64_t held_bytes = 0;
  int64_t memory_limit = 0;
  bool finished = false;
  /// A printable summary, one block per operator, then the totals.
  std::string ToString() const;
};

/// \brief A running execution, consumed block by block.
///
/// Created by Dataset::Execute. Blocks arrive as the pipeline produces them; while the
/// consumer does not pull, the pipeline stops growing once its memory budget is full.
/// Destroying the stream cancels the execution and waits for its tasks. Not thread-safe:
/// one consumer thread.
class BlockStream {
 public:
  ~BlockStream();
  /// The next block, or nullptr when the execution is complete. Returns the first task
  /// error, after which the stream is finished.
  arrow::Result<Block> Next();
  /// Like Next, but gives up after `timeout`: then `*timed_out` is set and nullptr returned.
  arrow::Result<Block> NextFor(std::chrono::milliseconds timeout, bool* timed_out);
  /// Stops the execution: no task is launched any more, running ones end at their next
  /// block (a UDF call in progress runs to its end). Next then returns Cancelled.
  void Cancel();
  /// Waits until no task of the execution runs (`timeout` < 0: without limit); true if
  /// none does. Destroying the stream waits for them too: to stop without waiting for a
  /// slow UDF call, Cancel, then destroy the stream on a thread of your own.
  bool WaitForTasks(std::chrono::milliseconds timeout);
  /// Counters so far (complete once Next returned nullptr).
  ExecutionStats stats() const;
  /// Bytes of blocks the execution accounts for right now.
  int64_t accounted_bytes() const;

 private:
  friend class Dataset;
  explicit BlockStream(std::unique_ptr<Execution> execution);
  std::unique_ptr<Execution> execution_;
};

/// \brief Re-chunks a block stream into batches of exactly `batch_size` rows (the last
/// one may be shorter unless `drop_last`); a batch crossing blocks is concatenated.
class BatchIterator {
 public:
  /// Without `batch_size`, whole blocks, skipping empty ones unless `keep_empty_blocks`
  /// (what materialize and num_blocks count, as Ray Data keeps a repartition's empty
  /// blocks); with it, batches of that many rows, never empty.
  BatchIterator(std::unique_ptr<BlockStream> stream, std::optional<int64_t> batch_size,
                bool drop_last, bool keep_empty_blocks = false);
  /// The next batch, or nullptr at the end.
  arrow::Result<Block> Next();
  arrow::Result<Block> NextFor(std::chrono::milliseconds timeout, bool* timed_out);
  BlockStream& stream() { return *stream_; }

 private:
  std::unique_ptr<BlockStream> stream_;
  std::optional<int64_t> batch_size_;
  bool drop_last_;
  bool keep_empty_blocks_;
  std::vector<Block> pending_;
  int64_t pending_rows_ = 0;
  bool exhausted_ = false;
};

/// \brief A lazy, immutable dataset: a plan of operators over Arrow blocks.
///
/// Every transform returns a new Dataset sharing the plan so far; nothing runs until a
/// consuming call (Execute, ToTable, Count, Write...). Running a Dataset twice computes it
/// twice unless it was materialized. Thread-safe: a Dataset is an immutable value.
class Dataset {
 public:
  /// Integers 0..n-1 in an int64 column named "id".
  static arrow::Result<Dataset> Range(int64_t n, std::optional<int64_t> override_num_blocks = {});
  /// The rows of an in-memory table, split into `override_num_blocks` blocks if given.
  static arrow::Result<Dataset> FromArrow(std::shared_ptr<arrow::Table> table,
                                          std::optional<int64_t> override_num_blocks = {});
  /// These blocks as they are, each one block (empty ones included), of `schema`.
  static arrow::Result<Dataset> FromBlocks(std::vector<Block> blocks,
                                           std::shared_ptr<arrow::Schema> schema);
  /// Parquet files: each path is a file, a directory (read recursively; names starting
  /// with '.' or '_' are skipped) or a glob.
  static arrow::Result<Dataset> ReadParquet(std::vector<std::string> paths,
                                            ReadParquetOptions options = {});
  /// The rows of any Datasource (CSV, JSON, text, binary files...), read in
  /// `override_num_blocks` tasks if given (else as the source splits itself), at most
  /// `concurrency` of them running at once (0: no cap).
  static arrow::Result<Dataset> FromSource(std::shared_ptr<Datasource> source,
                                           std::optional<int64_t> override_num_blocks = {},
                                           int concurrency = 0);

  /// Applies `udf` to batches (see MapBatchesOptions).
  Dataset MapBatches(BatchUdfFactory udf, MapBatchesOptions options) const;
  /// Keeps the rows where `predicate` is true (nulls drop). A predicate that is not
  /// boolean on the blocks' schema (`literal(0)`, `a + 1`) fails with a TypeError.
  Dataset Filter(arrow::compute::Expression predicate) const;
  /// Adds (or replaces) column `name` with `expr` evaluated over each block (a scalar
  /// result fills every row). A column the expression names that a block lacks fails with
  /// a KeyError naming it.
  Dataset WithColumn(std::string name, arrow::compute::Expression expr) const;
  /// Keeps these columns, in this order. Unknown names fail when the schema is known.
  arrow::Result<Dataset> SelectColumns(std::vector<std::string> columns) const;
  arrow::Result<Dataset> DropColumns(std::vector<std::string> columns) const;
  arrow::Result<Dataset> RenameColumns(std::map<std::string, std::string> renames) const;
  /// The rows sorted by `keys` (per-key descending; nulls last), stable: rows with equal
  /// keys keep their input order. Runs as an exchange that sorts each block as it
  /// streams in, range-partitions by sampled boundaries and sorts each partition,
  /// spilling past the memory limit.
  Dataset Sort(std::vector<SortKey> keys) const;
  /// As Sort(keys), with the output split at `boundaries` of the first key instead of at
  /// sampled ones (Ray Data's `boundaries`): `boundaries.size() + 1` partitions (the
  /// values deduplicated and ordered), each one or more blocks, an empty one where no row
  /// falls. Ascending, partition 0 has the rows whose first key is below the smallest
  /// boundary and partition i those at or above boundary i-1 and below boundary i;
  /// descending, the partitions come in the reverse order (the largest values first).
  /// Nulls and NaN go to the last partition. The first key must be of an integer or
  /// floating-point type (an error naming it at execution otherwise); a NaN boundary is
  /// an error. Empty `boundaries`: the same as Sort(keys).
  arrow::Result<Dataset> Sort(std::vector<SortKey> keys, std::vector<SortBoundary> boundaries) const;
  /// One row per distinct combination of `keys` (nulls form a group of their own) with
  /// the key columns then one column per aggregate, sorted by the keys (nulls last); no
  /// keys: one row for the whole dataset (none when it is empty). Runs as an exchange
  /// that aggregates each block as it streams in, hash-partitions the partial results by
  /// key and merges them per partition, spilling past the memory limit. `num_partitions`
  /// sets the reduce tasks (0: chosen from the data size and memory limit).
  arrow::Result<Dataset> GroupByAggregate(std::vector<std::string> keys,
                                          std::vector<AggregateSpec> aggregates,
                                          int64_t num_partitions = 0) const;
  /// A uniformly random permutation of the rows.
  Dataset RandomShuffle(RandomSeedConfig seed = {}) const;
  /// The blocks in a random order, each block unchanged.
  Dataset RandomizeBlockOrder(RandomSeedConfig seed = {}) const;
  /// Exactly `num_blocks` blocks: without `shuffle` or `keys`, the rows in order split
  /// into blocks whose row counts differ by at most one; with `keys`, every row of one
  /// key in one block (hash partitioning; `num_blocks = 0`: as many as the data size
  /// asks for); with `shuffle`, each row in a random block.
  /// With `keys` and `sort`, each block's rows are then sorted by the keys (ascending,
  /// nulls last, stable); `sort` without keys is an error.
  arrow::Result<Dataset> Repartition(int64_t num_blocks, bool shuffle = false,
                                     std::vector<std::string> keys = {}, bool sort = false) const;
  /// Streamed (no exchange): blocks of `target_rows` rows, in order within each task.
  /// Small blocks are combined and large ones cut; not `strict`, each task (of at least
  /// `target_rows` rows, bundled from consecutive blocks) may end with one smaller block;
  /// `strict`, every block but the last has exactly `target_rows` rows.
  arrow::Result<Dataset> RepartitionRows(int64_t target_rows, bool strict) const;
  /// Rows of this dataset (left) joined with `right` on `spec`'s keys: rows whose keys
  /// are all equal match (a null key never matches; such rows still appear in outer and
  /// anti results). Runs as a two-input exchange: both sides are hash-partitioned by key
  /// as they stream in (spilling past the memory limit), and each partition is joined on
  /// its own, the hash table built on the smaller side of that partition. Rows come in
  /// no particular order. Bad keys, key types that differ between the sides or
  /// colliding column names without suffixes are errors naming the column, before the
  /// join runs when both schemas are known, else when the partition is joined.
  arrow::Result<Dataset> Join(const Dataset& right, JoinSpec spec) const;
  /// The rows of this dataset and of `others`, streamed as their inputs produce them
  /// (under preserve_order: all of this one, then each of `others` in turn).
  Dataset Union(const std::vector<Dataset>& others) const;
  /// The columns of this dataset and of each of `others` side by side, row by row (a
  /// name already taken becomes "name_1", "name_2"... as in Ray). Streamed: each output
  /// block is zero-copy slices of the inputs' blocks, whatever their boundaries. The
  /// execution fails (Invalid, naming both row counts) when the row counts differ.
  Dataset Zip(const std::vector<Dataset>& others) const;
  /// Each row kept with probability `fraction` in [0, 1], order kept (a Bernoulli sample
  /// per block, fused with the steps around it). With a seed, the same rows every run
  /// (or, with `reseed_after_execution`, a different reproducible sample per execution).
  arrow::Result<Dataset> RandomSample(double fraction, RandomSeedConfig seed = {}) const;
  /// The first `n` rows, in input order: the steps before a limit hand on their output in
  /// order (a stream after it may still reorder unless preserve_order).
  Dataset Limit(int64_t n) const;

  /// A dataset whose execution writes this one's rows as files into `directory` and
  /// produces no rows (Write runs it to the end).
  /// With `partition_cols`, rows go to `key=value/...` subdirectories (Hive style, named
  /// as pyarrow's hive partitioning names them: percent-encoded, null as
  /// `__HIVE_DEFAULT_PARTITION__`) and the files leave those columns out. `directory`
  /// must be a local path (see LocalPath). Its stats count the blocks written as the
  /// write's output.
  Dataset WithWrite(const std::string& directory, FileFormat format,
                    std::vector<std::string> partition_cols = {}) const;
  /// The same with every write option (see WriteOptions).
  Dataset WithWrite(const std::string& directory, FileFormat format, WriteOptions options) const;
  /// The row count when metadata gives it without execution (a source of known size,
  /// then only row-preserving steps and limits); unset otherwise.
  std::optional<int64_t> CountFromMetadata() const;
  /// Whether the plan is known, without execution, to make no blocks at all (Ray's
  /// estimate of zero blocks): each read is of a source known to be empty that holds no
  /// in-memory blocks (`range(0)`, empty files), reached through single-input steps and
  /// unions. An in-memory dataset of empty blocks has blocks: false.
  bool KnownToHaveNoBlocks() const;
  /// The files this dataset's reads read (every input of the plan), each once, in plan
  /// order.
  std::vector<std::string> InputFiles() const;
  /// The schema when the plan gives it without execution (no UDF in the way); else null.
  std::shared_ptr<arrow::Schema> KnownSchema() const;

  /// Starts executing the plan and returns its output stream.
  arrow::Result<std::unique_ptr<BlockStream>> Execute(const DataContext& context) const;
  /// Runs the plan and collects every row, in input order.
  arrow::Result<std::shared_ptr<arrow::Table>> ToTable(const DataContext& context) const;
  /// Rows in the dataset: from Parquet metadata or the source's size when the plan allows,
  /// otherwise by executing it.
  arrow::Result<int64_t> Count(const DataContext& context) const;
  /// The schema, from the plan when it is known without running UDFs, else from the first
  /// block of an execution; null if the dataset has no blocks.
  arrow::Result<std::shared_ptr<arrow::Schema>> Schema(const DataContext& context) const;
  /// Executes and keeps the blocks (in input order) in memory: the result re-reads them,
  /// not its inputs.
  arrow::Result<Dataset> Materialize(const DataContext& context,
                                     ExecutionStats* stats = nullptr) const;
  /// Writes files into `directory` (created if missing). Each file is written under a
  /// hidden temporary name and renamed when complete, so readers never see a torn file.
  arrow::Status Write(const std::string& directory, FileFormat format,
                      const DataContext& context, ExecutionStats* stats = nullptr) const;
  /// The same with write options and a save mode (see PrepareWriteDirectory).
  arrow::Status Write(const std::string& directory, FileFormat format, WriteOptions options,
                      SaveMode mode, const DataContext& context,
                      ExecutionStats* stats = nullptr) const;

  /// The logical, optimized and physical plans.
  std::string Explain(const DataContext& context = {}) const;
  /// One line, e.g. "ReadParquet -> MapBatches(f) -> Limit[10]".
  std::string ToString() const;

  const std::shared_ptr<const LogicalOperator>& plan() const { return plan_; }
  explicit Dataset(std::shared_ptr<const LogicalOperator> plan) : plan_(std::move(plan)) {}

 private:
  std::shared_ptr<const LogicalOperator> plan_;
};

/// \brief Registers Arrow's compute functions; call once before using the engine
/// (idempotent and thread-safe).
arrow::Status Initialize();

}  // namespace millstream
