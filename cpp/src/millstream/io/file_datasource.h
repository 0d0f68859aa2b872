#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <arrow/filesystem/filesystem.h>
#include <arrow/io/interfaces.h>
#include <arrow/json/options.h>
#include <arrow/csv/options.h>

#include "io/datasource.h"
#include "io/retry.h"
#include "io/sources.h"

namespace millstream {

/// \brief What every file-based read (CSV, JSON, text, binary) shares: which files,
/// which extra columns, in which order, through which stream codec.
struct FileReadOptions {
  /// The public call, for messages: "read_csv", "read_json"...
  std::string operation = "read_files";
  /// Hive `key=value` directories below a listed directory become string columns.
  bool hive_partitioning = false;
  /// Adds a string column "path" holding each row's file.
  bool include_paths = false;
  /// Read the files in a random order (Ray's shuffle="files"); a new order per execution
  /// unless `shuffle_seed` is set.
  bool shuffle = false;
  std::optional<uint64_t> shuffle_seed;
  /// With a seed: execution n of the dataset shuffles with seed + n (Ray's
  /// FileShuffleConfig.reseed_after_execution), else every execution with the seed.
  bool reseed_after_execution = true;
  /// Stream codec of every file ("gzip", "bz2", "brotli", "zstd", "lz4"; "none": none);
  /// empty: detected from each file's extension (.gz, .bz2, .br, .zst, .lz4), as Ray does.
  std::string stream_compression;
  /// Read tasks to aim for; unset: about DataContext::read_op_min_num_blocks, files
  /// grouped while a group stays under target_max_block_size.
  std::optional<int64_t> override_num_blocks;
  /// The most read tasks running at once (Ray's `concurrency`); 0: no cap.
  int concurrency = 0;
  /// Bytes of a file read ahead in one request; 0: unbuffered.
  int64_t buffer_size = 0;
  /// Transient errors (Ray's retried_io_errors) on which a file is read again.
  RetryPolicy retry;
};

/// \brief Reads one opened file into blocks (the format's part of a file read).
using FileBlockReader = std::function<arrow::Status(
    std::shared_ptr<arrow::io::InputStream> input, const std::string& path, const Emit& emit)>;

/// \brief A Datasource over `files` read by `reader`: each block gets the file's partition
/// columns and "path" as `options` ask. `rows_per_byte_estimate`: expected rows per byte
/// on disk (for budgets before anything is read); `rows_per_file` overrides it when every
/// file holds a known number of rows (one for binary files).
std::shared_ptr<Datasource> MakeFileSource(std::string name, std::shared_ptr<arrow::fs::FileSystem> fs,
                                           std::vector<FoundFile> files, FileReadOptions options,
                                           FileBlockReader reader, double rows_per_byte_estimate,
                                           std::optional<int64_t> rows_per_file = {});

/// \brief The rest of `input` in one buffer (one slice of what was read when it came in
/// one piece).
arrow::Result<std::shared_ptr<arrow::Buffer>> ReadAllBytes(arrow::io::InputStream& input);

/// \brief The codec for a file by its extension (Ray's and pyarrow's detection), or "".
std::string DetectCompression(const std::string& path);

/// \brief pyarrow.csv's reader options, as Arrow C++ takes them.
struct CsvReadOptions {
  arrow::csv::ReadOptions read = arrow::csv::ReadOptions::Defaults();
  arrow::csv::ParseOptions parse = arrow::csv::ParseOptions::Defaults();
  arrow::csv::ConvertOptions convert = arrow::csv::ConvertOptions::Defaults();
};

/// CSV files through Arrow's streaming CSV reader; errors name the file (and the row
/// where Arrow reports one).
std::shared_ptr<Datasource> MakeCsvSource(std::shared_ptr<arrow::fs::FileSystem> fs,
                                          std::vector<FoundFile> files, FileReadOptions options,
                                          CsvReadOptions csv);

/// \brief pyarrow.json's reader options, as Arrow C++ takes them.
struct JsonReadOptions {
  arrow::json::ReadOptions read = arrow::json::ReadOptions::Defaults();
  arrow::json::ParseOptions parse = arrow::json::ParseOptions::Defaults();
  /// Largest block size a straddling object may grow the reader's block to.
  int64_t max_block_size = 128LL << 20;
};

/// JSON files: JSON Lines (objects one after another) or one JSON array of objects, read
/// with Arrow's JSON reader, types inferred over the whole file.
std::shared_ptr<Datasource> MakeJsonSource(std::shared_ptr<arrow::fs::FileSystem> fs,
                                           std::vector<FoundFile> files, FileReadOptions options,
                                           JsonReadOptions json);

/// UTF-8 text files, one row per line in a string column "text" (lines split as Python's
/// str.splitlines splits them); `drop_empty_lines` drops lines of only whitespace.
std::shared_ptr<Datasource> MakeTextSource(std::shared_ptr<arrow::fs::FileSystem> fs,
                                           std::vector<FoundFile> files, FileReadOptions options,
                                           bool drop_empty_lines);

/// Whole files, one row per file in a binary column "bytes".
std::shared_ptr<Datasource> MakeBinarySource(std::shared_ptr<arrow::fs::FileSystem> fs,
                                             std::vector<FoundFile> files, FileReadOptions options);

/// \brief How ListFiles treats paths that do not exist.
struct ListOptions {
  std::string operation = "read_files";
  /// Extensions (without the dot, case-insensitive) a listed file must end with; empty:
  /// every file. Files named explicitly are always kept.
  std::vector<std::string> extensions;
  /// A missing path is skipped instead of an error (no file at all is still an error).
  bool ignore_missing_paths = false;
};

/// \brief ExpandPaths for a public read: errors name `operation`, and missing paths may be
/// skipped. Fails when no file is found.
arrow::Result<std::vector<FoundFile>> ListFiles(const std::vector<std::string>& paths,
                                                std::shared_ptr<arrow::fs::FileSystem>* fs,
                                                const ListOptions& options);

}  // namespace millstream
