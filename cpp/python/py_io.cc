// The file readers' binding: listing files, and Datasets reading CSV, JSON, text and
// binary files, with pyarrow's reader options given as plain dicts by read_api.py.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <arrow/api.h>
#include <arrow/c/bridge.h>
#include <arrow/compute/expression.h>
#include <arrow/filesystem/api.h>
#include <arrow/util/value_parsing.h>

#include "io/file_datasource.h"
#include "io/filesystems.h"
#include "plan/logical_operator.h"
#include "millstream/millstream.h"
#include "py_fsspec_filesystem.h"
#include "py_interop.h"

namespace py = pybind11;

namespace millstream::python {
namespace {

bool Has(const py::dict& d, const char* key) { return d.contains(key) && !d[key].is_none(); }

/// A filesystem from read_api's spec: None (from each path), {"kind": "local"}, or
/// {"kind": "s3", ...pyarrow.fs.S3FileSystem's constructor arguments}, or
/// {"kind": "fsspec", "fs": an fsspec filesystem}.
std::shared_ptr<arrow::fs::FileSystem> FileSystemFromSpec(const py::object& spec) {
  if (spec.is_none()) return nullptr;
  auto d = spec.cast<py::dict>();
  auto kind = d["kind"].cast<std::string>();
  if (kind == "local") return MakeLocalFileSystem();
  if (kind == "fsspec") return MakeFsspecFileSystem(d["fs"]);
  if (kind == "gcs") {
    // pyarrow.fs.GcsFileSystem's constructor arguments (what it pickles).
    auto text = [&](const char* key) { return Has(d, key) ? d[key].cast<std::string>() : std::string(); };
    arrow::fs::GcsOptions options = arrow::fs::GcsOptions::Defaults();
    if (Has(d, "anonymous") && d["anonymous"].cast<bool>()) {
      options = arrow::fs::GcsOptions::Anonymous();
    } else if (!text("access_token").empty()) {
      auto expiration = d["credential_token_expiration"];
      double seconds = expiration.attr("timestamp")().cast<double>();
      options = arrow::fs::GcsOptions::FromAccessToken(
          text("access_token"), arrow::fs::TimePoint(std::chrono::duration_cast<arrow::fs::TimePoint::duration>(
                                    std::chrono::duration<double>(seconds))));
    }
    if (!text("target_service_account").empty()) {
      options = arrow::fs::GcsOptions::FromImpersonatedServiceAccount(options.credentials,
                                                                      text("target_service_account"));
    }
    if (!text("scheme").empty()) options.scheme = text("scheme");
    if (!text("endpoint_override").empty()) options.endpoint_override = text("endpoint_override");
    if (!text("default_bucket_location").empty()) options.default_bucket_location = text("default_bucket_location");
    if (Has(d, "retry_time_limit")) {
      options.retry_limit_seconds = d["retry_time_limit"].attr("total_seconds")().cast<double>();
    }
    if (!text("project_id").empty()) options.project_id = text("project_id");
    arrow::Result<std::shared_ptr<arrow::fs::FileSystem>> fs;
    {
      GilRelease release;
      fs = MakeGcsFileSystem(options);
    }
    return ValueOrRaise(std::move(fs));
  }
  if (kind != "s3") throw py::value_error("unknown filesystem kind '" + kind + "'");
  auto options = ValueOrRaise(S3OptionsFromEnvironment());
  auto str = [&](const char* key) { return Has(d, key) ? d[key].cast<std::string>() : std::string(); };
  if (!str("region").empty()) options.region = str("region");
  if (!str("scheme").empty()) options.scheme = str("scheme");
  if (Has(d, "endpoint_override")) {
    std::string endpoint = str("endpoint_override");
    auto separator = endpoint.find("://");
    if (separator != std::string::npos) {
      options.scheme = endpoint.substr(0, separator);
      endpoint = endpoint.substr(separator + 3);
    }
    if (!endpoint.empty()) options.endpoint_override = endpoint;
  }
  if (Has(d, "anonymous") && d["anonymous"].cast<bool>()) {
    options.ConfigureAnonymousCredentials();
  } else if (!str("access_key").empty()) {
    options.ConfigureAccessKey(str("access_key"), str("secret_key"), str("session_token"));
  } else if (!str("role_arn").empty()) {
    options.ConfigureAssumeRoleCredentials(str("role_arn"), str("session_name"), str("external_id"),
                                           Has(d, "load_frequency") ? d["load_frequency"].cast<int>() : 900);
  }
  if (Has(d, "connect_timeout")) options.connect_timeout = d["connect_timeout"].cast<double>();
  if (Has(d, "request_timeout")) options.request_timeout = d["request_timeout"].cast<double>();
  if (Has(d, "background_writes")) options.background_writes = d["background_writes"].cast<bool>();
  if (Has(d, "allow_bucket_creation")) options.allow_bucket_creation = d["allow_bucket_creation"].cast<bool>();
  if (Has(d, "allow_bucket_deletion")) options.allow_bucket_deletion = d["allow_bucket_deletion"].cast<bool>();
  if (Has(d, "force_virtual_addressing")) options.force_virtual_addressing = d["force_virtual_addressing"].cast<bool>();
  if (Has(d, "check_directory_existence_before_creation")) {
    options.check_directory_existence_before_creation = d["check_directory_existence_before_creation"].cast<bool>();
  }
  if (!str("tls_ca_file_path").empty()) options.tls_ca_file_path = str("tls_ca_file_path");
  arrow::Result<std::shared_ptr<arrow::fs::FileSystem>> fs;
  {
    GilRelease release;
    fs = MakeS3FileSystem(options);
  }
  return ValueOrRaise(std::move(fs));
}

std::shared_ptr<arrow::Schema> SchemaFromPython(const py::handle& schema) {
  py::object capsule = schema.attr("__arrow_c_schema__")();
  auto* c_schema = static_cast<ArrowSchema*>(PyCapsule_GetPointer(capsule.ptr(), "arrow_schema"));
  return ValueOrRaise(arrow::ImportSchema(c_schema));
}

FileReadOptions FileOptionsFromDict(const py::dict& d) {
  FileReadOptions options;
  if (Has(d, "operation")) options.operation = d["operation"].cast<std::string>();
  if (Has(d, "hive")) options.hive_partitioning = d["hive"].cast<bool>();
  if (Has(d, "include_paths")) options.include_paths = d["include_paths"].cast<bool>();
  if (Has(d, "shuffle")) options.shuffle = d["shuffle"].cast<bool>();
  if (Has(d, "shuffle_seed")) options.shuffle_seed = d["shuffle_seed"].cast<uint64_t>();
  if (Has(d, "reseed")) options.reseed_after_execution = d["reseed"].cast<bool>();
  if (Has(d, "compression")) options.stream_compression = d["compression"].cast<std::string>();
  if (Has(d, "override_num_blocks")) options.override_num_blocks = d["override_num_blocks"].cast<int64_t>();
  if (Has(d, "concurrency")) options.concurrency = d["concurrency"].cast<int>();
  if (Has(d, "buffer_size")) options.buffer_size = d["buffer_size"].cast<int64_t>();
  if (Has(d, "retried_io_errors")) options.retry.patterns = d["retried_io_errors"].cast<std::vector<std::string>>();
  if (Has(d, "retry_max_attempts")) options.retry.max_attempts = d["retry_max_attempts"].cast<int>();
  return options;
}

std::vector<FoundFile> FilesFromPython(const std::vector<std::tuple<std::string, int64_t, std::string>>& files) {
  std::vector<FoundFile> out;
  out.reserve(files.size());
  for (const auto& [path, size, base_dir] : files) out.push_back({path, size, base_dir});
  return out;
}

/// pyarrow.csv's ReadOptions/ParseOptions/ConvertOptions fields (read_api.py has checked
/// them and refused what cannot be translated).
CsvReadOptions CsvOptionsFromDict(const py::dict& d) {
  CsvReadOptions csv;
  auto& r = csv.read;
  r.use_threads = false;  // Ray's default: a read task is one thread; tasks run side by side
  if (Has(d, "use_threads")) r.use_threads = d["use_threads"].cast<bool>();
  if (Has(d, "block_size")) r.block_size = d["block_size"].cast<int32_t>();
  if (Has(d, "skip_rows")) r.skip_rows = d["skip_rows"].cast<int32_t>();
  if (Has(d, "skip_rows_after_names")) r.skip_rows_after_names = d["skip_rows_after_names"].cast<int32_t>();
  if (Has(d, "column_names")) r.column_names = d["column_names"].cast<std::vector<std::string>>();
  if (Has(d, "autogenerate_column_names")) r.autogenerate_column_names = d["autogenerate_column_names"].cast<bool>();
  auto& p = csv.parse;
  if (Has(d, "delimiter")) p.delimiter = d["delimiter"].cast<std::string>().at(0);
  if (Has(d, "quote_char")) {
    auto quote = d["quote_char"].cast<std::string>();
    p.quoting = !quote.empty();
    if (!quote.empty()) p.quote_char = quote[0];
  }
  if (Has(d, "double_quote")) p.double_quote = d["double_quote"].cast<bool>();
  if (Has(d, "escape_char")) {
    auto escape = d["escape_char"].cast<std::string>();
    p.escaping = !escape.empty();
    if (!escape.empty()) p.escape_char = escape[0];
  }
  if (Has(d, "newlines_in_values")) p.newlines_in_values = d["newlines_in_values"].cast<bool>();
  if (Has(d, "ignore_empty_lines")) p.ignore_empty_lines = d["ignore_empty_lines"].cast<bool>();
  auto& c = csv.convert;
  if (Has(d, "check_utf8")) c.check_utf8 = d["check_utf8"].cast<bool>();
  if (Has(d, "column_types")) {
    auto schema = SchemaFromPython(d["column_types"]);
    for (const auto& field : schema->fields()) c.column_types[field->name()] = field->type();
  }
  if (Has(d, "null_values")) c.null_values = d["null_values"].cast<std::vector<std::string>>();
  if (Has(d, "true_values")) c.true_values = d["true_values"].cast<std::vector<std::string>>();
  if (Has(d, "false_values")) c.false_values = d["false_values"].cast<std::vector<std::string>>();
  if (Has(d, "decimal_point")) c.decimal_point = d["decimal_point"].cast<std::string>().at(0);
  if (Has(d, "strings_can_be_null")) c.strings_can_be_null = d["strings_can_be_null"].cast<bool>();
  if (Has(d, "quoted_strings_can_be_null")) c.quoted_strings_can_be_null = d["quoted_strings_can_be_null"].cast<bool>();
  if (Has(d, "include_columns")) c.include_columns = d["include_columns"].cast<std::vector<std::string>>();
  if (Has(d, "include_missing_columns")) c.include_missing_columns = d["include_missing_columns"].cast<bool>();
  if (Has(d, "auto_dict_encode")) c.auto_dict_encode = d["auto_dict_encode"].cast<bool>();
  if (Has(d, "auto_dict_max_cardinality")) c.auto_dict_max_cardinality = d["auto_dict_max_cardinality"].cast<int32_t>();
  if (Has(d, "timestamp_parsers")) {
    c.timestamp_parsers.clear();
    for (const auto& format : d["timestamp_parsers"].cast<std::vector<std::string>>()) {
      c.timestamp_parsers.push_back(arrow::TimestampParser::MakeStrptime(format));
    }
  }
  return csv;
}

JsonReadOptions JsonOptionsFromDict(const py::dict& d) {
  JsonReadOptions json;
  json.read.use_threads = false;  // Ray's default
  if (Has(d, "use_threads")) json.read.use_threads = d["use_threads"].cast<bool>();
  if (Has(d, "block_size")) json.read.block_size = d["block_size"].cast<int32_t>();
  if (Has(d, "explicit_schema")) json.parse.explicit_schema = SchemaFromPython(d["explicit_schema"]);
  if (Has(d, "newlines_in_values")) json.parse.newlines_in_values = d["newlines_in_values"].cast<bool>();
  if (Has(d, "unexpected_field_behavior")) {
    auto behavior = d["unexpected_field_behavior"].cast<std::string>();
    json.parse.unexpected_field_behavior = behavior == "ignore" ? arrow::json::UnexpectedFieldBehavior::Ignore
                                           : behavior == "error" ? arrow::json::UnexpectedFieldBehavior::Error
                                                                 : arrow::json::UnexpectedFieldBehavior::InferType;
  }
  if (Has(d, "max_block_size")) json.max_block_size = d["max_block_size"].cast<int64_t>();
  return json;
}

}  // namespace

std::shared_ptr<arrow::fs::FileSystem> FileSystemFromHandle(const py::handle& handle) {
  if (handle.is_none()) return nullptr;
  return handle.cast<FileSystemHandle&>().fs;
}

void RegisterIo(py::module_& m) {
  py::class_<FileSystemHandle>(m, "FileSystem")
      .def_property_readonly("type_name", [](const FileSystemHandle& h) { return h.fs->type_name(); })
      .def("__repr__", [](const FileSystemHandle& h) { return "<millstream filesystem " + h.fs->type_name() + ">"; });

  m.def("resolve_path", [](const std::string& path, py::object spec, const std::string& operation) {
    auto fs = FileSystemFromSpec(spec);
    arrow::Result<std::string> resolved;
    {
      GilRelease release;
      resolved = ResolvePath(path, &fs, operation);
    }
    auto inner = ValueOrRaise(std::move(resolved));
    return py::make_tuple(FileSystemHandle{fs}, inner);
  }, "(filesystem, path inside it) for `path` (a local path, file:// or s3:// URI) and a spec.");

  m.def("prepare_write_dir_on", [](const FileSystemHandle& h, const std::string& path, const std::string& mode,
                                   const std::string& operation) {
    SaveMode save_mode = mode == "overwrite" ? SaveMode::kOverwrite
                         : mode == "error"   ? SaveMode::kError
                         : mode == "ignore"  ? SaveMode::kIgnore
                                             : SaveMode::kAppend;
    arrow::Result<bool> result;
    {
      GilRelease release;
      result = PrepareWriteDirectoryOn(h.fs, path, save_mode, operation);
    }
    return ValueOrRaise(std::move(result));
  }, "Makes a write's directory on `filesystem` ready for a save mode; returns whether to write.");

  m.def("write_object", [](const FileSystemHandle& h, const std::string& path, py::bytes data) {
    std::string bytes = data;
    arrow::Status status;
    {
      GilRelease release;
      status = [&]() -> arrow::Status {
        ARROW_ASSIGN_OR_RAISE(auto out, h.fs->OpenOutputStream(path));
        auto written = out->Write(bytes.data(), static_cast<int64_t>(bytes.size()));
        if (written.ok()) written = out->Close();
        // An upload that did not complete is aborted: no object, no multipart upload left.
        if (!written.ok()) (void)out->Abort();
        return written;
      }();
    }
    if (!status.ok()) ValueOrRaise(arrow::Result<bool>(status.WithMessage("writing '", path, "': ", status.message())));
  }, "Writes `data` as the file `path` on `filesystem`, which appears only when complete.");

  m.def("finalize_filesystems", [] {
    GilRelease release;
    FinalizeFileSystems();
  }, "Finalizes S3 (at interpreter exit).");
  // Registered before the package registers its shutdown hook, so it runs after it (atexit
  // runs hooks last-in first-out): executions are stopped before S3 goes, and S3 goes
  // before Python is torn down.
  py::module_::import("atexit").attr("register")(m.attr("finalize_filesystems"));

  m.def("input_files", [](const Dataset& dataset) { return dataset.InputFiles(); },
        "The files the dataset's reads read, each once.");
  m.def("read_parquet_files", [](const FileSystemHandle& handle,
                                 const std::vector<std::tuple<std::string, int64_t, std::string>>& files,
                                 std::vector<std::string> columns, std::optional<py::bytes> filter,
                                 std::optional<int64_t> blocks, bool hive, py::dict options,
                                 py::object schema) {
    ReadParquetOptions parquet;
    parquet.columns = std::move(columns);
    if (filter) {
      auto buffer = arrow::Buffer::FromString(std::string(*filter));
      parquet.filter = ValueOrRaise(arrow::compute::Deserialize(buffer));
    }
    parquet.override_num_blocks = blocks;
    parquet.hive_partitioning = hive;
    ParquetFileOptions more;
    auto file_options = FileOptionsFromDict(options);
    more.include_paths = file_options.include_paths;
    more.shuffle = file_options.shuffle;
    more.shuffle_seed = file_options.shuffle_seed;
    more.reseed_after_execution = file_options.reseed_after_execution;
    more.retry = file_options.retry;
    if (!schema.is_none()) more.schema = SchemaFromPython(schema);
    if (Has(options, "row_hash_seeds")) {
      more.include_row_hash = true;
      more.row_hash_seeds = options["row_hash_seeds"].cast<std::unordered_map<std::string, uint64_t>>();
    }
    if (Has(options, "tensor_columns")) {
      // A schema of the columns' value types, and their shapes in the same order.
      auto types = SchemaFromPython(options["tensor_columns"]);
      auto shapes = options["tensor_shapes"].cast<std::vector<std::vector<int64_t>>>();
      for (int i = 0; i < types->num_fields(); ++i) {
        more.tensor_columns.push_back({types->field(i)->name(), types->field(i)->type(), shapes.at(i)});
      }
    }
    auto found = FilesFromPython(files);
    arrow::Result<Dataset> result;
    {
      GilRelease release;
      auto source = MakeParquetSource(handle.fs, std::move(found),
                                      parquet, std::move(more));
      result = source.ok() ? Dataset::FromSource(*source, blocks, file_options.concurrency) : arrow::Result<Dataset>(source.status());
    }
    return ValueOrRaise(std::move(result));
  }, "A Dataset reading Parquet `files` (from list_files) with read_parquet's options.");

  m.def("list_files", [](std::vector<std::string> paths, std::string operation,
                         std::vector<std::string> extensions, bool ignore_missing, py::object spec) {
    ListOptions options;
    options.operation = std::move(operation);
    options.extensions = std::move(extensions);
    options.ignore_missing_paths = ignore_missing;
    auto fs = FileSystemFromSpec(spec);
    arrow::Result<std::vector<FoundFile>> found;
    {
      GilRelease release;
      found = ListFiles(paths, &fs, options);
    }
    std::vector<std::tuple<std::string, int64_t, std::string>> out;
    for (const auto& file : ValueOrRaise(std::move(found))) out.emplace_back(file.path, file.size, file.base_dir);
    return py::make_tuple(FileSystemHandle{fs}, out);
  }, "(filesystem, files) a read of `paths` finds: files as (path, size, listed directory).");

  m.def("read_files", [](const std::string& format, const FileSystemHandle& handle,
                         const std::vector<std::tuple<std::string, int64_t, std::string>>& files,
                         py::dict options, py::dict format_options) {
    auto file_options = FileOptionsFromDict(options);
    auto found = FilesFromPython(files);
    std::shared_ptr<arrow::fs::FileSystem> fs = handle.fs;
    std::shared_ptr<Datasource> source;
    if (format == "csv") {
      source = MakeCsvSource(fs, std::move(found), file_options, CsvOptionsFromDict(format_options));
    } else if (format == "json") {
      source = MakeJsonSource(fs, std::move(found), file_options, JsonOptionsFromDict(format_options));
    } else if (format == "text") {
      bool drop = Has(format_options, "drop_empty_lines") && format_options["drop_empty_lines"].cast<bool>();
      source = MakeTextSource(fs, std::move(found), file_options, drop);
    } else if (format == "binary") {
      source = MakeBinarySource(fs, std::move(found), file_options);
    } else {
      throw py::value_error("read_files: unknown format '" + format + "'");
    }
    return ValueOrRaise(Dataset::FromSource(std::move(source), file_options.override_num_blocks,
                                                    file_options.concurrency));
  }, "A Dataset reading `files` (from list_files) as `format` ('csv', 'json', 'text', 'binary').");
}

}  // namespace millstream::python
