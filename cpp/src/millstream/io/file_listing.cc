#include <fnmatch.h>

#include <algorithm>
#include <cctype>
#include <filesystem>

#include <arrow/filesystem/api.h>
#include <arrow/util/uri.h>
#include <arrow/util/utf8.h>

#include "io/filesystems.h"
#include "io/sources.h"

namespace millstream {
namespace {

bool IsHidden(const std::string& path) {
  auto slash = path.find_last_of('/');
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  return !base.empty() && (base[0] == '.' || base[0] == '_');
}

bool HasGlob(const std::string& path) { return path.find_first_of("*?[") != std::string::npos; }

bool HasExtension(const std::string& path, const std::vector<std::string>& extensions) {
  if (extensions.empty()) return true;
  auto lower = [](std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  std::string name = lower(path);
  for (const auto& extension : extensions) {
    std::string suffix = "." + lower(extension);
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      return true;
    }
  }
  return false;
}

}  // namespace

arrow::Result<std::string> HiveSegment(const std::string& name, const std::optional<std::string>& value) {
  if (name.empty()) return arrow::Status::Invalid("a partition column name must not be empty");
  std::string key = arrow::util::UriEscape(name);
  // Readers skip names starting with '.' or '_' as hidden: escape that character too.
  if (key[0] == '.' || key[0] == '_') key = (key[0] == '.' ? "%2E" : "%5F") + key.substr(1);
  std::string segment = key + "=" + (value ? arrow::util::UriEscape(*value) : kHiveNullValue);
  if (segment.size() > 255) {
    return arrow::Status::Invalid("partition column '", name, "': the directory name '",
                                  segment.substr(0, 60), "...' is ", segment.size(),
                                  " bytes, more than the 255 a file name may have");
  }
  return segment;
}

arrow::Result<std::vector<PartitionKey>> HivePartition(const FoundFile& file) {
  // Ray's rule: every key=value directory of the file's path, whether the file was named
  // or found in a listed directory (and above that directory too), so a list of a
  // partitioned dataset's files reads the same columns as its root directory.
  std::vector<PartitionKey> keys;
  auto last_slash = file.path.find_last_of('/');
  if (last_slash == std::string::npos) return keys;
  std::string dirs = file.path.substr(0, last_slash);
  size_t start = 0;
  while (start <= dirs.size()) {
    auto end = dirs.find('/', start);
    if (end == std::string::npos) end = dirs.size();
    std::string part = dirs.substr(start, end - start);
    auto eq = part.find('=');
    if (eq != std::string::npos && eq > 0) {
      PartitionKey key{arrow::util::UriUnescape(part.substr(0, eq)),
                       arrow::util::UriUnescape(part.substr(eq + 1))};
      if (!arrow::util::ValidateUTF8(key.name) || !arrow::util::ValidateUTF8(*key.value)) {
        return arrow::Status::Invalid("partition directory '", part, "' of '", file.path,
                                      "' is not valid UTF-8 once decoded");
      }
      if (*key.value == kHiveNullValue) key.value.reset();
      keys.push_back(std::move(key));
    }
    start = end + 1;
  }
  return keys;
}

arrow::Result<std::string> LocalPath(const std::string& given, std::string_view operation) {
  auto separator = given.find("://");
  if (separator == std::string::npos || separator == 0) return given;
  std::string scheme = given.substr(0, separator);
  bool is_scheme = std::isalpha(static_cast<unsigned char>(scheme[0])) &&
                   std::all_of(scheme.begin(), scheme.end(), [](unsigned char c) {
                     return std::isalnum(c) || c == '+' || c == '-' || c == '.';
                   });
  if (!is_scheme) return given;  // "a/b://c" is a relative path
  for (auto& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (scheme == "hdfs" || scheme == "viewfs") {
    return arrow::Status::NotImplemented(
        operation, ": '", given, "': the URI scheme '", scheme,
        "' is not supported: HDFS needs Hadoop's libhdfs and a cluster, which this build does not use; "
        "only local paths, file://, s3:// and gs:// URIs are");
  }
  if (scheme != "file") {
    return arrow::Status::NotImplemented(operation, ": '", given, "': the URI scheme '", scheme,
                                         "' is not supported; only local paths, file://, s3:// and gs:// URIs are");
  }
  arrow::util::Uri uri;
  bool parsed = uri.Parse(given).ok();
  if (parsed && (uri.host().empty() || uri.host() == "localhost") && !uri.path().empty()) {
    return uri.path();
  }
  std::string rest = given.substr(separator + 3);
  if (!parsed && !rest.empty() && rest[0] == '/') return rest;  // "file:///a b": as written
  return arrow::Status::Invalid(operation, ": '", given,
                                "' is not a local file URI; write file:///absolute/path");
}

std::string AbsoluteLocalPath(const std::string& path) {
  if (path.empty() || path[0] == '/' || path.find("://") != std::string::npos) return path;
  std::error_code error;
  auto absolute = std::filesystem::absolute(path, error);
  return error ? path : absolute.lexically_normal().string();
}

arrow::Result<std::vector<FoundFile>> ExpandPaths(const std::vector<std::string>& paths,
                                                  std::shared_ptr<arrow::fs::FileSystem>* fs,
                                                  const std::vector<std::string>& extensions,
                                                  const std::string& operation, bool ignore_missing) {
  if (paths.empty()) return arrow::Status::Invalid(operation, ": no paths given");
  std::vector<FoundFile> files;
  for (const auto& given : paths) {
    // Local paths and s3:// URIs (or paths on the filesystem given); another scheme fails
    // here, before any filesystem (and its network client) is made.
    ARROW_ASSIGN_OR_RAISE(std::string path, ResolvePath(given, fs, operation));
    const auto& local_fs = *fs;
    if (HasGlob(path)) {
      // List from the deepest directory without a wildcard, then match the rest.
      auto wildcard = path.find_first_of("*?[");
      auto dir_end = path.rfind('/', wildcard);
      std::string base = dir_end == std::string::npos ? "." : path.substr(0, dir_end);
      arrow::fs::FileSelector selector;
      selector.base_dir = base;
      selector.recursive = true;
      auto listed = local_fs->GetFileInfo(selector);
      if (!listed.ok()) {
        if (ignore_missing) continue;
        return arrow::Status::IOError("no such file or directory: '", given, "'");
      }
      size_t before = files.size();
      for (const auto& info : *listed) {
        if (info.IsFile() && !IsHidden(info.path()) && HasExtension(info.path(), extensions) &&
            fnmatch(path.c_str(), info.path().c_str(), FNM_PATHNAME) == 0) {
          files.push_back({info.path(), info.size(), base});
        }
      }
      if (files.size() == before && !ignore_missing) {
        return arrow::Status::IOError("no files match '", given, "'");
      }
      continue;
    }
    ARROW_ASSIGN_OR_RAISE(auto info, local_fs->GetFileInfo(path));
    if (info.type() == arrow::fs::FileType::NotFound) {
      if (ignore_missing) continue;
      return arrow::Status::IOError("no such file or directory: '", given, "'");
    }
    if (info.IsFile()) {
      files.push_back({info.path(), info.size(), ""});
      continue;
    }
    arrow::fs::FileSelector selector;
    selector.base_dir = path;
    selector.recursive = true;
    ARROW_ASSIGN_OR_RAISE(auto listed, local_fs->GetFileInfo(selector));
    std::vector<FoundFile> in_dir;
    for (const auto& entry : listed) {
      // Skip anything under a hidden directory too (temporary and metadata files).
      std::string relative = entry.path().substr(path.size());
      bool hidden = false;
      size_t start = 0;
      while (start < relative.size()) {
        auto end = relative.find('/', start);
        if (end == std::string::npos) end = relative.size();
        std::string part = relative.substr(start, end - start);
        if (!part.empty() && (part[0] == '.' || part[0] == '_')) hidden = true;
        start = end + 1;
      }
      if (entry.IsFile() && !hidden && HasExtension(entry.path(), extensions)) {
        in_dir.push_back({entry.path(), entry.size(), path});
      }
    }
    std::sort(in_dir.begin(), in_dir.end(),
              [](const FoundFile& a, const FoundFile& b) { return a.path < b.path; });
    files.insert(files.end(), in_dir.begin(), in_dir.end());
  }
  return files;
}

}  // namespace millstream
