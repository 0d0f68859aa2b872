#include <algorithm>
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
#include <arrow/util/io_util.h>
#include <parquet/arrow/writer.h>
#include <parquet/exception.h>
#include <parquet/file_writer.h>
#include <parquet/metadata.h>
#include <parquet/schema.h>

#include "exec/schema_unify.h"
#include "exec/transforms.h"
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

class ParquetFormatWriter : public FormatWriter {
 public:
  static arrow::Result<std::unique_ptr<FormatWriter>> Open(
      std::shared_ptr<arrow::io::OutputStream> out, std::shared_ptr<arrow::Schema> schema) {
    auto self = std::make_unique<ParquetFormatWriter>();
    self->out_ = out;
    self->props_ = parquet::WriterProperties::Builder().compression(parquet::Compression::SNAPPY)->build();
    if (schema->num_fields() == 0) return self;  // rows only: see Close
    auto arrow_props = parquet::ArrowWriterProperties::Builder().store_schema()->build();
    ARROW_ASSIGN_OR_RAISE(self->writer_, parquet::arrow::FileWriter::Open(
                                             *schema, arrow::default_memory_pool(), out,
                                             self->props_, arrow_props));
    return self;
  }
  arrow::Status Write(const arrow::RecordBatch& batch) override {
    if (!writer_) {
      rows_ += batch.num_rows();
      return arrow::Status::OK();
    }
    return writer_->WriteRecordBatch(batch);
  }
  arrow::Status Close() override {
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

  std::shared_ptr<arrow::io::OutputStream> out_;
  std::shared_ptr<parquet::WriterProperties> props_;
  std::unique_ptr<parquet::arrow::FileWriter> writer_;  // null when there are no columns
  int64_t rows_ = 0;
};

class CsvFormatWriter : public FormatWriter {
 public:
  static arrow::Result<std::unique_ptr<FormatWriter>> Open(
      std::shared_ptr<arrow::io::OutputStream> out, std::shared_ptr<arrow::Schema> schema) {
    auto self = std::make_unique<CsvFormatWriter>();
    ARROW_ASSIGN_OR_RAISE(self->writer_, arrow::csv::MakeCSVWriter(out, schema));
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

/// One output file: written under a hidden temporary name, renamed when committed,
/// removed if it never is (a failed or cancelled task leaves nothing behind).
class FileSink {
 public:
  FileSink(std::string directory, std::string name, FileFormat format)
      : final_path_(directory + "/" + name), temp_path_(directory + "/.tmp-" + name),
        format_(format) {}

  ~FileSink() {
    if (committed_ || !out_) return;
    writer_.reset();
    if (!out_->closed()) (void)out_->Close();
    std::remove(temp_path_.c_str());
  }

  arrow::Status Write(const arrow::RecordBatch& block) {
    if (!writer_) {
      ARROW_RETURN_NOT_OK(Open(block.schema()));
    } else if (format_ != FileFormat::kJson && !SameColumns(*block.schema(), *schema_)) {
      ARROW_ASSIGN_OR_RAISE(auto conformed, ConformToFile(block));
      return NamingFile(writer_->Write(*conformed));
    }
    return NamingFile(writer_->Write(block));
  }

  arrow::Status Commit() {
    if (!writer_ || committed_) return arrow::Status::OK();
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
  arrow::Status Open(std::shared_ptr<arrow::Schema> schema) {
    schema_ = std::move(schema);
    ARROW_ASSIGN_OR_RAISE(out_, arrow::io::FileOutputStream::Open(temp_path_));
    if (format_ == FileFormat::kParquet) {
      ARROW_ASSIGN_OR_RAISE(writer_, ParquetFormatWriter::Open(out_, schema_));
    } else if (format_ == FileFormat::kCsv) {
      ARROW_ASSIGN_OR_RAISE(writer_, CsvFormatWriter::Open(out_, schema_));
    } else {
      writer_ = std::make_unique<JsonFormatWriter>(out_);
    }
    return arrow::Status::OK();
  }

  /// A block whose columns differ from the open file's (blocks of one task need not
  /// share a schema): cast to the file's schema when that holds it (columns missing from
  /// the block become null, narrower types are widened); otherwise the file is
  /// committed and the next one (the name's last number + 1) opens with the unified
  /// schema. Types that cannot be unified are an error naming the column and both types.
  arrow::Result<std::shared_ptr<arrow::RecordBatch>> ConformToFile(const arrow::RecordBatch& block) {
    auto batch = arrow::RecordBatch::Make(block.schema(), block.num_rows(), block.columns());
    auto unified = UnifyBlockSchemas({schema_, batch->schema()});
    if (!unified.ok()) return unified.status().WithMessage("writing '", final_path_, "': ", unified.status().message());
    if (!SameColumns(**unified, *schema_)) {
      ARROW_RETURN_NOT_OK(Commit());
      ARROW_RETURN_NOT_OK(NextFileName());
      writer_.reset();
      out_.reset();
      committed_ = false;
      ARROW_RETURN_NOT_OK(Open(*unified));
    }
    return CastBlockToSchema(batch, schema_);
  }

  /// Moves the names to the next file of this sink: `<id>_<task>_<n>.<ext>` -> n + 1.
  arrow::Status NextFileName() {
    auto rename = [](std::string* path) -> arrow::Status {
      size_t dot = path->rfind('.'), underscore = path->rfind('_', dot);
      if (dot == std::string::npos || underscore == std::string::npos) {
        return arrow::Status::Invalid("cannot number the next file after '", *path, "'");
      }
      int64_t n = std::stoll(path->substr(underscore + 1, dot - underscore - 1));
      std::ostringstream next;
      next << std::setw(6) << std::setfill('0') << n + 1;
      path->replace(underscore + 1, dot - underscore - 1, next.str());
      return arrow::Status::OK();
    };
    ARROW_RETURN_NOT_OK(rename(&final_path_));
    return rename(&temp_path_);
  }

  /// `status` with the file it concerns named (an OS error's errno detail kept): a write
  /// that fails for lack of space says which file.
  arrow::Status NamingFile(arrow::Status status) const {
    if (status.ok()) return status;
    return status.WithMessage("writing '", final_path_, "': ", status.message());
  }

  std::string final_path_, temp_path_;
  FileFormat format_;
  std::shared_ptr<arrow::Schema> schema_;
  std::shared_ptr<arrow::io::FileOutputStream> out_;
  std::unique_ptr<FormatWriter> writer_;
  bool committed_ = false;
};

/// Writes a task's blocks: into one file, or with partition columns into one file per
/// `key=value/...` directory (the partition columns left out of the files).
class WriteState : public TransformState {
 public:
  WriteState(std::string directory, FileFormat format, std::string file_name,
             std::vector<std::string> partition_cols,
             std::function<void(const arrow::RecordBatch&)> sunk)
      : directory_(std::move(directory)), format_(format), file_name_(std::move(file_name)),
        partition_cols_(std::move(partition_cols)), sunk_(std::move(sunk)) {}

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
      std::error_code error;
      std::filesystem::create_directories(dir, error);  // an error surfaces when the file opens
      sink = std::make_unique<FileSink>(dir, file_name_, format_);
    }
    return sink.get();
  }

  std::string directory_;
  FileFormat format_;
  std::string file_name_;
  std::vector<std::string> partition_cols_;
  std::function<void(const arrow::RecordBatch&)> sunk_;
  std::map<std::string, std::unique_ptr<FileSink>> sinks_;
};

class WriteTransform : public Transform {
 public:
  WriteTransform(std::string directory, FileFormat format, std::string write_id,
                 std::vector<std::string> partition_cols)
      : directory_(std::move(directory)), format_(format), write_id_(std::move(write_id)),
        partition_cols_(std::move(partition_cols)) {}
  std::string name() const override {
    switch (format_) {
      case FileFormat::kParquet: return "WriteParquet";
      case FileFormat::kCsv: return "WriteCSV";
      case FileFormat::kJson: return "WriteJSON";
    }
    return "Write";
  }
  arrow::Result<std::unique_ptr<TransformState>> MakeState(const TaskContext& task) const override {
    std::ostringstream name;
    name << write_id_ << "_" << std::setw(6) << std::setfill('0') << task.task_index << "_000000."
         << FormatExtension(format_);
    for (const auto& column : partition_cols_) {
      ARROW_RETURN_NOT_OK(HiveSegment(column, "").status());  // a name that cannot be a directory
    }
    return std::make_unique<WriteState>(directory_, format_, name.str(), partition_cols_, task.sunk);
  }

 private:
  std::string directory_;
  FileFormat format_;
  std::string write_id_;
  std::vector<std::string> partition_cols_;
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
                                                    std::string write_id,
                                                    std::vector<std::string> partition_cols) {
  return std::make_shared<WriteTransform>(std::move(directory), format, std::move(write_id),
                                          std::move(partition_cols));
}

}  // namespace millstream
