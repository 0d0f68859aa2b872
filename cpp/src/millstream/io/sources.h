#pragma once

#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <arrow/filesystem/filesystem.h>

#include "io/datasource.h"
#include "io/retry.h"
#include "millstream/dataset.h"

namespace millstream {

/// Integers [0, n) in an int64 column "id".
std::shared_ptr<Datasource> MakeRangeSource(int64_t n);

/// Blocks already in memory; `name` is "FromArrow", "InputData"...
std::shared_ptr<Datasource> MakeBlocksSource(std::vector<Block> blocks,
                                             std::shared_ptr<arrow::Schema> schema,
                                             std::string name);

/// A file found by ExpandPaths.
struct FoundFile {
  std::string path;
  int64_t size = 0;
  /// The directory the path was found under (a listed directory, or a glob's fixed
  /// prefix); empty for a file named explicitly. Partition keys no longer depend on it.
  std::string base_dir;
};

/// read_parquet's options beyond ReadParquetOptions (Ray's read_parquet parameters).
struct ParquetFileOptions {
  /// A string column "path" naming each row's file, after the partition columns.
  bool include_paths = false;
  /// Files read in a random order (shuffle="files"); with a seed, execution n uses
  /// seed + n when reseed_after_execution, else the seed each time.
  bool shuffle = false;
  std::optional<uint64_t> shuffle_seed;
  bool reseed_after_execution = true;
  /// The schema every file is read as (pyarrow.dataset's `schema`): its columns in its
  /// order, cast to its types, null where a file lacks one; partition columns only if
  /// it names them.
  std::shared_ptr<arrow::Schema> schema;
  /// Transient errors on which a read (a footer, a task's row groups) is tried again.
  RetryPolicy retry;
  /// A uint64 column "row_hash" (last): Ray's deterministic row hash, splitmix64's
  /// finalizer of (the file's seed + the row's position among the rows read from that
  /// file). Seeds by file path (Ray: the first 8 bytes of the path's MD5, little-endian).
  bool include_row_hash = false;
  std::unordered_map<std::string, uint64_t> row_hash_seeds;
  /// Binary columns holding raw C-order arrays, read as `arrow.fixed_shape_tensor`
  /// columns of that value type and shape (Ray's `tensor_column_schema`).
  struct TensorColumn {
    std::string name;
    std::shared_ptr<arrow::DataType> value_type;
    std::vector<int64_t> shape;
  };
  std::vector<TensorColumn> tensor_columns;
};

/// Parquet files already found (see ListFiles), read with `options` and `more`.
arrow::Result<std::shared_ptr<Datasource>> MakeParquetSource(std::shared_ptr<arrow::fs::FileSystem> fs,
                                                             std::vector<FoundFile> files,
                                                             const ReadParquetOptions& options,
                                                             ParquetFileOptions more);

/// Parquet files; reads every file's footer now (for the schema, counts and splits).
arrow::Result<std::shared_ptr<Datasource>> MakeParquetSource(
    const std::vector<std::string>& paths, const ReadParquetOptions& options);


/// A Hive partition key of a file: from a `name=value` directory, decoded.
struct PartitionKey {
  std::string name;
  std::optional<std::string> value;  ///< null: the directory says kHiveNullValue
};

/// The directory name Hive and pyarrow write for a null partition value.
inline constexpr const char* kHiveNullValue = "__HIVE_DEFAULT_PARTITION__";

/// The partition keys of the `key=value` directories in the file's path (Ray's rule: all
/// of them, not only those below `file.base_dir`), percent-decoded as pyarrow's hive
/// partitioning does (`%2F` is '/'); kHiveNullValue is null. Invalid if a name or value
/// is not UTF-8 once decoded.
arrow::Result<std::vector<PartitionKey>> HivePartition(const FoundFile& file);

/// The directory name `name=value` of a partition, as pyarrow's hive partitioning
/// writes it: the value percent-encoded (every byte but `A-Za-z0-9-_.~`, so '/' and
/// ".." cannot leave the directory), null as kHiveNullValue. The name is encoded the same
/// way (pyarrow decodes names too), and so is a leading '.' or '_' (readers skip such
/// directories as hidden). Invalid for an empty name or a name longer than a file name
/// may be (255 bytes).
arrow::Result<std::string> HiveSegment(const std::string& name, const std::optional<std::string>& value);

/// `path` made absolute when it is a relative local path (URIs are left alone).
std::string AbsoluteLocalPath(const std::string& path);

/// Resolves files, directories (recursively) and globs into a sorted file list on the
/// local filesystem (paths or `file://` URIs; another scheme is NotImplemented, see
/// LocalPath), skipping hidden names ('.' or '_' first) and, in directories and globs,
/// files without one of `extensions` (none given: keep all). A missing path or a
/// pattern matching nothing is an IOError naming it (`operation` first), or skipped when
/// `ignore_missing`.
arrow::Result<std::vector<FoundFile>> ExpandPaths(const std::vector<std::string>& paths,
                                                  std::shared_ptr<arrow::fs::FileSystem>* fs,
                                                  const std::vector<std::string>& extensions = {},
                                                  const std::string& operation = "read_parquet",
                                                  bool ignore_missing = false);

}  // namespace millstream
