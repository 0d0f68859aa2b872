#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <arrow/memory_pool.h>
#include <arrow/result.h>
#include <arrow/status.h>
#include <arrow/type_fwd.h>

#include "millstream/block.h"

namespace arrow::io {
class FileOutputStream;
}

namespace millstream {

class SpillFile;

/// \brief The directory one execution spills into: `<base>/millstream-spill-<pid>-<random>/`.
///
/// Created on the first `NewFile` (an execution that never spills touches no disk) and
/// removed, with every file in it, by the destructor, so the execution's end (success,
/// failure or cancel) leaves nothing behind. `Make` also removes the
/// `millstream-spill-<pid>-*` directories under `base` whose process is gone (left by a
/// process that was killed). Thread-safe.
class SpillDirectory {
 public:
  /// A spill directory under `base`; empty `base`: `$TMPDIR`, else `/tmp`.
  static arrow::Result<std::shared_ptr<SpillDirectory>> Make(std::string base = "");
  ~SpillDirectory();
  SpillDirectory(const SpillDirectory&) = delete;
  SpillDirectory& operator=(const SpillDirectory&) = delete;

  /// A new, empty spill file in the directory (created first if needed). The file must be
  /// finished before the directory is destroyed (which deletes it, finished or not).
  arrow::Result<std::unique_ptr<SpillFile>> NewFile();

  /// Bytes written to spill files so far (counted when each file is finished).
  int64_t bytes_spilled() const { return bytes_spilled_.load(std::memory_order_relaxed); }
  /// Spill files created so far.
  int64_t files() const { return files_.load(std::memory_order_relaxed); }
  /// The directory's path (it exists only once a file was made).
  const std::string& path() const { return path_; }

  /// The name prefix of every spill directory of process `pid`.
  static std::string Prefix(int64_t pid);

 private:
  friend class SpillFile;
  explicit SpillDirectory(std::string path) : path_(std::move(path)) {}
  void AddSpilled(int64_t bytes) { bytes_spilled_.fetch_add(bytes, std::memory_order_relaxed); }

  std::string path_;
  std::mutex mutex_;
  bool created_ = false;
  std::atomic<int64_t> bytes_spilled_{0}, files_{0};
};

/// \brief One spill file: record batches, each written as its own Arrow IPC stream
/// (schema, dictionaries, batch, end marker) with lz4_frame-compressed buffers (zstd when
/// lz4 is not built in), one after another; deleted by its destructor.
///
/// One stream per batch (rather than one IPC file) lets batches differ in schema and in
/// dictionaries (the IPC file format allows one dictionary per field for the whole file)
/// and still be read one by one: the offset of each is kept in memory.
///
/// Written once (`Write`... then `Finish`) by one thread; once finished, any number of
/// threads may read it at once, each read opening the file anew.
class SpillFile {
 public:
  ~SpillFile();
  SpillFile(const SpillFile&) = delete;
  SpillFile& operator=(const SpillFile&) = delete;

  /// Appends `batch`.
  arrow::Status Write(const arrow::RecordBatch& batch);
  /// Closes the file for writing; the file is then readable. A file with no batches
  /// reads as none.
  arrow::Status Finish();

  /// Every batch, in the order written.
  arrow::Result<std::vector<Block>> ReadAll(
      arrow::MemoryPool* pool = arrow::default_memory_pool()) const;
  /// Batches `begin` to `end - 1`, in order (only those are read from disk).
  arrow::Result<std::vector<Block>> ReadRange(
      int64_t begin, int64_t end, arrow::MemoryPool* pool = arrow::default_memory_pool()) const;

  /// Batches written.
  int64_t num_batches() const { return num_batches_; }
  /// Bytes on disk (known once finished).
  int64_t bytes() const { return bytes_; }
  const std::string& path() const { return path_; }

 private:
  friend class SpillDirectory;
  SpillFile(SpillDirectory* dir, std::string path) : dir_(dir), path_(std::move(path)) {}

  SpillDirectory* dir_;
  std::string path_;
  std::shared_ptr<arrow::io::FileOutputStream> out_;
  std::vector<int64_t> offsets_{0};  // where each batch's stream starts; back(): the end
  int64_t num_batches_ = 0;
  int64_t bytes_ = 0;
  bool finished_ = false;
};

}  // namespace millstream
