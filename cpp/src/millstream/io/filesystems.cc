#include "io/filesystems.h"

#include <cctype>
#include <cstdlib>
#include <map>
#include <mutex>

#include <arrow/filesystem/localfs.h>
#include <arrow/filesystem/s3fs.h>

#include "io/sources.h"
#include "millstream/dataset.h"

namespace millstream {
namespace {

std::mutex g_s3_mutex;
std::map<std::string, std::shared_ptr<arrow::fs::FileSystem>>* g_s3_filesystems = nullptr;

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
  ARROW_ASSIGN_OR_RAISE(auto fs, arrow::fs::S3FileSystem::Make(options));
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

arrow::Result<std::string> ResolvePath(const std::string& given, std::shared_ptr<arrow::fs::FileSystem>* fs,
                                       std::string_view operation) {
  std::string scheme = Scheme(given);
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
  if (!*fs) *fs = std::make_shared<arrow::fs::LocalFileSystem>();
  return AbsoluteLocalPath(local);
}

}  // namespace millstream
