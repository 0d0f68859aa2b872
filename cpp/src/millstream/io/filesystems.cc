#include "io/filesystems.h"

#include <cctype>
#include <cstdlib>
#include <map>
#include <mutex>

#include <arrow/filesystem/localfs.h>
#include <arrow/filesystem/s3fs.h>

#include "io/sources.h"
#include "runtime/counting_memory_pool.h"
#include "millstream/dataset.h"

namespace millstream {
namespace {

std::mutex g_s3_mutex;
std::map<std::string, std::shared_ptr<arrow::fs::FileSystem>>* g_s3_filesystems = nullptr;

/// IO through the engine's pool: file and object reads allocate their buffers there.
arrow::io::IOContext EngineIOContext() { return arrow::io::IOContext(EngineMemoryPool()); }

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

/// A key telling S3 options apart (credentials included).
std::string OptionsKey(const arrow::fs::S3Options& o) {
  return o.region + "\n" + o.endpoint_override + "\n" + o.scheme + "\n" + o.GetAccessKey() + "\n" +
         o.GetSecretKey() + "\n" + o.GetSessionToken() + "\n" +
         std::to_string(static_cast<int>(o.credentials_kind)) + "\n" + o.role_arn + "\n" +
         std::to_string(o.force_virtual_addressing) + std::to_string(o.allow_bucket_creation) +
         std::to_string(o.allow_bucket_deletion) + std::to_string(o.background_writes) + "\n" +
         std::to_string(o.connect_timeout) + "\n" + std::to_string(o.request_timeout);
}

std::string Scheme(const std::string& given) {
  auto separator = given.find("://");
  if (separator == std::string::npos || separator == 0) return "";
  std::string scheme = given.substr(0, separator);
  for (unsigned char c : scheme) {
    if (!std::isalnum(c) && c != '+' && c != '-' && c != '.') return "";
  }
  if (!std::isalpha(static_cast<unsigned char>(scheme[0]))) return "";
  for (auto& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return scheme;
}

}  // namespace

std::shared_ptr<arrow::fs::FileSystem> MakeLocalFileSystem() {
  return std::make_shared<arrow::fs::LocalFileSystem>(arrow::fs::LocalFileSystemOptions::Defaults(),
                                                      EngineIOContext());
}

bool IsLocal(const arrow::fs::FileSystem& fs) { return fs.type_name() == "local"; }

arrow::Status InitializeS3() {
  std::lock_guard<std::mutex> lock(g_s3_mutex);
  if (arrow::fs::IsS3Finalized()) {
    return arrow::Status::Invalid("S3 is finalized (the interpreter is exiting)");
  }
  return arrow::fs::EnsureS3Initialized();
}

arrow::Result<arrow::fs::S3Options> S3OptionsFromEnvironment() {
  ARROW_RETURN_NOT_OK(InitializeS3());
  auto options = arrow::fs::S3Options::Defaults();
  std::string region = Env("AWS_REGION");
  if (region.empty()) region = Env("AWS_DEFAULT_REGION");
  options.region = region.empty() ? "us-east-1" : region;
  std::string endpoint = Env("AWS_ENDPOINT_URL_S3");
  if (endpoint.empty()) endpoint = Env("AWS_ENDPOINT_URL");
  if (!endpoint.empty()) {
    auto separator = endpoint.find("://");
    if (separator != std::string::npos) {
      options.scheme = endpoint.substr(0, separator);
      endpoint = endpoint.substr(separator + 3);
    }
    while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
    options.endpoint_override = endpoint;
  }
  return options;
}

arrow::Result<std::shared_ptr<arrow::fs::FileSystem>> MakeS3FileSystem(const arrow::fs::S3Options& options) {
  std::lock_guard<std::mutex> lock(g_s3_mutex);
  if (arrow::fs::IsS3Finalized()) {
    return arrow::Status::Invalid("S3 is finalized (the interpreter is exiting)");
  }
  ARROW_RETURN_NOT_OK(arrow::fs::EnsureS3Initialized());
  if (!g_s3_filesystems) g_s3_filesystems = new std::map<std::string, std::shared_ptr<arrow::fs::FileSystem>>();
  auto key = OptionsKey(options);
  auto found = g_s3_filesystems->find(key);
  if (found != g_s3_filesystems->end()) return found->second;
  ARROW_ASSIGN_OR_RAISE(auto fs, arrow::fs::S3FileSystem::Make(options, EngineIOContext()));
  (*g_s3_filesystems)[key] = fs;
  return fs;
}

arrow::Result<bool> PrepareWriteDirectoryOn(const std::shared_ptr<arrow::fs::FileSystem>& fs,
                                            const std::string& directory, SaveMode mode,
                                            std::string_view operation) {
  if (!fs || IsLocal(*fs)) return PrepareWriteDirectory(directory, mode, operation);
  ARROW_ASSIGN_OR_RAISE(auto info, fs->GetFileInfo(directory));
  if (info.type() == arrow::fs::FileType::File) {
    return arrow::Status::IOError(operation, ": '", directory, "' is an object; give a prefix (a directory)");
  }
  if (info.type() == arrow::fs::FileType::Directory) {
    switch (mode) {
      case SaveMode::kAppend:
        break;
      case SaveMode::kError:
        return arrow::Status::Invalid(operation, ": '", directory, "' already exists (mode='error')");
      case SaveMode::kIgnore:
        return false;
      case SaveMode::kOverwrite:
        if (directory.find('/') == std::string::npos) {
          return arrow::Status::Invalid(operation, ": mode='overwrite' of a whole bucket ('", directory,
                                        "') is refused; write under a prefix");
        }
        ARROW_RETURN_NOT_OK(fs->DeleteDirContents(directory, /*missing_dir_ok=*/true));
        break;
    }
  }
  // No directory marker: an object store has none to make (Ray's s3_try_create_dir is
  // False), and the bucket must exist already.
  return true;
}

void FinalizeFileSystems() {
  std::lock_guard<std::mutex> lock(g_s3_mutex);
  if (!arrow::fs::IsS3Initialized() || arrow::fs::IsS3Finalized()) return;
  // Filesystems still referenced elsewhere fail their calls from now on.
  if (g_s3_filesystems) g_s3_filesystems->clear();
  (void)arrow::fs::FinalizeS3();
}

arrow::fs::GcsOptions GcsOptionsFromEnvironment() {
  const char* emulator = std::getenv("STORAGE_EMULATOR_HOST");
  if (!emulator || !*emulator) return arrow::fs::GcsOptions::Defaults();
  auto options = arrow::fs::GcsOptions::Anonymous();
  std::string endpoint = emulator;
  auto separator = endpoint.find("://");
  options.scheme = separator == std::string::npos ? "http" : endpoint.substr(0, separator);
  options.endpoint_override = separator == std::string::npos ? endpoint : endpoint.substr(separator + 3);
  while (!options.endpoint_override.empty() && options.endpoint_override.back() == '/') {
    options.endpoint_override.pop_back();
  }
  return options;
}

namespace {

/// A GCS upload under a hidden name (`.tmp-<name>` beside it), moved to its name when
/// closed: Arrow's GCS stream finalizes the object even when aborted, so an upload under
/// the final name would leave a partial object after a failure. Abort deletes it.
class RenamedUpload : public arrow::io::OutputStream {
 public:
  RenamedUpload(std::shared_ptr<arrow::fs::FileSystem> fs, std::shared_ptr<arrow::io::OutputStream> out,
                std::string temp, std::string final_path)
      : fs_(std::move(fs)), out_(std::move(out)), temp_(std::move(temp)), final_(std::move(final_path)) {}
  arrow::Status Write(const void* data, int64_t nbytes) override { return out_->Write(data, nbytes); }
  arrow::Status Write(const std::shared_ptr<arrow::Buffer>& data) override { return out_->Write(data); }
  arrow::Status Flush() override { return out_->Flush(); }
  arrow::Result<int64_t> Tell() const override { return out_->Tell(); }
  bool closed() const override { return done_; }
  arrow::Status Close() override {
    if (done_) return arrow::Status::OK();
    done_ = true;
    ARROW_RETURN_NOT_OK(out_->Close());
    return fs_->Move(temp_, final_);
  }
  arrow::Status Abort() override {
    if (done_) return arrow::Status::OK();
    done_ = true;
    (void)out_->Abort();
    return fs_->DeleteFile(temp_);
  }

 private:
  std::shared_ptr<arrow::fs::FileSystem> fs_;
  std::shared_ptr<arrow::io::OutputStream> out_;
  std::string temp_, final_;
  bool done_ = false;
};

/// Arrow's GCS filesystem with uploads that appear only when complete (RenamedUpload).
class AtomicGcsFileSystem : public arrow::fs::FileSystem {
 public:
  explicit AtomicGcsFileSystem(std::shared_ptr<arrow::fs::FileSystem> inner) : inner_(std::move(inner)) {}
  std::string type_name() const override { return inner_->type_name(); }
  bool Equals(const arrow::fs::FileSystem& other) const override { return this == &other; }
  arrow::Result<arrow::fs::FileInfo> GetFileInfo(const std::string& path) override {
    return inner_->GetFileInfo(path);
  }
  arrow::Result<arrow::fs::FileInfoVector> GetFileInfo(const arrow::fs::FileSelector& select) override {
    return inner_->GetFileInfo(select);
  }
  arrow::Status CreateDir(const std::string& path, bool recursive) override {
    return inner_->CreateDir(path, recursive);
  }
  arrow::Status DeleteDir(const std::string& path) override { return inner_->DeleteDir(path); }
  arrow::Status DeleteDirContents(const std::string& path, bool missing_dir_ok) override {
    return inner_->DeleteDirContents(path, missing_dir_ok);
  }
  arrow::Status DeleteRootDirContents() override { return inner_->DeleteRootDirContents(); }
  arrow::Status DeleteFile(const std::string& path) override { return inner_->DeleteFile(path); }
  arrow::Status Move(const std::string& src, const std::string& dest) override { return inner_->Move(src, dest); }
  arrow::Status CopyFile(const std::string& src, const std::string& dest) override {
    return inner_->CopyFile(src, dest);
  }
  arrow::Result<std::shared_ptr<arrow::io::InputStream>> OpenInputStream(const std::string& path) override {
    return inner_->OpenInputStream(path);
  }
  arrow::Result<std::shared_ptr<arrow::io::InputStream>> OpenInputStream(const arrow::fs::FileInfo& info) override {
    return inner_->OpenInputStream(info);
  }
  arrow::Result<std::shared_ptr<arrow::io::RandomAccessFile>> OpenInputFile(const std::string& path) override {
    return inner_->OpenInputFile(path);
  }
  arrow::Result<std::shared_ptr<arrow::io::RandomAccessFile>> OpenInputFile(
      const arrow::fs::FileInfo& info) override {
    return inner_->OpenInputFile(info);
  }
  arrow::Result<std::shared_ptr<arrow::io::OutputStream>> OpenOutputStream(
      const std::string& path, const std::shared_ptr<const arrow::KeyValueMetadata>& metadata) override {
    auto slash = path.rfind('/');
    std::string temp = slash == std::string::npos ? ".tmp-" + path
                                                  : path.substr(0, slash + 1) + ".tmp-" + path.substr(slash + 1);
    ARROW_ASSIGN_OR_RAISE(auto out, inner_->OpenOutputStream(temp, metadata));
    return std::make_shared<RenamedUpload>(inner_, std::move(out), std::move(temp), path);
  }
  arrow::Result<std::shared_ptr<arrow::io::OutputStream>> OpenAppendStream(
      const std::string& path, const std::shared_ptr<const arrow::KeyValueMetadata>& metadata) override {
    return inner_->OpenAppendStream(path, metadata);
  }

 private:
  std::shared_ptr<arrow::fs::FileSystem> inner_;
};

}  // namespace

arrow::Result<std::shared_ptr<arrow::fs::FileSystem>> MakeGcsFileSystem(const arrow::fs::GcsOptions& options) {
  ARROW_ASSIGN_OR_RAISE(auto fs, arrow::fs::GcsFileSystem::Make(options, EngineIOContext()));
  return std::make_shared<AtomicGcsFileSystem>(std::move(fs));
}

arrow::Result<std::string> ResolvePath(const std::string& given, std::shared_ptr<arrow::fs::FileSystem>* fs,
                                       std::string_view operation) {
  std::string scheme = Scheme(given);
  if (scheme == "gs" || scheme == "gcs") {
    if (*fs && (*fs)->type_name() != "gcs") {
      return arrow::Status::Invalid(operation, ": '", given, "' is a GCS URI but the filesystem is ",
                                    (*fs)->type_name());
    }
    std::string rest = given.substr(scheme.size() + 3);
    if (!*fs) {
      ARROW_ASSIGN_OR_RAISE(*fs, MakeGcsFileSystem(GcsOptionsFromEnvironment()));
    }
    while (!rest.empty() && rest.back() == '/') rest.pop_back();
    if (rest.empty() || rest[0] == '/') {
      return arrow::Status::Invalid(operation, ": '", given, "' names no bucket; write gs://bucket/key");
    }
    return rest;
  }
  if (scheme == "s3") {
    if (*fs && (*fs)->type_name() != "s3") {
      return arrow::Status::Invalid(operation, ": '", given, "' is an S3 URI but the filesystem is ",
                                    (*fs)->type_name());
    }
    std::string rest = given.substr(5);
    bool anonymous = rest.rfind("anonymous@", 0) == 0;
    if (anonymous) rest = rest.substr(10);
    if (!*fs) {
      ARROW_ASSIGN_OR_RAISE(auto options, S3OptionsFromEnvironment());
      if (anonymous) options.ConfigureAnonymousCredentials();
      ARROW_ASSIGN_OR_RAISE(*fs, MakeS3FileSystem(options));
    }
    while (!rest.empty() && rest.back() == '/') rest.pop_back();
    if (rest.empty() || rest[0] == '/') {
      return arrow::Status::Invalid(operation, ": '", given, "' names no bucket; write s3://bucket/key");
    }
    return rest;
  }
  if (!scheme.empty() && scheme != "file") {
    // LocalPath says what is not supported, before any client is made.
    return LocalPath(given, operation);
  }
  if (*fs && !IsLocal(**fs)) {
    if (!scheme.empty()) {
      return arrow::Status::Invalid(operation, ": '", given, "' is a local URI but the filesystem is ",
                                    (*fs)->type_name());
    }
    std::string path = given;
    // An object store's paths are bucket/key; an fsspec filesystem's are its own.
    while ((*fs)->type_name() != "fsspec" && !path.empty() && path.front() == '/') path.erase(0, 1);
    while (!path.empty() && path.back() == '/') path.pop_back();
    return path;  // bucket/key on the filesystem given
  }
  ARROW_ASSIGN_OR_RAISE(auto local, LocalPath(given, operation));
  if (!*fs) *fs = MakeLocalFileSystem();
  return AbsoluteLocalPath(local);
}

}  // namespace millstream
