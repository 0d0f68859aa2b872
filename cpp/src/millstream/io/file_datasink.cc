#include <cmath>
#include <cstdio>
#include <iomanip>
#include <sstream>

#include <arrow/api.h>
#include <arrow/compute/api.h>
#include <arrow/csv/writer.h>
#include <arrow/filesystem/api.h>
#include <arrow/io/api.h>
#include <arrow/ipc/writer.h>
#include <parquet/arrow/writer.h>

#include "exec/transforms.h"

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
    auto props = parquet::WriterProperties::Builder().compression(parquet::Compression::SNAPPY)->build();
    auto arrow_props = parquet::ArrowWriterProperties::Builder().store_schema()->build();
    auto self = std::make_unique<ParquetFormatWriter>();
    ARROW_ASSIGN_OR_RAISE(self->writer_, parquet::arrow::FileWriter::Open(
                                             *schema, arrow::default_memory_pool(), out, props,
                                             arrow_props));
    return self;
  }
  arrow::Status Write(const arrow::RecordBatch& batch) override {
    return writer_->WriteRecordBatch(batch);
  }
  arrow::Status Close() override { return writer_->Close(); }

 private:
  std::unique_ptr<parquet::arrow::FileWriter> writer_;
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
    if (arrow::is_integer(type)) {
      ARROW_ASSIGN_OR_RAISE(auto as_int, arrow::compute::Cast(array, arrow::int64()));
      const auto& ints = static_cast<const arrow::Int64Array&>(*as_int);
      if (type == Type::UINT64) {
        ARROW_ASSIGN_OR_RAISE(auto as_str, arrow::compute::Cast(array, arrow::utf8()));
        const auto& strs = static_cast<const arrow::StringArray&>(*as_str);
        for (int64_t i = 0; i < array.length(); ++i)
          (*out)[i] = array.IsNull(i) ? "null" : std::string(strs.GetView(i));
        return arrow::Status::OK();
      }
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

class WriteState : public TransformState {
 public:
  WriteState(std::string directory, FileFormat format, std::string write_id, int64_t task_index)
      : directory_(std::move(directory)), format_(format) {
    std::ostringstream name;
    name << write_id << "_" << std::setw(6) << std::setfill('0') << task_index << "_000000."
         << FormatExtension(format);
    final_path_ = directory_ + "/" + name.str();
    temp_path_ = directory_ + "/.tmp-" + name.str();
  }

  ~WriteState() override {
    // A task that failed or was cancelled leaves no file behind.
    if (writer_ || out_) {
      writer_.reset();
      if (out_ && !out_->closed()) (void)out_->Close();
      std::remove(temp_path_.c_str());
    }
  }

  arrow::Status Push(Block block, const Emit&) override {
    if (block->num_rows() == 0) return arrow::Status::OK();
    if (!writer_) {
      schema_ = block->schema();
      ARROW_ASSIGN_OR_RAISE(out_, arrow::io::FileOutputStream::Open(temp_path_));
      if (format_ == FileFormat::kParquet) {
        ARROW_ASSIGN_OR_RAISE(writer_, ParquetFormatWriter::Open(out_, schema_));
      } else if (format_ == FileFormat::kCsv) {
        ARROW_ASSIGN_OR_RAISE(writer_, CsvFormatWriter::Open(out_, schema_));
      } else {
        writer_ = std::make_unique<JsonFormatWriter>(out_);
      }
    } else if (!block->schema()->Equals(*schema_, /*check_metadata=*/false)) {
      return arrow::Status::Invalid("writing '", final_path_, "': a block's schema (",
                                    block->schema()->ToString(), ") differs from the file's (",
                                    schema_->ToString(), ")");
    }
    return writer_->Write(*block);
  }

  arrow::Status Finish(const Emit&) override {
    if (!writer_) return arrow::Status::OK();
    ARROW_RETURN_NOT_OK(writer_->Close());
    if (!out_->closed()) ARROW_RETURN_NOT_OK(out_->Close());
    writer_.reset();
    out_.reset();
    if (std::rename(temp_path_.c_str(), final_path_.c_str()) != 0) {
      std::remove(temp_path_.c_str());
      return arrow::Status::IOError("cannot rename '", temp_path_, "' to '", final_path_, "'");
    }
    return arrow::Status::OK();
  }

 private:
  std::string directory_;
  FileFormat format_;
  std::string final_path_, temp_path_;
  std::shared_ptr<arrow::Schema> schema_;
  std::shared_ptr<arrow::io::FileOutputStream> out_;
  std::unique_ptr<FormatWriter> writer_;
};

class WriteTransform : public Transform {
 public:
  WriteTransform(std::string directory, FileFormat format, std::string write_id)
      : directory_(std::move(directory)), format_(format), write_id_(std::move(write_id)) {}
  std::string name() const override {
    switch (format_) {
      case FileFormat::kParquet: return "WriteParquet";
      case FileFormat::kCsv: return "WriteCSV";
      case FileFormat::kJson: return "WriteJSON";
    }
    return "Write";
  }
  arrow::Result<std::unique_ptr<TransformState>> MakeState(const TaskContext& task) const override {
    return std::make_unique<WriteState>(directory_, format_, write_id_, task.task_index);
  }

 private:
  std::string directory_;
  FileFormat format_;
  std::string write_id_;
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
                                                    std::string write_id) {
  return std::make_shared<WriteTransform>(std::move(directory), format, std::move(write_id));
}

}  // namespace millstream
