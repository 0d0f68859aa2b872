// An arrow::fs::FileSystem over a Python fsspec filesystem, calling it under the GIL (what
// pyarrow's PyFileSystem(FSSpecHandler(fs)) does, without linking pyarrow's Cython ABI).

#include "py_fsspec_filesystem.h"

#include <arrow/buffer.h>
#include <arrow/io/memory.h>

#include <algorithm>
#include <cstring>

namespace py = pybind11;

namespace millstream::python {
namespace {

namespace fs = arrow::fs;

/// The Python error being handled as an IOError naming the call and path.
arrow::Status FromPython(const py::error_already_set& e, const char* call, const std::string& path) {
  return arrow::Status::IOError("fsspec ", call, "('", path, "'): ", e.what());
}

/// Holds a Python object; drops it under the GIL (never after the interpreter is gone).
struct PyRef {
  explicit PyRef(py::object o) : object(std::move(o)) {}
  ~PyRef() {
    if (!Py_IsInitialized()) {
      object.release();
      return;
    }
    py::gil_scoped_acquire gil;
    object = py::object();
  }
  py::object object;
};

/// A file read by ranges (`cat_file(path, start, end)`); its size from the listing or `info`.
class PyInputFile : public arrow::io::RandomAccessFile {
 public:
  PyInputFile(std::shared_ptr<PyRef> fs, std::string path, int64_t size)
      : fs_(std::move(fs)), path_(std::move(path)), size_(size) {}

  arrow::Status Close() override {
    closed_ = true;
    return arrow::Status::OK();
  }
  bool closed() const override { return closed_; }
  arrow::Result<int64_t> Tell() const override { return position_; }
  arrow::Status Seek(int64_t position) override {
    position_ = position;
    return arrow::Status::OK();
  }
  arrow::Result<int64_t> GetSize() override { return size_; }

  arrow::Result<int64_t> Read(int64_t nbytes, void* out) override {
    ARROW_ASSIGN_OR_RAISE(auto n, ReadAt(position_, nbytes, out));
    position_ += n;
    return n;
  }
  arrow::Result<std::shared_ptr<arrow::Buffer>> Read(int64_t nbytes) override {
    ARROW_ASSIGN_OR_RAISE(auto buffer, ReadAt(position_, nbytes));
    position_ += buffer->size();
    return buffer;
  }
  arrow::Result<int64_t> ReadAt(int64_t position, int64_t nbytes, void* out) override {
    ARROW_ASSIGN_OR_RAISE(auto buffer, ReadAt(position, nbytes));
    // An empty read's buffer has no data pointer, and memcpy takes none even for 0 bytes.
    if (buffer->size() > 0) std::memcpy(out, buffer->data(), static_cast<size_t>(buffer->size()));
    return buffer->size();
  }
  arrow::Result<std::shared_ptr<arrow::Buffer>> ReadAt(int64_t position, int64_t nbytes) override {
    if (closed_) return arrow::Status::Invalid("'", path_, "' is closed");
    int64_t end = std::min(size_, position + nbytes);
    if (position >= end) return std::make_shared<arrow::Buffer>(nullptr, 0);
    py::gil_scoped_acquire gil;
    try {
      py::bytes data = fs_->object.attr("cat_file")(path_, position, end);
      std::string_view view = data;
      ARROW_ASSIGN_OR_RAISE(auto buffer, arrow::AllocateBuffer(static_cast<int64_t>(view.size())));
      if (!view.empty()) std::memcpy(buffer->mutable_data(), view.data(), view.size());
      return std::shared_ptr<arrow::Buffer>(std::move(buffer));
    } catch (const py::error_already_set& e) {
      return FromPython(e, "cat_file", path_);
    }
  }

 private:
  std::shared_ptr<PyRef> fs_;
  std::string path_;
  int64_t size_;
  int64_t position_ = 0;
  bool closed_ = false;
};

/// A file written into memory and stored whole by `pipe_file` on Close: it appears only
/// when complete; Abort stores nothing.
class PyOutputFile : public arrow::io::OutputStream {
 public:
  PyOutputFile(std::shared_ptr<PyRef> fs, std::string path, std::shared_ptr<arrow::io::BufferOutputStream> buffer)
      : fs_(std::move(fs)), path_(std::move(path)), buffer_(std::move(buffer)) {}

  arrow::Status Write(const void* data, int64_t nbytes) override { return buffer_->Write(data, nbytes); }
  arrow::Result<int64_t> Tell() const override { return buffer_->Tell(); }
  bool closed() const override { return closed_; }
  arrow::Status Abort() override {
    closed_ = true;
    buffer_.reset();
    return arrow::Status::OK();
  }
  arrow::Status Close() override {
    if (closed_) return arrow::Status::OK();
    closed_ = true;
    ARROW_ASSIGN_OR_RAISE(auto contents, buffer_->Finish());
    buffer_.reset();
    py::gil_scoped_acquire gil;
    try {
      // A local fsspec filesystem does not make the parent directories of a file itself.
      if (auto slash = path_.rfind('/'); slash != std::string::npos && slash > 0) {
        fs_->object.attr("makedirs")(path_.substr(0, slash), py::arg("exist_ok") = true);
      }
      fs_->object.attr("pipe_file")(path_, py::bytes(reinterpret_cast<const char*>(contents->data()),
                                                     static_cast<size_t>(contents->size())));
    } catch (const py::error_already_set& e) {
      return FromPython(e, "pipe_file", path_);
    }
    return arrow::Status::OK();
  }

 private:
  std::shared_ptr<PyRef> fs_;
  std::string path_;
  std::shared_ptr<arrow::io::BufferOutputStream> buffer_;
  bool closed_ = false;
};

class PyFsspecFileSystem : public fs::FileSystem {
 public:
  explicit PyFsspecFileSystem(py::object fs) : fs_(std::make_shared<PyRef>(std::move(fs))) {}

  std::string type_name() const override { return "fsspec"; }
  bool Equals(const fs::FileSystem& other) const override {
    if (other.type_name() != type_name()) return false;
    return static_cast<const PyFsspecFileSystem&>(other).fs_ == fs_;
  }

  arrow::Result<fs::FileInfo> GetFileInfo(const std::string& path) override {
    py::gil_scoped_acquire gil;
    try {
      if (!fs_->object.attr("exists")(path).cast<bool>()) return fs::FileInfo(path, fs::FileType::NotFound);
      return Info(path, fs_->object.attr("info")(path));
    } catch (const py::error_already_set& e) {
      return FromPython(e, "info", path);
    }
  }

  arrow::Result<fs::FileInfoVector> GetFileInfo(const fs::FileSelector& select) override {
    py::gil_scoped_acquire gil;
    try {
      py::object f = fs_->object;
      if (!f.attr("exists")(select.base_dir).cast<bool>()) {
        if (select.allow_not_found) return fs::FileInfoVector{};
        return arrow::Status::IOError("'", select.base_dir, "' does not exist");
      }
      py::dict found = select.recursive
                           ? f.attr("find")(select.base_dir, py::arg("withdirs") = true, py::arg("detail") = true)
                           : f.attr("find")(select.base_dir, py::arg("maxdepth") = 1, py::arg("withdirs") = true,
                                            py::arg("detail") = true);
      std::string base = select.base_dir;
      while (base.size() > 1 && base.back() == '/') base.pop_back();
      fs::FileInfoVector out;
      for (auto item : found) {
        auto name = item.first.cast<std::string>();
        std::string trimmed = name;
        while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
        if (trimmed == base) continue;  // the directory itself
        out.push_back(Info(trimmed, py::reinterpret_borrow<py::object>(item.second)));
      }
      return out;
    } catch (const py::error_already_set& e) {
      return FromPython(e, "find", select.base_dir);
    }
  }

  arrow::Status CreateDir(const std::string& path, bool recursive) override {
    return Call("makedirs", path, [&](py::object f) { f.attr("makedirs")(path, py::arg("exist_ok") = true); });
  }
  arrow::Status DeleteDir(const std::string& path) override {
    return Call("rm", path, [&](py::object f) { f.attr("rm")(path, py::arg("recursive") = true); });
  }
  arrow::Status DeleteDirContents(const std::string& path, bool missing_dir_ok) override {
    return Call("rm", path, [&](py::object f) {
      if (!f.attr("exists")(path).cast<bool>()) {
        if (missing_dir_ok) return;
        throw py::value_error("'" + path + "' does not exist");
      }
      for (auto child : f.attr("ls")(path, py::arg("detail") = false)) {
        f.attr("rm")(child, py::arg("recursive") = true);
      }
    });
  }
  arrow::Status DeleteRootDirContents() override {
    return arrow::Status::NotImplemented("fsspec: deleting the root's contents is refused");
  }
  arrow::Status DeleteFile(const std::string& path) override {
    return Call("rm_file", path, [&](py::object f) { f.attr("rm_file")(path); });
  }
  arrow::Status Move(const std::string& src, const std::string& dest) override {
    return Call("mv", src, [&](py::object f) { f.attr("mv")(src, dest); });
  }
  arrow::Status CopyFile(const std::string& src, const std::string& dest) override {
    return Call("copy", src, [&](py::object f) { f.attr("copy")(src, dest); });
  }

  arrow::Result<std::shared_ptr<arrow::io::InputStream>> OpenInputStream(const std::string& path) override {
    ARROW_ASSIGN_OR_RAISE(auto file, OpenInputFile(path));
    return file;
  }
  arrow::Result<std::shared_ptr<arrow::io::RandomAccessFile>> OpenInputFile(const std::string& path) override {
    ARROW_ASSIGN_OR_RAISE(auto info, GetFileInfo(path));
    return OpenInputFile(info);
  }
  arrow::Result<std::shared_ptr<arrow::io::RandomAccessFile>> OpenInputFile(const fs::FileInfo& info) override {
    if (info.type() == fs::FileType::NotFound) {
      return arrow::Status::IOError("'", info.path(), "' does not exist");
    }
    if (info.type() != fs::FileType::File) return arrow::Status::IOError("'", info.path(), "' is not a file");
    int64_t size = info.size();
    if (size < 0) {
      ARROW_ASSIGN_OR_RAISE(auto full, GetFileInfo(info.path()));
      size = full.size();
    }
    return std::make_shared<PyInputFile>(fs_, info.path(), size);
  }
  arrow::Result<std::shared_ptr<arrow::io::OutputStream>> OpenOutputStream(
      const std::string& path, const std::shared_ptr<const arrow::KeyValueMetadata>&) override {
    ARROW_ASSIGN_OR_RAISE(auto buffer, arrow::io::BufferOutputStream::Create());
    return std::make_shared<PyOutputFile>(fs_, path, std::move(buffer));
  }
  arrow::Result<std::shared_ptr<arrow::io::OutputStream>> OpenAppendStream(
      const std::string& path, const std::shared_ptr<const arrow::KeyValueMetadata>&) override {
    return arrow::Status::NotImplemented("fsspec: appending to '", path, "' is not supported");
  }

 private:
  static fs::FileInfo Info(const std::string& path, const py::object& info) {
    auto kind = info["type"].cast<std::string>();
    fs::FileInfo out(path, kind == "directory" ? fs::FileType::Directory : fs::FileType::File);
    if (kind != "directory") {
      py::object size = info.attr("get")("size");
      out.set_size(size.is_none() ? -1 : size.cast<int64_t>());
    }
    return out;
  }

  template <typename Fn>
  arrow::Status Call(const char* call, const std::string& path, Fn&& fn) {
    py::gil_scoped_acquire gil;
    try {
      fn(fs_->object);
    } catch (const py::error_already_set& e) {
      return FromPython(e, call, path);
    }
    return arrow::Status::OK();
  }

  std::shared_ptr<PyRef> fs_;
};

}  // namespace

std::shared_ptr<arrow::fs::FileSystem> MakeFsspecFileSystem(py::object fs) {
  return std::make_shared<PyFsspecFileSystem>(std::move(fs));
}

}  // namespace millstream::python
