#include <fnmatch.h>

#include <algorithm>
#include <cctype>
#include <filesystem>

#include <arrow/filesystem/api.h>

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

std::vector<std::pair<std::string, std::string>> HivePartition(const FoundFile& file) {
  std::vector<std::pair<std::string, std::string>> keys;
  if (file.base_dir.empty() || file.path.compare(0, file.base_dir.size(), file.base_dir) != 0) {
    return keys;
  }
  std::string relative = file.path.substr(file.base_dir.size());
  auto last_slash = relative.find_last_of('/');
  if (last_slash == std::string::npos) return keys;
  std::string dirs = relative.substr(0, last_slash);
  size_t start = 0;
  while (start <= dirs.size()) {
    auto end = dirs.find('/', start);
    if (end == std::string::npos) end = dirs.size();
    std::string part = dirs.substr(start, end - start);
    auto eq = part.find('=');
    if (eq != std::string::npos && eq > 0) keys.emplace_back(part.substr(0, eq), part.substr(eq + 1));
    start = end + 1;
  }
  return keys;
}

std::string AbsoluteLocalPath(const std::string& path) {
  if (path.empty() || path[0] == '/' || path.find("://") != std::string::npos) return path;
  std::error_code error;
  auto absolute = std::filesystem::absolute(path, error);
  return error ? path : absolute.lexically_normal().string();
}

arrow::Result<std::vector<FoundFile>> ExpandPaths(const std::vector<std::string>& paths,
                                                  std::shared_ptr<arrow::fs::FileSystem>* fs,
                                                  const std::vector<std::string>& extensions) {
  if (paths.empty()) return arrow::Status::Invalid("no paths given");
  std::vector<FoundFile> files;
  for (const auto& given : paths) {
    std::string path;
    auto made = arrow::fs::FileSystemFromUriOrPath(AbsoluteLocalPath(given), &path);
    if (!made.ok()) {
      return arrow::Status::IOError("cannot open path '", given, "': ", made.status().message());
    }
    if (!*fs) *fs = *made;
    if (HasGlob(path)) {
      // List from the deepest directory without a wildcard, then match the rest.
      auto wildcard = path.find_first_of("*?[");
      auto dir_end = path.rfind('/', wildcard);
      std::string base = dir_end == std::string::npos ? "." : path.substr(0, dir_end);
      arrow::fs::FileSelector selector;
      selector.base_dir = base;
      selector.recursive = true;
      auto listed = (*made)->GetFileInfo(selector);
      if (!listed.ok()) {
        return arrow::Status::IOError("no such file or directory: '", given, "'");
      }
      size_t before = files.size();
      for (const auto& info : *listed) {
        if (info.IsFile() && !IsHidden(info.path()) && HasExtension(info.path(), extensions) &&
            fnmatch(path.c_str(), info.path().c_str(), FNM_PATHNAME) == 0) {
          files.push_back({info.path(), info.size(), base});
        }
      }
      if (files.size() == before) {
        return arrow::Status::IOError("no files match '", given, "'");
      }
      continue;
    }
    ARROW_ASSIGN_OR_RAISE(auto info, (*made)->GetFileInfo(path));
    if (info.type() == arrow::fs::FileType::NotFound) {
      return arrow::Status::IOError("no such file or directory: '", given, "'");
    }
    if (info.IsFile()) {
      files.push_back({info.path(), info.size(), ""});
      continue;
    }
    arrow::fs::FileSelector selector;
    selector.base_dir = path;
    selector.recursive = true;
    ARROW_ASSIGN_OR_RAISE(auto listed, (*made)->GetFileInfo(selector));
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
