#include "io/file_datasource.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <random>

#include <arrow/api.h>
#include <arrow/filesystem/api.h>
#include <arrow/io/api.h>
#include <arrow/util/compression.h>

#include "runtime/counting_memory_pool.h"

namespace millstream {
namespace {

/// One file, read by the format's reader, with its partition and path columns added.
class FileReadTask : public ReadTask {
 public:
  FileReadTask(std::shared_ptr<arrow::fs::FileSystem> fs, FoundFile file,
               std::shared_ptr<const FileReadOptions> options,
               std::shared_ptr<const FileBlockReader> reader, int64_t rows)
      : fs_(std::move(fs)), file_(std::move(file)), options_(std::move(options)),
        reader_(std::move(reader)), rows_(rows) {}

  arrow::Status Run(const Emit& emit) const override {
    auto once = [this](const Emit& out) -> arrow::Status {
      try {
        return RunImpl(out);
      } catch (const std::exception& e) {
        return arrow::Status::IOError(e.what());
      }
    };
    arrow::Status status = RunWithRetry(once, emit, options_->retry);
    if (!status.ok() && status.code() != arrow::StatusCode::Cancelled &&
        status.message().find(file_.path) == std::string::npos) {
      return status.WithMessage(options_->operation, ": '", file_.path, "': ", status.message());
    }
    return status;
  }

  int64_t estimated_rows() const override { return rows_; }
  int64_t estimated_bytes() const override { return file_.size; }
  /// An uncompressed file of these formats decodes to about its size (text into Arrow
  /// columns, bytes as they are); a compressed one to many times it.
  bool sized_by_metadata() const override { return Codec().empty(); }

 private:
  /// The file's stream codec; empty: none.
  std::string Codec() const {
    std::string name = options_->stream_compression.empty() ? DetectCompression(file_.path)
                                                            : options_->stream_compression;
    return name == "none" ? "" : name;
  }

  arrow::Status RunImpl(const Emit& emit) const {
    std::vector<PartitionKey> partition;
    if (options_->hive_partitioning) {
      ARROW_ASSIGN_OR_RAISE(partition, HivePartition(file_));
    }
    std::shared_ptr<arrow::io::InputStream> input;
    ARROW_ASSIGN_OR_RAISE(input, fs_->OpenInputStream(file_.path));
    if (options_->buffer_size > 0) {
      // Large requests to an object store, but no buffer larger than the file.
      int64_t buffer = std::min(options_->buffer_size, std::max<int64_t>(file_.size, 4096));
      ARROW_ASSIGN_OR_RAISE(input, arrow::io::BufferedInputStream::Create(
                                       buffer, EngineMemoryPool(), input));
    }
    const std::string codec_name = Codec();
    std::unique_ptr<arrow::util::Codec> codec;
    if (!codec_name.empty()) {
      auto type = arrow::util::Codec::GetCompressionType(codec_name);
      if (!type.ok()) {
        return arrow::Status::Invalid("arrow_open_stream_args: compression='", codec_name,
                                      "' is not a codec name");
      }
      ARROW_ASSIGN_OR_RAISE(codec, arrow::util::Codec::Create(*type));
      ARROW_ASSIGN_OR_RAISE(input, arrow::io::CompressedInputStream::Make(codec.get(), input));
    }
    auto add_columns = [&](Block block) -> arrow::Status {
      for (const auto& key : partition) {
        if (block->schema()->GetFieldIndex(key.name) >= 0) continue;  // the file's own column wins
        ARROW_ASSIGN_OR_RAISE(auto column, key.value ? arrow::MakeArrayFromScalar(
                                                           arrow::StringScalar(*key.value), block->num_rows())
                                                     : arrow::MakeArrayOfNull(arrow::utf8(), block->num_rows()));
        ARROW_ASSIGN_OR_RAISE(block, block->AddColumn(block->num_columns(),
                                                      arrow::field(key.name, arrow::utf8()), column));
      }
      if (options_->include_paths) {
        ARROW_ASSIGN_OR_RAISE(auto column, arrow::MakeArrayFromScalar(arrow::StringScalar(file_.path),
                                                                      block->num_rows()));
        int existing = block->schema()->GetFieldIndex("path");
        if (existing >= 0) {
          ARROW_ASSIGN_OR_RAISE(block, block->RemoveColumn(existing));
        }
        ARROW_ASSIGN_OR_RAISE(block, block->AddColumn(block->num_columns(),
                                                      arrow::field("path", arrow::utf8()), column));
      }
      return emit(std::move(block));
    };
    ARROW_RETURN_NOT_OK((*reader_)(input, file_.path, add_columns));
    if (!input->closed()) ARROW_RETURN_NOT_OK(input->Close());
    return arrow::Status::OK();
  }

  std::shared_ptr<arrow::fs::FileSystem> fs_;
  FoundFile file_;
  std::shared_ptr<const FileReadOptions> options_;
  std::shared_ptr<const FileBlockReader> reader_;
  int64_t rows_;
};

/// Several files read one after the other as one task (many small files).
class FileDatasource : public Datasource {
 public:
  FileDatasource(std::string name, std::shared_ptr<arrow::fs::FileSystem> fs,
                 std::vector<FoundFile> files, FileReadOptions options, FileBlockReader reader,
                 double rows_per_byte, std::optional<int64_t> rows_per_file)
      : name_(std::move(name)), fs_(std::move(fs)), files_(std::move(files)),
        options_(std::make_shared<const FileReadOptions>(std::move(options))),
        reader_(std::make_shared<const FileBlockReader>(std::move(reader))),
        rows_per_byte_(rows_per_byte), rows_per_file_(rows_per_file) {}

  std::string name() const override { return name_; }

  arrow::Result<std::vector<std::shared_ptr<ReadTask>>> GetReadTasks(
      const ReadTaskOptions& read_options) const override {
    std::vector<FoundFile> files = files_;
    if (options_->shuffle) {
      uint64_t execution = executions_.fetch_add(1);
      uint64_t seed = !options_->shuffle_seed ? std::random_device{}()
                      : options_->reseed_after_execution ? *options_->shuffle_seed + execution
                                                         : *options_->shuffle_seed;
      std::mt19937_64 rng(seed);
      std::shuffle(files.begin(), files.end(), rng);
    }
    std::vector<std::shared_ptr<ReadTask>> tasks;
    tasks.reserve(files.size());
    for (auto& file : files) {
      int64_t rows = rows_per_file_ ? *rows_per_file_
                                    : std::max<int64_t>(1, static_cast<int64_t>(file.size * rows_per_byte_));
      tasks.push_back(std::make_shared<FileReadTask>(fs_, std::move(file), options_, reader_, rows));
    }
    int64_t parallelism = options_->override_num_blocks.value_or(read_options.parallelism);
    int64_t wanted = std::max<int64_t>(1, parallelism > 0 ? parallelism : read_options.min_tasks);
    if (static_cast<int64_t>(tasks.size()) <= wanted) return tasks;
    // Many small files: neighbours grouped into about `wanted` tasks; without an
    // override, no group larger than a block.
    int64_t per_group = (static_cast<int64_t>(tasks.size()) + wanted - 1) / wanted;
    std::vector<std::shared_ptr<ReadTask>> grouped, group;
    int64_t group_bytes = 0;
    auto flush = [&] {
      if (group.size() == 1) grouped.push_back(group[0]);
      else if (!group.empty()) grouped.push_back(MakeGroupedReadTask(std::move(group)));
      group.clear();
      group_bytes = 0;
    };
    for (auto& task : tasks) {
      bool too_big = parallelism <= 0 && group_bytes + task->estimated_bytes() > read_options.target_max_block_size;
      if (!group.empty() && (static_cast<int64_t>(group.size()) >= per_group || too_big)) flush();
      group_bytes += task->estimated_bytes();
      group.push_back(std::move(task));
    }
    flush();
    return grouped;
  }

  std::optional<int64_t> num_rows() const override {
    if (!rows_per_file_) return std::nullopt;
    return *rows_per_file_ * static_cast<int64_t>(files_.size());
  }

  std::shared_ptr<arrow::Schema> schema() const override { return nullptr; }

  std::vector<std::string> input_files() const override {
    std::vector<std::string> paths;
    for (const auto& file : files_) paths.push_back(file.path);
    return paths;
  }

 private:
  std::string name_;
  std::shared_ptr<arrow::fs::FileSystem> fs_;
  std::vector<FoundFile> files_;
  std::shared_ptr<const FileReadOptions> options_;
  std::shared_ptr<const FileBlockReader> reader_;
  double rows_per_byte_;
  std::optional<int64_t> rows_per_file_;
  /// Executions planned so far (for reseed_after_execution).
  mutable std::atomic<uint64_t> executions_{0};
};

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

arrow::Result<std::shared_ptr<arrow::Buffer>> ReadAllBytes(arrow::io::InputStream& input) {
  arrow::BufferVector chunks;
  while (true) {
    ARROW_ASSIGN_OR_RAISE(auto chunk, input.Read(8 << 20));
    if (chunk->size() == 0) break;
    chunks.push_back(std::move(chunk));
  }
  if (chunks.size() == 1) return chunks.front();
  return arrow::ConcatenateBuffers(chunks);
}

std::string DetectCompression(const std::string& path) {
  std::string lower = path;
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const std::pair<const char*, const char*> kSuffixes[] = {
      {".gz", "gzip"}, {".bz2", "bz2"}, {".br", "brotli"}, {".zst", "zstd"}, {".lz4", "lz4"}};
  for (const auto& [suffix, codec] : kSuffixes) {
    if (EndsWith(lower, suffix)) return codec;
  }
  return "";
}

std::shared_ptr<Datasource> MakeFileSource(std::string name, std::shared_ptr<arrow::fs::FileSystem> fs,
                                           std::vector<FoundFile> files, FileReadOptions options,
                                           FileBlockReader reader, double rows_per_byte_estimate,
                                           std::optional<int64_t> rows_per_file) {
  return std::make_shared<FileDatasource>(std::move(name), std::move(fs), std::move(files),
                                          std::move(options), std::move(reader),
                                          rows_per_byte_estimate, rows_per_file);
}

arrow::Result<std::vector<FoundFile>> ListFiles(const std::vector<std::string>& paths,
                                                std::shared_ptr<arrow::fs::FileSystem>* fs,
                                                const ListOptions& options) {
  ARROW_ASSIGN_OR_RAISE(auto files, ExpandPaths(paths, fs, options.extensions, options.operation,
                                                options.ignore_missing_paths));
  if (files.empty()) {
    if (options.ignore_missing_paths) {
      return arrow::Status::Invalid(options.operation,
                                    ": none of the given paths exist (ignore_missing_paths=True): '",
                                    paths.front(), "'", paths.size() > 1 ? " ..." : "");
    }
    std::string which;
    for (const auto& extension : options.extensions) which += (which.empty() ? "" : ", ") + ("*." + extension);
    return arrow::Status::IOError(options.operation, ": no files match ",
                                  which.empty() ? std::string("any name") : which, " under '",
                                  paths.front(), "'", paths.size() > 1 ? " ..." : "",
                                  " (hidden names starting with '.' or '_' are skipped)");
  }
  return files;
}

}  // namespace millstream
