#include "runtime/spill_file.h"

#include "runtime/counting_memory_pool.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <random>

#include <arrow/api.h>
#include <arrow/io/file.h>
#include <arrow/ipc/reader.h>
#include <arrow/ipc/writer.h>
#include <arrow/util/compression.h>

namespace millstream {

namespace fs = std::filesystem;

namespace {

bool ProcessAlive(int64_t pid) {
  if (pid <= 0) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

/// Removes `<base>/millstream-spill-<pid>-*` for every pid no longer alive.
void RemoveStale(const fs::path& base) {
  std::error_code ec;
  fs::directory_iterator it(base, ec);
  if (ec) return;
  const std::string prefix = "millstream-spill-";
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return;
    std::string name = it->path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    std::string rest = name.substr(prefix.size());
    size_t dash = rest.find('-');
    if (dash == 0 || dash == std::string::npos) continue;
    char* end = nullptr;
    int64_t pid = std::strtoll(rest.c_str(), &end, 10);
    if (end != rest.c_str() + dash) continue;
    if (pid == ::getpid() || ProcessAlive(pid)) continue;
    std::error_code remove_ec;
    fs::remove_all(it->path(), remove_ec);
  }
}

arrow::Result<std::shared_ptr<arrow::util::Codec>> SpillCodec() {
  using arrow::Compression;
  auto type = arrow::util::Codec::IsAvailable(Compression::LZ4_FRAME) ? Compression::LZ4_FRAME
                                                                      : Compression::ZSTD;
  ARROW_ASSIGN_OR_RAISE(auto codec, arrow::util::Codec::Create(type));
  return std::shared_ptr<arrow::util::Codec>(std::move(codec));
}

}  // namespace

std::string SpillDirectory::Prefix(int64_t pid) {
  return "millstream-spill-" + std::to_string(pid) + "-";
}

arrow::Result<std::shared_ptr<SpillDirectory>> SpillDirectory::Make(std::string base) {
  if (base.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    base = (tmp != nullptr && *tmp != '\0') ? tmp : "/tmp";
  }
  RemoveStale(base);
  std::random_device rd;
  uint64_t r = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  char suffix[17];
  std::snprintf(suffix, sizeof(suffix), "%016llx", static_cast<unsigned long long>(r));
  fs::path path = fs::path(base) / (Prefix(::getpid()) + suffix);
  return std::shared_ptr<SpillDirectory>(new SpillDirectory(path.string()));
}

SpillDirectory::~SpillDirectory() {
  std::error_code ec;
  if (created_) fs::remove_all(path_, ec);
}

arrow::Result<std::unique_ptr<SpillFile>> SpillDirectory::NewFile() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!created_) {
      std::error_code ec;
      fs::create_directories(path_, ec);
      if (ec) {
        return arrow::Status::IOError("cannot create spill directory '", path_,
                                      "': ", ec.message());
      }
      created_ = true;
    }
  }
  int64_t n = files_.fetch_add(1, std::memory_order_relaxed);
  std::string path = (fs::path(path_) / ("spill-" + std::to_string(n) + ".arrow")).string();
  return std::unique_ptr<SpillFile>(new SpillFile(this, std::move(path)));
}

SpillFile::~SpillFile() {
  if (out_ != nullptr && !out_->closed()) (void)out_->Close();
  std::error_code ec;
  fs::remove(path_, ec);
}

arrow::Status SpillFile::Write(const arrow::RecordBatch& batch) {
  if (finished_) return arrow::Status::Invalid("spill file '", path_, "' is finished");
  if (out_ == nullptr) {
    ARROW_ASSIGN_OR_RAISE(out_, arrow::io::FileOutputStream::Open(path_));
  }
  auto options = arrow::ipc::IpcWriteOptions::Defaults();
  ARROW_ASSIGN_OR_RAISE(options.codec, SpillCodec());
  options.use_threads = false;  // already on a worker thread
  options.memory_pool = EngineMemoryPool();  // the compressed body's buffers
  // The raw-pointer sink is not closed by the writer: the next batch's stream follows.
  ARROW_ASSIGN_OR_RAISE(auto writer, arrow::ipc::MakeStreamWriter(out_.get(), batch.schema(), options));
  ARROW_RETURN_NOT_OK(writer->WriteRecordBatch(batch));
  ARROW_RETURN_NOT_OK(writer->Close());
  ARROW_ASSIGN_OR_RAISE(int64_t end, out_->Tell());
  offsets_.push_back(end);
  ++num_batches_;
  return arrow::Status::OK();
}

arrow::Status SpillFile::Finish() {
  if (finished_) return arrow::Status::OK();
  finished_ = true;
  if (out_ == nullptr) return arrow::Status::OK();
  bytes_ = offsets_.back();
  ARROW_RETURN_NOT_OK(out_->Close());
  out_.reset();
  dir_->AddSpilled(bytes_);
  return arrow::Status::OK();
}

arrow::Result<std::vector<Block>> SpillFile::ReadAll(arrow::MemoryPool* pool) const {
  return ReadRange(0, num_batches_, pool);
}

arrow::Result<std::vector<Block>> SpillFile::ReadRange(int64_t begin, int64_t end,
                                                       arrow::MemoryPool* pool) const {
  if (!finished_) return arrow::Status::Invalid("spill file '", path_, "' is not finished");
  if (begin < 0 || end > num_batches_ || begin > end) {
    return arrow::Status::IndexError("batches ", begin, "..", end, " of spill file '", path_,
                                     "' with ", num_batches_);
  }
  std::vector<Block> out;
  if (begin == end) return out;
  ARROW_ASSIGN_OR_RAISE(auto file, arrow::io::ReadableFile::Open(path_, pool));
  auto options = arrow::ipc::IpcReadOptions::Defaults();
  options.memory_pool = pool;
  options.use_threads = false;
  out.reserve(end - begin);
  for (int64_t i = begin; i < end; ++i) {
    ARROW_ASSIGN_OR_RAISE(auto stream, arrow::io::RandomAccessFile::GetStream(
                                           file, offsets_[i], offsets_[i + 1] - offsets_[i]));
    ARROW_ASSIGN_OR_RAISE(auto reader, arrow::ipc::RecordBatchStreamReader::Open(stream, options));
    std::shared_ptr<arrow::RecordBatch> batch;
    ARROW_RETURN_NOT_OK(reader->ReadNext(&batch));
    if (batch == nullptr) {
      return arrow::Status::IOError("spill file '", path_, "' lost batch ", i);
    }
    out.push_back(std::move(batch));
  }
  ARROW_RETURN_NOT_OK(file->Close());
  return out;
}

}  // namespace millstream
