#include <algorithm>
#include <chrono>
#include <functional>
#include <thread>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <filesystem>
#include <map>
#include <optional>
#include <string_view>
#include <cstdio>
#include <iomanip>
#include <sstream>

#include <arrow/api.h>
#include <arrow/compute/api.h>
#include <arrow/csv/writer.h>
#include <arrow/filesystem/api.h>
#include <arrow/io/api.h>
#include <arrow/ipc/writer.h>
#include <arrow/util/compression.h>
#include <arrow/util/io_util.h>
#include <parquet/arrow/writer.h>
#include <parquet/exception.h>
#include <parquet/file_writer.h>
#include <parquet/metadata.h>
#include <parquet/schema.h>

#include "exec/schema_unify.h"
#include "exec/transforms.h"
#include "io/filesystems.h"
#include "io/retry.h"
#include "io/sources.h"

namespace millstream {
namespace {

/// Writes one open file of one format.
class FormatWriter {
 public:
  virtual ~FormatWriter() = default;
  virtual arrow::Status Write(const arrow::RecordBatch& batch) = 0;
  virtual arrow::Status Close() = 0;
};

/// Parquet writer properties from pyarrow.parquet.write_table's options.
/// `plain_columns`: top-level columns written without a dictionary whatever the option.
arrow::Result<std::shared_ptr<parquet::WriterProperties>> ParquetProperties(
    const ParquetWriteOptions& options, const std::vector<std::string>& plain_columns = {}) {
  parquet::WriterProperties::Builder builder;
  std::string codec_name = options.compression;
  std::transform(codec_name.begin(), codec_name.end(), codec_name.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  arrow::Compression::type codec = arrow::Compression::UNCOMPRESSED;
  if (codec_name != "none" && codec_name != "uncompressed") {
    auto found = arrow::util::Codec::GetCompressionType(codec_name);
    if (!found.ok() || *found == arrow::Compression::BZ2) {
      return arrow::Status::Invalid("write_parquet: compression='", options.compression,
                                    "' is not a Parquet codec; use snappy, gzip, brotli, zstd, lz4, "
                                    "lz4_raw or none");
    }
    // As pyarrow takes them: "lz4" and "lz4_raw" are both Parquet's LZ4_RAW.
    codec = *found == arrow::Compression::LZ4_FRAME ? arrow::Compression::LZ4 : *found;
    if (!arrow::util::Codec::IsAvailable(codec)) {
      return arrow::Status::NotImplemented("write_parquet: compression='", options.compression,
                                           "' is not built into this Arrow");
    }
  }
  builder.compression(codec);
  if (options.compression_level) {
    if (codec == arrow::Compression::UNCOMPRESSED) {
      return arrow::Status::Invalid("write_parquet: compression_level needs a compression codec");
    }
    auto supported = arrow::util::Codec::SupportsCompressionLevel(codec);
    if (!supported) {
      return arrow::Status::Invalid("write_parquet: compression='", options.compression,
                                    "' takes no compression_level");
    }
    ARROW_ASSIGN_OR_RAISE(int lowest, arrow::util::Codec::MinimumCompressionLevel(codec));
    ARROW_ASSIGN_OR_RAISE(int highest, arrow::util::Codec::MaximumCompressionLevel(codec));
    if (*options.compression_level < lowest || *options.compression_level > highest) {
      return arrow::Status::Invalid("write_parquet: compression_level=", *options.compression_level,
                                    " is out of range for ", options.compression, " [", lowest,
                                    ", ", highest, "]");
    }
    builder.compression_level(*options.compression_level);
  }
  if (options.row_group_size > 0) builder.max_row_group_length(options.row_group_size);
  if (options.data_page_size > 0) builder.data_pagesize(options.data_page_size);
  if (options.use_dictionary.value_or(true)) builder.enable_dictionary(); else builder.disable_dictionary();
  for (const auto& column : plain_columns) builder.disable_dictionary(column);
  if (options.write_statistics) builder.enable_statistics(); else builder.disable_statistics();
  if (options.version == "1.0") builder.version(parquet::ParquetVersion::PARQUET_1_0);
  else if (options.version == "2.4") builder.version(parquet::ParquetVersion::PARQUET_2_4);
  else if (options.version == "2.6") builder.version(parquet::ParquetVersion::PARQUET_2_6);
  else return arrow::Status::Invalid("write_parquet: version='", options.version,
                                     "' is not a Parquet format version; use '1.0', '2.4' or '2.6'");
  return builder.build();
}

/// The top-level columns of `batch` to write without a dictionary: those more than half of
/// whose first values (up to kDictionarySample) are distinct. A block of fewer than
/// kDictionaryMinSample rows tells too little: every column keeps its dictionary. Columns
/// already dictionary-encoded, nested ones and booleans keep Arrow's choice.
arrow::Result<std::vector<std::string>> PlainColumns(const arrow::RecordBatch& batch) {
  constexpr int64_t kDictionarySample = 16384, kDictionaryMinSample = 1024;
  std::vector<std::string> plain;
  const int64_t n = std::min(batch.num_rows(), kDictionarySample);
  if (n < kDictionaryMinSample) return plain;
  for (int i = 0; i < batch.num_columns(); ++i) {
    const auto& type = *batch.column(i)->type();
    if (!arrow::is_primitive(type.id()) && !arrow::is_base_binary_like(type.id()) &&
        !arrow::is_fixed_size_binary(type.id())) {
      continue;
    }
    if (type.id() == arrow::Type::BOOL) continue;
    ARROW_ASSIGN_OR_RAISE(auto unique, arrow::compute::Unique(batch.column(i)->Slice(0, n)));
    if (2 * unique->length() > n) plain.push_back(batch.schema()->field(i)->name());
  }
  return plain;
}

class ParquetFormatWriter : public FormatWriter {
 public:
  static arrow::Result<std::unique_ptr<FormatWriter>> Open(
      std::shared_ptr<arrow::io::OutputStream> out, std::shared_ptr<arrow::Schema> schema,
      const ParquetWriteOptions& options) {
    auto self = std::make_unique<ParquetFormatWriter>();
    self->out_ = out;
    self->schema_ = std::move(schema);
    self->options_ = options;
    ARROW_ASSIGN_OR_RAISE(self->props_, ParquetProperties(options));
    // With the dictionary left to the data, the file opens at its first block.
    if (self->schema_->num_fields() > 0 && options.use_dictionary.has_value()) {
      ARROW_RETURN_NOT_OK(self->OpenFile(self->props_));
    }
    return self;
  }
  arrow::Status Write(const arrow::RecordBatch& batch) override {
    if (schema_->num_fields() == 0) {  // rows only: see Close
      rows_ += batch.num_rows();
      return arrow::Status::OK();
    }
    if (!writer_) {
      ARROW_ASSIGN_OR_RAISE(auto plain, PlainColumns(batch));
      auto props = props_;
      if (!plain.empty()) {
        ARROW_ASSIGN_OR_RAISE(props, ParquetProperties(options_, plain));
      }
      ARROW_RETURN_NOT_OK(OpenFile(props));
    }
    return writer_->WriteRecordBatch(batch);
  }
  arrow::Status Close() override {
    if (!writer_ && schema_->num_fields() > 0) ARROW_RETURN_NOT_OK(OpenFile(props_));
    if (writer_) return writer_->Close();
    try {
      return CloseRowsOnly();
    } catch (const parquet::ParquetException& e) {
      return arrow::Status::IOError(e.what());
    }
  }

 private:
  /// Blocks without columns still have rows: Arrow's Parquet writer would drop them
  /// (it takes a row group's row count from its first column), so the file is the
  /// magic and a footer whose one row group has no column chunks and the row count.
  /// pyarrow and this engine read it back as that many rows of no columns.
  arrow::Status CloseRowsOnly() {
    auto root = parquet::schema::GroupNode::Make("schema", parquet::Repetition::REQUIRED, {});
    parquet::SchemaDescriptor schema;
    schema.Init(root);
    auto builder = parquet::FileMetaDataBuilder::Make(&schema, props_);
    if (rows_ > 0) {
      auto* row_group = builder->AppendRowGroup();
      row_group->set_num_rows(rows_);
      row_group->Finish(/*total_bytes_written=*/0, /*row_group_ordinal=*/0);
    }
    auto metadata = builder->Finish();
    ARROW_RETURN_NOT_OK(out_->Write("PAR1", 4));
    parquet::WriteFileMetaData(*metadata, out_.get());
    return arrow::Status::OK();
  }

  arrow::Status OpenFile(std::shared_ptr<parquet::WriterProperties> props) {
    auto arrow_props = parquet::ArrowWriterProperties::Builder().store_schema()->build();
    ARROW_ASSIGN_OR_RAISE(writer_, parquet::arrow::FileWriter::Open(*schema_, arrow::default_memory_pool(),
                                                                    out_, std::move(props), arrow_props));
    return arrow::Status::OK();
  }

  std::shared_ptr<arrow::io::OutputStream> out_;
  std::shared_ptr<arrow::Schema> schema_;
  ParquetWriteOptions options_;
  std::shared_ptr<parquet::WriterProperties> props_;
  /// Null when there are no columns, and until the first block when the dictionary is
  /// left to the data.
  std::unique_ptr<parquet::arrow::FileWriter> writer_;
  int64_t rows_ = 0;
};

/// pyarrow.csv.WriteOptions' fields as Arrow's.
arrow::Result<arrow::csv::WriteOptions> CsvOptions(const CsvWriteOptions& options) {
  auto out = arrow::csv::WriteOptions::Defaults();
  out.include_header = options.include_header;
  out.delimiter = options.delimiter;
  out.batch_size = options.batch_size;
  auto style = [](const std::string& name, const char* option,
                  arrow::csv::QuotingStyle* out) -> arrow::Status {
    if (name == "needed") *out = arrow::csv::QuotingStyle::Needed;
    else if (name == "all_valid") *out = arrow::csv::QuotingStyle::AllValid;
    else if (name == "none") *out = arrow::csv::QuotingStyle::None;
    else return arrow::Status::Invalid("write_csv: ", option, "='", name,
                                       "'; use 'needed', 'all_valid' or 'none'");
    return arrow::Status::OK();
  };
  ARROW_RETURN_NOT_OK(style(options.quoting_style, "quoting_style", &out.quoting_style));
  ARROW_RETURN_NOT_OK(style(options.quoting_header, "quoting_header", &out.quoting_header));
  auto valid = out.Validate();
  if (!valid.ok()) return valid.WithMessage("write_csv: write_options: ", valid.message());
  return out;
}

class CsvFormatWriter : public FormatWriter {
 public:
  static arrow::Result<std::unique_ptr<FormatWriter>> Open(
      std::shared_ptr<arrow::io::OutputStream> out, std::shared_ptr<arrow::Schema> schema,
      const CsvWriteOptions& options) {
    ARROW_ASSIGN_OR_RAISE(auto write_options, CsvOptions(options));
    auto self = std::make_unique<CsvFormatWriter>();
    ARROW_ASSIGN_OR_RAISE(self->writer_, arrow::csv::MakeCSVWriter(out, schema, write_options));
    return self;
  }
  arrow::Status Write(const arrow::RecordBatch& batch) override {
    if (batch.num_columns() == 0) {
      return arrow::Status::Invalid("write_csv: the rows have no columns, and a CSV file cannot "
                                    "hold rows without columns (write_parquet or write_json can)");
    }
    return writer_->WriteRecordBatch(batch);
  }
  arrow::Status Close() override { return writer_->Close(); }

 private:
  std::shared_ptr<arrow::ipc::RecordBatchWriter> writer_;
};

/// JSON Lines: one object per row, keys in column order.
class JsonFormatWriter : public FormatWriter {
 public:
  explicit JsonFormatWriter(std::shared_ptr<arrow::io::OutputStream> out) : out_(std::move(out)) {}

  arrow::Status Write(const arrow::RecordBatch& batch) override {
    std::vector<std::vector<std::string>> cells(batch.num_columns());
    for (int c = 0; c < batch.num_columns(); ++c) {
      ARROW_RETURN_NOT_OK(Encode(*batch.column(c), &cells[c]));
    }
    std::string text;
    for (int64_t row = 0; row < batch.num_rows(); ++row) {
      text += '{';
      for (int c = 0; c < batch.num_columns(); ++c) {
        if (c) text += ',';
        text += Quote(batch.schema()->field(c)->name());
        text += ':';
        text += cells[c][row];
      }
      text += "}\n";
    }
    return out_->Write(text);
  }
  arrow::Status Close() override { return arrow::Status::OK(); }

 private:
  static std::string Quote(std::string_view s) {
    std::string out = "\"";
    for (unsigned char ch : s) {
      switch (ch) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
          if (ch < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof(buf), "\\u%04x", ch);
            out += buf;
          } else {
            out += static_cast<char>(ch);
          }
      }
    }
    return out + "\"";
  }

  static std::string Number(double v) {
    if (!std::isfinite(v)) return "null";
    std::ostringstream os;
    os << std::setprecision(17) << v;
    return os.str();
  }

  /// One JSON value per element of `array`.
  static arrow::Status Encode(const arrow::Array& array, std::vector<std::string>* out) {
    out->resize(array.length());
    using arrow::Type;
    auto type = array.type()->id();
    if (type == Type::STRUCT) {
      const auto& st = static_cast<const arrow::StructArray&>(array);
      std::vector<std::vector<std::string>> children(st.num_fields());
      for (int f = 0; f < st.num_fields(); ++f) {
        ARROW_ASSIGN_OR_RAISE(auto child, st.GetFlattenedField(f));
        ARROW_RETURN_NOT_OK(Encode(*child, &children[f]));
      }
      for (int64_t i = 0; i < array.length(); ++i) {
        if (array.IsNull(i)) { (*out)[i] = "null"; continue; }
        std::string s = "{";
        for (int f = 0; f < st.num_fields(); ++f) {
          if (f) s += ',';
          s += Quote(st.type()->field(f)->name()) + ":" + children[f][i];
        }
        (*out)[i] = s + "}";
      }
      return arrow::Status::OK();
    }
    if (type == Type::LIST || type == Type::LARGE_LIST || type == Type::FIXED_SIZE_LIST) {
      for (int64_t i = 0; i < array.length(); ++i) {
        if (array.IsNull(i)) { (*out)[i] = "null"; continue; }
        std::shared_ptr<arrow::Array> values;
        if (type == Type::LIST) values = static_cast<const arrow::ListArray&>(array).value_slice(i);
        else if (type == Type::LARGE_LIST) values = static_cast<const arrow::LargeListArray&>(array).value_slice(i);
        else values = static_cast<const arrow::FixedSizeListArray&>(array).value_slice(i);
        std::vector<std::string> items;
        ARROW_RETURN_NOT_OK(Encode(*values, &items));
        std::string s = "[";
        for (size_t k = 0; k < items.size(); ++k) s += (k ? "," : "") + items[k];
        (*out)[i] = s + "]";
      }
      return arrow::Status::OK();
    }
    if (type == Type::UINT64) {  // past int64: the exact digits
      const auto& ints = static_cast<const arrow::UInt64Array&>(array);
      for (int64_t i = 0; i < array.length(); ++i)
        (*out)[i] = array.IsNull(i) ? "null" : std::to_string(ints.Value(i));
      return arrow::Status::OK();
    }
    if (arrow::is_integer(type)) {
      ARROW_ASSIGN_OR_RAISE(auto as_int, arrow::compute::Cast(array, arrow::int64()));
      const auto& ints = static_cast<const arrow::Int64Array&>(*as_int);
      for (int64_t i = 0; i < array.length(); ++i)
        (*out)[i] = array.IsNull(i) ? "null" : std::to_string(ints.Value(i));
      return arrow::Status::OK();
    }
    if (arrow::is_floating(type)) {
      ARROW_ASSIGN_OR_RAISE(auto as_double, arrow::compute::Cast(array, arrow::float64()));
      const auto& doubles = static_cast<const arrow::DoubleArray&>(*as_double);
      for (int64_t i = 0; i < array.length(); ++i)
        (*out)[i] = array.IsNull(i) ? "null" : Number(doubles.Value(i));
      return arrow::Status::OK();
    }
    if (type == Type::BOOL) {
      const auto& bools = static_cast<const arrow::BooleanArray&>(array);
      for (int64_t i = 0; i < array.length(); ++i)
        (*out)[i] = array.IsNull(i) ? "null" : (bools.Value(i) ? "true" : "false");
      return arrow::Status::OK();
    }
    if (type == Type::NA) {
      for (auto& cell : *out) cell = "null";
      return arrow::Status::OK();
    }
    // Strings, dates, timestamps, decimals...: their text form, quoted.
    auto as_str = arrow::compute::Cast(array, arrow::large_utf8());
    if (!as_str.ok()) {
      return arrow::Status::NotImplemented("write_json: column type ", array.type()->ToString(),
                                           " has no JSON form");
    }
    const auto& strs = static_cast<const arrow::LargeStringArray&>(**as_str);
    for (int64_t i = 0; i < array.length(); ++i)
      (*out)[i] = array.IsNull(i) ? "null" : Quote(strs.GetView(i));
    return arrow::Status::OK();
  }

  std::shared_ptr<arrow::io::OutputStream> out_;
};

/// A block with exactly the columns of `schema` (a write's given schema), cast as
/// pyarrow's Table.cast casts (safely: values that do not fit are an error). A column
/// missing from the block is null where the field is nullable; a column not in the
/// schema is an error. Errors name the column.
arrow::Result<std::shared_ptr<arrow::RecordBatch>> CastToGivenSchema(
    const arrow::RecordBatch& block, const std::shared_ptr<arrow::Schema>& schema) {
  for (const auto& field : block.schema()->fields()) {
    if (schema->GetFieldIndex(field->name()) < 0) {
      return arrow::Status::Invalid("write_parquet: column '", field->name(),
                                    "' is not in the given schema ", schema->ToString());
    }
  }
  std::vector<std::shared_ptr<arrow::Array>> columns;
  for (const auto& field : schema->fields()) {
    auto column = block.GetColumnByName(field->name());
    if (!column) {
      if (!field->nullable()) {
        return arrow::Status::Invalid("write_parquet: the rows have no column '", field->name(),
                                      "' and the given schema says it is not nullable");
      }
      ARROW_ASSIGN_OR_RAISE(column, arrow::MakeArrayOfNull(field->type(), block.num_rows()));
    } else if (!column->type()->Equals(*field->type())) {
      auto cast = arrow::compute::Cast(*column, field->type());
      if (!cast.ok()) {
        return cast.status().WithMessage("write_parquet: column '", field->name(), "' (",
                                         column->type()->ToString(), ") cannot be cast to ",
                                         field->type()->ToString(), " of the given schema: ",
                                         cast.status().message());
      }
      column = *cast;
    }
    columns.push_back(std::move(column));
  }
  return arrow::RecordBatch::Make(schema, block.num_rows(), std::move(columns));
}

/// The `n`th file name of a task named `name`: `n` as six digits put before the extension
/// (`name.parquet` -> `name_000001.parquet`); the first (n = 0) is `name` itself unless
/// `number_first`.
std::string NumberedName(const std::string& first, int64_t n, bool number_first) {
  if (n == 0 && !number_first) return first;
  if (size_t at = first.find("{i}"); number_first && at != std::string::npos) {
    std::string name = first;  // a template: every `{i}` is the number
    for (; at != std::string::npos; at = name.find("{i}", at)) name.replace(at, 3, std::to_string(n));
    return name;
  }
  size_t dot = first.rfind('.');
  std::ostringstream digits;
  digits << "_" << std::setw(6) << std::setfill('0') << n;
  if (dot == std::string::npos || dot == 0) return first + digits.str();
  return first.substr(0, dot) + digits.str() + first.substr(dot);
}

/// One output file at a time: each written under a hidden temporary name, renamed when
/// committed, removed if it never is (a failed or cancelled task leaves nothing behind).
/// A file that reaches `max_rows_per_file`, or whose schema a block widens, is committed
/// and the next one (NumberedName) opens.
class FileSink {
 public:
  FileSink(std::string directory, std::string task_name, bool number_first, FileFormat format,
           std::shared_ptr<const WriteOptions> options)
      : directory_(std::move(directory)), task_name_(std::move(task_name)),
        number_first_(number_first), format_(format), options_(std::move(options)) {
    SetNames();
  }

  ~FileSink() {
    if (committed_ || !out_) return;
    if (remote()) {
      // Abort before the writer goes: closing would complete the upload (an object of
      // what was written so far); aborting leaves no object and no multipart upload.
      if (raw_ && !raw_->closed()) (void)raw_->Abort();
      writer_.reset();
      return;
    }
    writer_.reset();
    if (!out_->closed()) (void)out_->Close();
    std::remove(temp_path_.c_str());
  }

  arrow::Status Write(const arrow::RecordBatch& given) {
    std::shared_ptr<arrow::RecordBatch> block;
    if (format_ == FileFormat::kParquet && options_->parquet.schema) {
      ARROW_ASSIGN_OR_RAISE(block, CastToGivenSchema(given, options_->parquet.schema));
    } else {
      block = arrow::RecordBatch::Make(given.schema(), given.num_rows(), given.columns());
    }
    if (!writer_) {
      ARROW_RETURN_NOT_OK(Open(block->schema()));
    } else if (format_ != FileFormat::kJson && !SameColumns(*block->schema(), *schema_)) {
      ARROW_ASSIGN_OR_RAISE(block, ConformToFile(block));
    }
    int64_t max_rows = options_->max_rows_per_file;
    if (max_rows <= 0) return WriteRows(*block);
    for (int64_t offset = 0; offset < block->num_rows();) {
      if (rows_ >= max_rows) ARROW_RETURN_NOT_OK(NextFile(schema_));
      int64_t n = std::min(block->num_rows() - offset, max_rows - rows_);
      ARROW_RETURN_NOT_OK(WriteRows(*block->Slice(offset, n)));
      offset += n;
    }
    return arrow::Status::OK();
  }

  arrow::Status Commit() {
    if (!writer_ || committed_) return arrow::Status::OK();
    if (remote()) {
      // Every block the file holds is rewritten on a retry: none is the "last" here.
      if (retrying()) held_.push_back(nullptr);
      auto status = Retried([&]() -> arrow::Status {
        ARROW_RETURN_NOT_OK(writer_->Close());
        if (!out_->closed()) ARROW_RETURN_NOT_OK(out_->Close());
        if (!raw_->closed()) ARROW_RETURN_NOT_OK(raw_->Close());  // the upload completes
        return arrow::Status::OK();
      });
      held_.clear();
      ARROW_RETURN_NOT_OK(NamingFile(status));
      committed_ = true;
      return arrow::Status::OK();
    }
    ARROW_RETURN_NOT_OK(NamingFile(writer_->Close()));
    if (!out_->closed()) ARROW_RETURN_NOT_OK(NamingFile(out_->Close()));
    if (std::rename(temp_path_.c_str(), final_path_.c_str()) != 0) {
      return arrow::internal::IOErrorFromErrno(errno, "cannot rename '", temp_path_, "' to '",
                                               final_path_, "'");
    }
    committed_ = true;
    return arrow::Status::OK();
  }

 private:
  void SetNames() {
    std::string name = NumberedName(task_name_, file_number_, number_first_);
    final_path_ = directory_ + "/" + name;
    temp_path_ = directory_ + "/.tmp-" + name;
  }

  bool remote() const { return options_->filesystem && !IsLocal(*options_->filesystem); }

  arrow::Status WriteRows(const arrow::RecordBatch& rows) {
    if (retrying()) {
      held_.push_back(arrow::RecordBatch::Make(rows.schema(), rows.num_rows(), rows.columns()));
    }
    auto status = Retried([&] { return writer_->Write(rows); });
    ARROW_RETURN_NOT_OK(NamingFile(status));
    rows_ += rows.num_rows();
    return arrow::Status::OK();
  }

  bool retrying() const { return remote() && !options_->retried_io_errors.empty(); }

  /// `op` on the open file; a transient error (WriteOptions::retried_io_errors) of an upload
  /// aborts it and uploads the file again from its start (the blocks it holds so far),
  /// then retries `op`, with backoff.
  arrow::Status Retried(const std::function<arrow::Status()>& op) {
    RetryPolicy policy;
    if (retrying()) policy.patterns = options_->retried_io_errors;
    for (int attempt = 1;; ++attempt) {
      auto status = op();
      if (status.ok() || attempt >= policy.max_attempts || !IsRetried(status, policy)) return status;
      double wait = std::min(policy.max_backoff_s, policy.base_backoff_s * (1 << std::min(attempt - 1, 20)));
      std::this_thread::sleep_for(std::chrono::duration<double>(wait));
      auto reopened = Reupload();
      if (!reopened.ok() && !IsRetried(reopened, policy)) return reopened;
    }
  }

  /// Aborts the open upload and writes the file's blocks so far (but the last, which the
  /// retried operation writes) into a new one.
  arrow::Status Reupload() {
    if (raw_ && !raw_->closed()) (void)raw_->Abort();
    writer_.reset();
    out_.reset();
    raw_.reset();
    codec_.reset();
    ARROW_RETURN_NOT_OK(OpenUnnamed(schema_));
    for (size_t i = 0; i + 1 < held_.size(); ++i) {
      ARROW_RETURN_NOT_OK(writer_->Write(*held_[i]));
      rows_ += held_[i]->num_rows();
    }
    return arrow::Status::OK();
  }

  /// Opens the next file; an error names it (a full disk may already fail here).
  arrow::Status Open(std::shared_ptr<arrow::Schema> schema) {
    auto status = OpenUnnamed(schema);
    RetryPolicy policy;
    if (retrying()) policy.patterns = options_->retried_io_errors;
    for (int attempt = 1; !status.ok() && attempt < policy.max_attempts && IsRetried(status, policy); ++attempt) {
      // The upload could not start (an object store's transient error): start it again.
      double wait = std::min(policy.max_backoff_s, policy.base_backoff_s * (1 << std::min(attempt - 1, 20)));
      std::this_thread::sleep_for(std::chrono::duration<double>(wait));
      writer_.reset();
      out_.reset();
      raw_.reset();
      codec_.reset();
      status = OpenUnnamed(schema);
    }
    if (status.ok() || status.message().find(temp_path_) != std::string::npos) return status;
    return NamingFile(std::move(status));
  }

  arrow::Status OpenUnnamed(std::shared_ptr<arrow::Schema> schema) {
    schema_ = std::move(schema);
    rows_ = 0;
    committed_ = false;
    if (remote()) {
      // An object store: the object is uploaded under its final name and appears only when
      // the stream closes.
      ARROW_ASSIGN_OR_RAISE(out_, options_->filesystem->OpenOutputStream(final_path_));
    } else {
      ARROW_ASSIGN_OR_RAISE(out_, arrow::io::FileOutputStream::Open(temp_path_));
    }
    raw_ = out_;
    if (!options_->stream_compression.empty()) {
      auto type = arrow::util::Codec::GetCompressionType(options_->stream_compression);
      if (!type.ok()) {
        return arrow::Status::Invalid("arrow_open_stream_args: compression='",
                                      options_->stream_compression, "' is not a codec name");
      }
      ARROW_ASSIGN_OR_RAISE(auto codec, arrow::util::Codec::Create(*type));
      auto compressed = arrow::io::CompressedOutputStream::Make(codec.get(), out_);
      if (!compressed.ok()) {
        return compressed.status().WithMessage("arrow_open_stream_args: compression='",
                                               options_->stream_compression, "': ",
                                               compressed.status().message());
      }
      codec_ = std::move(codec);
      out_ = *std::move(compressed);
    }
    if (format_ == FileFormat::kParquet) {
      ARROW_ASSIGN_OR_RAISE(writer_, ParquetFormatWriter::Open(out_, schema_, options_->parquet));
    } else if (format_ == FileFormat::kCsv) {
      ARROW_ASSIGN_OR_RAISE(writer_, CsvFormatWriter::Open(out_, schema_, options_->csv));
    } else {
      writer_ = std::make_unique<JsonFormatWriter>(out_);
    }
    return arrow::Status::OK();
  }

  /// Commits the open file and opens the next one with `schema`.
  arrow::Status NextFile(std::shared_ptr<arrow::Schema> schema) {
    ARROW_RETURN_NOT_OK(Commit());
    writer_.reset();
    out_.reset();
    ++file_number_;
    SetNames();
    return Open(std::move(schema));
  }

  /// A block whose columns differ from the open file's (blocks of one task need not
  /// share a schema): cast to the file's schema when that holds it (columns missing from
  /// the block become null, narrower types are widened); otherwise the file is
  /// committed and the next one opens with the unified schema. Types that cannot be
  /// unified are an error naming the column and both types.
  arrow::Result<std::shared_ptr<arrow::RecordBatch>> ConformToFile(
      const std::shared_ptr<arrow::RecordBatch>& batch) {
    auto unified = UnifyBlockSchemas({schema_, batch->schema()});
    if (!unified.ok()) return unified.status().WithMessage("writing '", final_path_, "': ", unified.status().message());
    if (!SameColumns(**unified, *schema_)) ARROW_RETURN_NOT_OK(NextFile(*unified));
    return CastBlockToSchema(batch, schema_);
  }

  /// `status` with the file it concerns named (an OS error's errno detail kept): a write
  /// that fails for lack of space says which file.
  arrow::Status NamingFile(arrow::Status status) const {
    if (status.ok()) return status;
    return status.WithMessage("writing '", final_path_, "': ", status.message());
  }

  std::string directory_, task_name_;
  bool number_first_;
  FileFormat format_;
  std::shared_ptr<const WriteOptions> options_;
  int64_t file_number_ = 0;
  std::string final_path_, temp_path_;
  std::shared_ptr<arrow::Schema> schema_;
  std::unique_ptr<arrow::util::Codec> codec_;  // of a compressed stream; outlives out_
  std::shared_ptr<arrow::io::OutputStream> out_;
  /// The file's own stream under any compression (what Abort reaches).
  std::shared_ptr<arrow::io::OutputStream> raw_;
  std::unique_ptr<FormatWriter> writer_;
  /// The open file's blocks, while an upload may have to start again (retrying()).
  std::vector<std::shared_ptr<arrow::RecordBatch>> held_;
  int64_t rows_ = 0;  // in the open file
  bool committed_ = false;
};

/// Writes a task's blocks: into one file, or with partition columns into one file per
/// `key=value/...` directory (the partition columns left out of the files).
class WriteState : public TransformState {
 public:
  WriteState(std::string directory, FileFormat format, std::string file_name, bool number_first,
             std::shared_ptr<const WriteOptions> options,
             std::function<void(const arrow::RecordBatch&)> sunk)
      : directory_(std::move(directory)), format_(format), file_name_(std::move(file_name)),
        number_first_(number_first), options_(std::move(options)),
        partition_cols_(options_->partition_cols), sunk_(std::move(sunk)) {}

  arrow::Status Push(Block block, const Emit&) override {
    if (block->num_rows() == 0) return arrow::Status::OK();
    ARROW_RETURN_NOT_OK(WriteBlock(block));
    if (sunk_) sunk_(*block);
    return arrow::Status::OK();
  }

  arrow::Status Finish(const Emit&) override {
    for (auto& [dir, sink] : sinks_) ARROW_RETURN_NOT_OK(sink->Commit());
    return arrow::Status::OK();
  }

 private:
  /// Into the task's file, or split by partition into one file per directory.
  arrow::Status WriteBlock(const Block& block) {
    if (partition_cols_.empty()) return Sink("")->Write(*block);
    namespace cp = arrow::compute;
    // Each row's partition directory, from its partition columns as text.
    std::vector<std::shared_ptr<arrow::StringArray>> keys;
    std::vector<int> key_indices;
    for (const auto& name : partition_cols_) {
      int index = block->schema()->GetFieldIndex(name);
      if (index < 0) {
        return arrow::Status::KeyError("write partition column '", name, "' not found; the columns are: ",
                                       block->schema()->ToString());
      }
      ARROW_ASSIGN_OR_RAISE(auto text, cp::Cast(*block->column(index), arrow::utf8()));
      keys.push_back(std::static_pointer_cast<arrow::StringArray>(text));
      key_indices.push_back(index);
    }
    // Each distinct value's directory name, encoded once per block.
    std::vector<std::map<std::optional<std::string_view>, std::string>> segments(keys.size());
    std::map<std::string, std::vector<int64_t>> rows_by_dir;
    for (int64_t row = 0; row < block->num_rows(); ++row) {
      std::string dir;
      for (size_t k = 0; k < keys.size(); ++k) {
        std::optional<std::string_view> value;
        if (keys[k]->IsValid(row)) value = keys[k]->GetView(row);
        auto found = segments[k].find(value);
        if (found == segments[k].end()) {
          ARROW_ASSIGN_OR_RAISE(auto segment,
                                HiveSegment(partition_cols_[k], value ? std::optional<std::string>(*value)
                                                                      : std::nullopt));
          found = segments[k].emplace(value, std::move(segment)).first;
        }
        if (k > 0) dir.push_back('/');
        dir.append(found->second);
      }
      rows_by_dir[dir].push_back(row);
    }
    // The files hold the other columns.
    std::vector<int> kept;
    for (int c = 0; c < block->num_columns(); ++c) {
      if (std::find(key_indices.begin(), key_indices.end(), c) == key_indices.end()) kept.push_back(c);
    }
    ARROW_ASSIGN_OR_RAISE(auto values, block->SelectColumns(kept));
    for (const auto& [dir, rows] : rows_by_dir) {
      arrow::Int64Builder indices;
      ARROW_RETURN_NOT_OK(indices.AppendValues(rows));
      ARROW_ASSIGN_OR_RAISE(auto take, indices.Finish());
      ARROW_ASSIGN_OR_RAISE(auto part, cp::Take(values, take));
      ARROW_RETURN_NOT_OK(Sink(dir)->Write(*part.record_batch()));
    }
    return arrow::Status::OK();
  }

  FileSink* Sink(const std::string& partition_dir) {
    auto& sink = sinks_[partition_dir];
    if (!sink) {
      std::string dir = partition_dir.empty() ? directory_ : directory_ + "/" + partition_dir;
      if (!options_->filesystem || IsLocal(*options_->filesystem)) {
        std::error_code error;
        std::filesystem::create_directories(dir, error);  // an error surfaces when the file opens
      }
      sink = std::make_unique<FileSink>(dir, file_name_, number_first_, format_, options_);
    }
    return sink.get();
  }

  std::string directory_;
  FileFormat format_;
  std::string file_name_;
  bool number_first_;
  std::shared_ptr<const WriteOptions> options_;
  std::vector<std::string> partition_cols_;
  std::function<void(const arrow::RecordBatch&)> sunk_;
  std::map<std::string, std::unique_ptr<FileSink>> sinks_;
};

/// A file name a filename provider gave: one name, inside the directory.
arrow::Status CheckProvidedName(const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos) {
    return arrow::Status::Invalid("filename_provider: get_filename_for_task returned '", name,
                                  "'; a file name must be one non-empty path segment "
                                  "(no '/', not '.' or '..')");
  }
  return arrow::Status::OK();
}

class WriteTransform : public Transform {
 public:
  WriteTransform(std::string directory, FileFormat format, std::string write_id,
                 WriteOptions options)
      : directory_(std::move(directory)), format_(format), write_id_(std::move(write_id)) {
    auto& schema = options.parquet.schema;
    if (schema && !options.partition_cols.empty()) {
      // The files leave the partition columns out; so does their schema.
      std::vector<std::shared_ptr<arrow::Field>> kept;
      for (const auto& field : schema->fields()) {
        if (std::find(options.partition_cols.begin(), options.partition_cols.end(),
                      field->name()) == options.partition_cols.end()) {
          kept.push_back(field);
        }
      }
      schema = arrow::schema(std::move(kept), schema->metadata());
    }
    options_ = std::make_shared<const WriteOptions>(std::move(options));
  }
  std::string name() const override {
    switch (format_) {
      case FileFormat::kParquet: return "WriteParquet";
      case FileFormat::kCsv: return "WriteCSV";
      case FileFormat::kJson: return "WriteJSON";
    }
    return "Write";
  }
  // It emits nothing: what it holds is the file's current row group, sized by its input.
  bool output_sized_by_input() const override { return true; }
  arrow::Result<std::unique_ptr<TransformState>> MakeState(const TaskContext& task) const override {
    for (const auto& column : options_->partition_cols) {
      ARROW_RETURN_NOT_OK(HiveSegment(column, "").status());  // a name that cannot be a directory
    }
    std::string name;
    bool number_first = !options_->filename || options_->filename_template;
    if (options_->filename) {
      ARROW_ASSIGN_OR_RAISE(name, options_->filename(write_id_, task.task_index));
      ARROW_RETURN_NOT_OK(CheckProvidedName(name));
    } else {
      std::ostringstream out;
      out << write_id_ << "_" << std::setw(6) << std::setfill('0') << task.task_index << "."
          << FormatExtension(format_);
      name = out.str();
    }
    return std::make_unique<WriteState>(directory_, format_, std::move(name), number_first,
                                        options_, task.sunk);
  }

 private:
  std::string directory_;
  FileFormat format_;
  std::string write_id_;
  std::shared_ptr<const WriteOptions> options_;
};

}  // namespace

std::string FormatExtension(FileFormat format) {
  switch (format) {
    case FileFormat::kParquet: return "parquet";
    case FileFormat::kCsv: return "csv";
    case FileFormat::kJson: return "json";
  }
  return "bin";
}

std::shared_ptr<const Transform> MakeWriteTransform(std::string directory, FileFormat format,
                                                    std::string write_id, WriteOptions options) {
  return std::make_shared<WriteTransform>(std::move(directory), format, std::move(write_id),
                                          std::move(options));
}

arrow::Status ValidateWriteOptions(FileFormat format, const WriteOptions& options) {
  for (const auto& column : options.partition_cols) {
    ARROW_RETURN_NOT_OK(HiveSegment(column, "").status());
  }
  if (format == FileFormat::kParquet) ARROW_RETURN_NOT_OK(ParquetProperties(options.parquet).status());
  if (format == FileFormat::kCsv) ARROW_RETURN_NOT_OK(CsvOptions(options.csv).status());
  if (!options.stream_compression.empty()) {
    auto type = arrow::util::Codec::GetCompressionType(options.stream_compression);
    if (!type.ok()) {
      return arrow::Status::Invalid("arrow_open_stream_args: compression='",
                                    options.stream_compression, "' is not a codec name");
    }
    auto codec = arrow::util::Codec::Create(*type);
    if (!codec.ok()) {
      return codec.status().WithMessage("arrow_open_stream_args: compression='",
                                        options.stream_compression, "': ", codec.status().message());
    }
    if (!*codec) {
      return arrow::Status::Invalid("arrow_open_stream_args: compression='",
                                    options.stream_compression, "' does not compress");
    }
    auto compressor = (*codec)->MakeCompressor();
    if (!compressor.ok()) {
      return compressor.status().WithMessage("arrow_open_stream_args: compression='",
                                             options.stream_compression, "' cannot compress a stream: ",
                                             compressor.status().message());
    }
  }
  return arrow::Status::OK();
}

arrow::Result<bool> PrepareWriteDirectory(const std::string& directory, SaveMode mode,
                                          std::string_view operation) {
  std::error_code error;
  auto status = std::filesystem::status(directory, error);
  bool exists = std::filesystem::exists(status);
  if (exists && !std::filesystem::is_directory(status)) {
    return arrow::Status::IOError(operation, ": '", directory, "' is a file; give a directory");
  }
  if (exists) {
    switch (mode) {
      case SaveMode::kAppend:
        break;
      case SaveMode::kError:
        return arrow::Status::Invalid(operation, ": path '", directory, "' already exists (mode='error'); "
                                      "use mode='overwrite' to replace it, 'append' to add to it or "
                                      "'ignore' to skip the write");
      case SaveMode::kIgnore:
        return false;
      case SaveMode::kOverwrite: {
        auto canonical = std::filesystem::weakly_canonical(directory, error);
        if (!error && canonical == canonical.root_path()) {
          return arrow::Status::Invalid(operation, ": mode='overwrite' would delete everything "
                                        "under the filesystem root '", directory, "'");
        }
        // What is inside the directory, never the directory itself: a symlink inside it
        // is removed, not followed.
        for (auto it = std::filesystem::directory_iterator(directory, error);
             !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
          std::error_code remove_error;
          std::filesystem::remove_all(it->path(), remove_error);
          if (remove_error) {
            return arrow::internal::IOErrorFromErrno(
                remove_error.value(), operation, ": mode='overwrite' cannot delete '",
                it->path().string(), "'");
          }
        }
        if (error) {
          return arrow::internal::IOErrorFromErrno(error.value(), operation, ": cannot list '",
                                                   directory, "'");
        }
        break;
      }
    }
    return true;
  }
  std::filesystem::create_directories(directory, error);
  if (error) {
    return arrow::internal::IOErrorFromErrno(error.value(), operation, ": cannot create directory '",
                                             directory, "'");
  }
  return true;
}

}  // namespace millstream
