#include <algorithm>
#include <system_error>
#include <thread>
#include <atomic>
#include <random>
#include <set>

#include <arrow/api.h>
#include <arrow/compute/api.h>
#include <arrow/extension/fixed_shape_tensor.h>
#include <arrow/filesystem/api.h>
#include <arrow/io/caching.h>
#include <arrow/io/memory.h>
#include <parquet/arrow/reader.h>
#include <parquet/arrow/schema.h>
#include <parquet/file_reader.h>
#include <parquet/statistics.h>

#include "io/filesystems.h"
#include "runtime/counting_memory_pool.h"
#include "io/sources.h"

namespace millstream {
namespace {

namespace cp = arrow::compute;

/// Rows per decoded batch at most: small enough that the first block of a read reaches
/// the next stage quickly, large enough that per-block costs vanish next to the work.
constexpr int64_t kMaxReadBatchRows = 64 * 1024;

/// One Parquet file's footer and what the read needs from it.
struct ParquetFile {
  std::string path;
  /// Bytes, from the listing: opening with it spares an object store a HEAD request.
  int64_t size = -1;
  std::shared_ptr<parquet::FileMetaData> metadata;
  /// The whole file, when it is small enough that reading its footer read all of it
  /// (kWholeFileBytes): its read task decodes these bytes instead of opening it again.
  std::shared_ptr<arrow::Buffer> contents;
  /// The file's columns, then its partition columns.
  std::shared_ptr<arrow::Schema> schema;
  /// Hive partition values of this file, for keys that are not columns of the file.
  std::vector<PartitionKey> partition;
};

/// Files of at most this many bytes are read whole when their footer is read (Arrow reads
/// the last 64 KiB for a footer anyway), and kept for their read task: a small file is
/// opened and read once, one request on an object store, not two.
constexpr int64_t kWholeFileBytes = 64 * 1024;
/// The most bytes of small files one read keeps this way (2,000 files of 32 KiB).
constexpr int64_t kWholeFilesBudget = 64 << 20;

/// Opens `path`, giving its size when known (an object store then needs no HEAD request).
arrow::Result<std::shared_ptr<arrow::io::RandomAccessFile>> OpenWithSize(arrow::fs::FileSystem& fs,
                                                                         const std::string& path,
                                                                         int64_t size) {
  if (size < 0) return fs.OpenInputFile(path);
  arrow::fs::FileInfo info(path, arrow::fs::FileType::File);
  info.set_size(size);
  return fs.OpenInputFile(info);
}

/// How a read task's column chunks are fetched from an object store: chunks less than
/// 1 MiB apart are merged (one request costs a round trip, about what 1 MiB takes to
/// arrive) into requests of up to 64 MiB, so a task reading a file of that size makes one
/// request, not one per 32 MiB (Arrow's default) or per column chunk. Lazy, with the next
/// request fetched while the current one is decoded: a task holds at most two requests'
/// bytes.
arrow::io::CacheOptions ObjectStoreCacheOptions() {
  arrow::io::CacheOptions options = arrow::io::CacheOptions::LazyDefaults();
  options.hole_size_limit = 1 << 20;
  options.range_size_limit = 64 << 20;
  options.prefetch_limit = 1;
  return options;
}

/// The most column-chunk bytes a local read task pre-buffers at once: Arrow's pre-buffer
/// reads every chunk of the row groups it is given before decoding any, so a task over a
/// file of 80 MB held all of it (two such tasks: 150 MB the memory limit did not foresee).
constexpr int64_t kLocalPreBufferBytes = 16 << 20;

/// Consecutive row groups a read task pre-buffers and decodes together, and the bytes of
/// the column chunks it reads of them.
struct PreBufferWindow {
  std::vector<int> row_groups;
  int64_t bytes = 0;
};

/// `row_groups` cut into windows: one holding all of them unless `windowed`, else windows
/// of at most kLocalPreBufferBytes of the `leaves`' compressed column chunks (a row group
/// bigger than that on its own).
std::vector<PreBufferWindow> PreBufferWindows(const parquet::FileMetaData& metadata,
                                              const std::vector<int>& row_groups,
                                              const std::vector<int>& leaves, bool windowed) {
  std::vector<PreBufferWindow> windows;
  for (int group : row_groups) {
    auto row_group = metadata.RowGroup(group);
    int64_t group_bytes = 0;
    for (int leaf : leaves) group_bytes += row_group->ColumnChunk(leaf)->total_compressed_size();
    if (windows.empty() || (windowed && windows.back().bytes + group_bytes > kLocalPreBufferBytes)) {
      windows.emplace_back();
    }
    windows.back().row_groups.push_back(group);
    windows.back().bytes += group_bytes;
  }
  if (windows.empty()) windows.emplace_back();  // no row groups: a reader of none
  return windows;
}

std::string ColumnList(const arrow::Schema& schema) {
  std::string out;
  for (const auto& name : schema.field_names()) out += (out.empty() ? "" : ", ") + name;
  return out;
}

/// `names` joined by ", "; past 8 names, the first 6 and how many more.
std::string ShortColumnList(const std::vector<std::string>& names) {
  constexpr size_t kShown = 6, kAll = 8;
  const size_t shown = names.size() > kAll ? kShown : names.size();
  std::string out;
  for (size_t i = 0; i < shown; ++i) out += (i ? ", " : "") + names[i];
  if (shown < names.size()) out += ", ... " + std::to_string(names.size() - shown) + " more";
  return out;
}

/// Leaf column indices of the top-level fields `fields` (all when empty).
std::vector<int> LeafColumns(const parquet::arrow::SchemaManifest& manifest,
                             const std::vector<int>& fields) {
  std::vector<int> leaves;
  std::function<void(const parquet::arrow::SchemaField&)> visit =
      [&](const parquet::arrow::SchemaField& field) {
        if (field.is_leaf()) leaves.push_back(field.column_index);
        for (const auto& child : field.children) visit(child);
      };
  for (int i : fields) visit(manifest.schema_fields[i]);
  return leaves;
}

/// Whether the statistics of row group `rg` prove that no row can satisfy `bound_filter`.
bool RowGroupExcluded(const ParquetFile& file, int rg, const cp::Expression& bound_filter) {
  auto row_group = file.metadata->RowGroup(rg);
  std::vector<cp::Expression> facts;
  for (const auto& [key, value] : file.partition) {
    facts.push_back(value ? cp::equal(cp::field_ref(key), cp::literal(*value))
                          : cp::is_null(cp::field_ref(key)));
  }
  for (const auto& ref : cp::FieldsInExpression(bound_filter)) {
    const std::string* name = ref.name();
    if (!name) continue;
    int leaf = file.metadata->schema()->ColumnIndex(*name);
    auto field = file.schema->GetFieldByName(*name);
    if (leaf < 0 || !field) continue;
    auto chunk = row_group->ColumnChunk(leaf);
    auto stats = chunk->statistics();
    if (!stats) continue;
    if (stats->HasNullCount() && stats->null_count() == row_group->num_rows()) {
      facts.push_back(cp::is_null(cp::field_ref(*name)));
      continue;
    }
    if (!stats->HasMinMax()) continue;
    std::shared_ptr<arrow::Scalar> min, max;
    if (!parquet::arrow::StatisticsAsScalars(*stats, &min, &max).ok()) continue;
    auto min_cast = min->CastTo(field->type());
    auto max_cast = max->CastTo(field->type());
    if (!min_cast.ok() || !max_cast.ok()) continue;
    auto range = cp::and_(cp::greater_equal(cp::field_ref(*name), cp::literal(*min_cast)),
                          cp::less_equal(cp::field_ref(*name), cp::literal(*max_cast)));
    if (stats->HasNullCount() && stats->null_count() > 0) {
      range = cp::or_(range, cp::is_null(cp::field_ref(*name)));
    }
    facts.push_back(range);
  }
  if (facts.empty()) return false;
  auto guarantee = cp::and_(facts).Bind(*file.schema);
  if (!guarantee.ok()) return false;
  auto simplified = cp::SimplifyWithGuarantee(bound_filter, *guarantee);
  if (!simplified.ok()) return false;
  auto literal = simplified->literal();
  if (!literal || !literal->is_scalar()) return false;
  const auto& scalar = *literal->scalar();
  return !scalar.is_valid ||
         (scalar.type->id() == arrow::Type::BOOL &&
          !static_cast<const arrow::BooleanScalar&>(scalar).value);
}

/// Ray's row hashes of rows [start, start + n) of a file: splitmix64's finalizer of
/// seed + position.
arrow::Result<std::shared_ptr<arrow::Array>> RowHashes(uint64_t seed, int64_t start, int64_t n) {
  arrow::UInt64Builder builder;
  ARROW_RETURN_NOT_OK(builder.Reserve(n));
  for (int64_t i = 0; i < n; ++i) {
    uint64_t z = seed + static_cast<uint64_t>(start + i);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    builder.UnsafeAppend(z ^ (z >> 31));
  }
  return builder.Finish();
}

/// The fixed-shape tensor type a `tensor_column_schema` entry reads its column as.
std::shared_ptr<arrow::DataType> TensorType(const ParquetFileOptions::TensorColumn& spec) {
  return arrow::extension::fixed_shape_tensor(spec.value_type, spec.shape);
}

/// A binary column of raw C-order arrays as a fixed-shape tensor column: every value must
/// hold exactly one array's bytes (no nulls). The values are used in place.
arrow::Result<std::shared_ptr<arrow::Array>> ToTensorColumn(const std::shared_ptr<arrow::Array>& column,
                                                            const ParquetFileOptions::TensorColumn& spec,
                                                            const std::string& path) {
  int64_t elements = 1;
  for (int64_t d : spec.shape) elements *= d;
  const int width = spec.value_type->byte_width();
  const int64_t expected = elements * width;
  auto fail = [&](const std::string& what) {
    return arrow::Status::Invalid("tensor_column_schema: column '", spec.name, "' in '", path, "' ", what);
  };
  if (width <= 0) return fail("needs a fixed-width value type, got " + spec.value_type->ToString());
  std::shared_ptr<arrow::Buffer> data;
  int64_t start = 0;
  auto check = [&](auto offsets, auto values) -> arrow::Status {
    if (column->null_count() > 0) return fail("has null values; a tensor cannot be read from a null");
    for (int64_t i = 0; i < column->length(); ++i) {
      if (offsets[i + 1] - offsets[i] != expected) {
        return fail("row " + std::to_string(i) + " holds " + std::to_string(offsets[i + 1] - offsets[i]) +
                    " bytes, not the " + std::to_string(expected) + " of a " + spec.value_type->ToString() +
                    " array of the given shape");
      }
    }
    start = column->length() ? offsets[0] : 0;
    data = values;
    return arrow::Status::OK();
  };
  switch (column->type_id()) {
    case arrow::Type::BINARY:
    case arrow::Type::STRING: {
      const auto& a = static_cast<const arrow::BinaryArray&>(*column);
      ARROW_RETURN_NOT_OK(check(a.raw_value_offsets(), a.value_data()));
      break;
    }
    case arrow::Type::LARGE_BINARY:
    case arrow::Type::LARGE_STRING: {
      const auto& a = static_cast<const arrow::LargeBinaryArray&>(*column);
      ARROW_RETURN_NOT_OK(check(a.raw_value_offsets(), a.value_data()));
      break;
    }
    default:
      return fail("is " + column->type()->ToString() + ", not binary (serialized arrays)");
  }
  auto values_data = arrow::ArrayData::Make(spec.value_type, column->length() * elements,
                                            {nullptr, data ? arrow::SliceBuffer(data, start, column->length() * expected)
                                                           : nullptr},
                                            0);
  auto values = arrow::MakeArray(values_data);
  ARROW_ASSIGN_OR_RAISE(auto storage, arrow::FixedSizeListArray::FromArrays(values, static_cast<int32_t>(elements)));
  return arrow::ExtensionType::WrapArray(TensorType(spec), storage);
}

class ParquetReadTask : public ReadTask {
 public:
  ParquetReadTask(std::shared_ptr<arrow::fs::FileSystem> fs, std::string path, int64_t file_size,
                  std::shared_ptr<arrow::Buffer> contents,
                  std::shared_ptr<parquet::FileMetaData> metadata, std::vector<int> row_groups,
                  std::vector<std::string> columns, std::vector<std::string> dictionary_columns,
                  std::optional<cp::Expression> filter, int64_t rows, int64_t bytes, int64_t batch_rows,
                  std::vector<PartitionKey> partition, bool include_paths,
                  std::shared_ptr<arrow::Schema> target_schema, const RetryPolicy* retry,
                  std::shared_ptr<const ParquetFileOptions> more = nullptr, int64_t first_row = 0)
      : fs_(std::move(fs)), path_(std::move(path)), file_size_(file_size), contents_(std::move(contents)),
        metadata_(std::move(metadata)),
        row_groups_(std::move(row_groups)), columns_(std::move(columns)),
        dictionary_columns_(std::move(dictionary_columns)), filter_(std::move(filter)), rows_(rows), bytes_(bytes), batch_rows_(batch_rows),
        partition_(std::move(partition)), include_paths_(include_paths),
        target_schema_(std::move(target_schema)),
        retry_(retry && !retry->patterns.empty() ? std::make_shared<RetryPolicy>(*retry) : nullptr),
        more_(std::move(more)), first_row_(first_row) {}

  arrow::Status Run(const Emit& emit) const override {
    auto once = [this](const Emit& out) -> arrow::Status {
      try {
        return RunImpl(out);
      } catch (const std::exception& e) {
        return arrow::Status::IOError(e.what());
      }
    };
    arrow::Status status = retry_ ? RunWithRetry(once, emit, *retry_) : once(emit);
    if (!status.ok() && status.code() != arrow::StatusCode::Cancelled &&
        status.message().find(path_) == std::string::npos) {
      return status.WithMessage("reading '", path_, "': ", status.message());
    }
    return status;
  }

  int64_t estimated_rows() const override { return rows_; }
  int64_t estimated_bytes() const override { return bytes_; }
  bool sized_by_metadata() const override { return true; }

 private:
  /// The batch's columns cast to the target schema's types, and the target's columns the
  /// batch lacks added as nulls; columns not in the target (the path) kept as they are.
  arrow::Result<std::shared_ptr<arrow::RecordBatch>> CastToTarget(
      std::shared_ptr<arrow::RecordBatch> batch) const {
    arrow::FieldVector fields;
    arrow::ArrayVector columns;
    for (const auto& field : target_schema_->fields()) {
      int index = batch->schema()->GetFieldIndex(field->name());
      if (index < 0) {
        ARROW_ASSIGN_OR_RAISE(auto nulls, arrow::MakeArrayOfNull(field->type(), batch->num_rows()));
        columns.push_back(std::move(nulls));
      } else if (!batch->column(index)->type()->Equals(*field->type())) {
        auto cast = cp::Cast(*batch->column(index), field->type());
        if (!cast.ok()) {
          return cast.status().WithMessage("column '", field->name(), "' (", batch->column(index)->type()->ToString(),
                                           ") cannot be cast to the schema's ", field->type()->ToString(),
                                           ": ", cast.status().message());
        }
        columns.push_back(*std::move(cast));
      } else {
        columns.push_back(batch->column(index));
      }
      fields.push_back(field);
    }
    for (int i = 0; i < batch->num_columns(); ++i) {
      if (target_schema_->GetFieldIndex(batch->schema()->field(i)->name()) < 0) {
        fields.push_back(batch->schema()->field(i));
        columns.push_back(batch->column(i));
      }
    }
    return arrow::RecordBatch::Make(arrow::schema(fields, target_schema_->metadata()), batch->num_rows(),
                                    std::move(columns));
  }

  arrow::Status RunImpl(const Emit& emit) const {
    std::shared_ptr<arrow::io::RandomAccessFile> input;
    if (contents_) {
      input = std::make_shared<arrow::io::BufferReader>(contents_);
    } else {
      ARROW_ASSIGN_OR_RAISE(input, OpenWithSize(*fs_, path_, file_size_));
    }
    parquet::ArrowReaderProperties arrow_props;
    arrow_props.set_batch_size(batch_rows_);
    arrow_props.set_pre_buffer(true);
    arrow_props.set_use_threads(false);
    // Decode buffers and pre-buffered column chunks count as the engine's memory.
    arrow_props.set_io_context(arrow::io::IOContext(EngineMemoryPool()));
    if (!IsLocal(*fs_)) arrow_props.set_cache_options(ObjectStoreCacheOptions());
    for (const auto& name : dictionary_columns_) {
      // Top-level string and binary columns only (ColumnIndex finds a leaf by its path).
      int column = metadata_->schema()->ColumnIndex(name);
      if (column >= 0 && metadata_->schema()->Column(column)->physical_type() == parquet::Type::BYTE_ARRAY) {
        arrow_props.set_read_dictionary(column, true);
      }
    }
    parquet::arrow::FileReaderBuilder builder;
    builder.memory_pool(EngineMemoryPool());
    // The footer was parsed when the read was planned: don't parse it again.
    ARROW_RETURN_NOT_OK(builder.Open(input, parquet::ReaderProperties(EngineMemoryPool()), metadata_));
    std::unique_ptr<parquet::arrow::FileReader> reader;
    ARROW_RETURN_NOT_OK(builder.properties(arrow_props)->Build(&reader));
    std::shared_ptr<arrow::Schema> file_schema;
    ARROW_RETURN_NOT_OK(reader->GetSchema(&file_schema));

    // Read the projected columns plus those the filter needs; partition columns and the
    // path come from the path, not the file; with a target schema, its columns the file
    // lacks are null.
    auto is_partition_key = [&](const std::string& name) {
      return std::any_of(partition_.begin(), partition_.end(),
                         [&](const PartitionKey& key) { return key.name == name; });
    };
    auto not_in_file = [&](const std::string& name) {
      return is_partition_key(name) || (include_paths_ && name == "path") ||
             (row_hash() && name == "row_hash");
    };
    std::vector<std::string> wanted = columns_;
    if (wanted.empty()) {
      if (target_schema_) {
        wanted = target_schema_->field_names();
      } else {
        wanted = file_schema->field_names();
        for (const auto& [key, value] : partition_) wanted.push_back(key);
      }
      if (include_paths_) wanted.push_back("path");
      if (row_hash()) {
        // Ray's row hash replaces a column of the file of that name.
        wanted.erase(std::remove(wanted.begin(), wanted.end(), "row_hash"), wanted.end());
        wanted.push_back("row_hash");
      }
    }
    const bool hash_wanted = row_hash() && std::find(wanted.begin(), wanted.end(), "row_hash") != wanted.end();
    uint64_t seed = 0;
    if (hash_wanted) {
      auto found = more_->row_hash_seeds.find(path_);
      if (found == more_->row_hash_seeds.end()) {
        return arrow::Status::Invalid("include_row_hash: no seed for '", path_, "'");
      }
      seed = found->second;
    }
    int64_t next_row = first_row_;
    std::vector<std::string> to_read;
    auto want_from_file = [&](const std::string& name) {
      if (not_in_file(name) || std::find(to_read.begin(), to_read.end(), name) != to_read.end()) return;
      if (target_schema_ && file_schema->GetFieldIndex(name) < 0 &&
          file_schema->GetAllFieldIndices(name).empty() && target_schema_->GetFieldIndex(name) >= 0) {
        return;  // a null column of the target's type
      }
      to_read.push_back(name);
    };
    for (const auto& name : wanted) want_from_file(name);
    if (filter_) {
      for (const auto& ref : cp::FieldsInExpression(*filter_)) {
        if (ref.name()) want_from_file(*ref.name());
      }
    }
    std::vector<int> fields;
    for (const auto& name : to_read) {
      int index = file_schema->GetFieldIndex(name);
      if (index < 0 && file_schema->GetAllFieldIndices(name).size() > 1) {
        return arrow::Status::Invalid("'", path_, "' has more than one column named '", name,
                                      "'; its columns are: ", ColumnList(*file_schema));
      }
      if (index < 0) {
        return arrow::Status::KeyError("column '", name, "' not found in '", path_,
                                       "'; its columns are: ", ColumnList(*file_schema));
      }
      fields.push_back(index);
    }
    auto leaves = LeafColumns(reader->manifest(), fields);
    const bool local_file = IsLocal(*fs_) && !contents_;
    const auto windows = PreBufferWindows(*metadata_, row_groups_, leaves, local_file);
    size_t window = 0;
    std::shared_ptr<arrow::RecordBatchReader> batches;
    // Arrow's IO threads allocate the pre-buffered chunks: charged to this task by hand.
    // (An object store's lazy requests are not: at most two of 64 MiB.)
    ScopedTaskCharge read_ahead;

    cp::Expression bound;
    std::shared_ptr<arrow::Schema> bound_schema;
    while (true) {
      std::shared_ptr<arrow::RecordBatch> batch;
      if (batches) {
        ARROW_ASSIGN_OR_RAISE(batch, batches->Next());
      }
      if (!batch) {
        if (window == windows.size()) break;
        // The next window's column chunks replace the last one's in the reader's cache.
        batches.reset();
        read_ahead.Set(local_file ? windows[window].bytes : 0);
        ARROW_ASSIGN_OR_RAISE(batches, reader->GetRecordBatchReader(windows[window++].row_groups, leaves));
        continue;
      }
      for (const auto& [key, value] : partition_) {
        ARROW_ASSIGN_OR_RAISE(auto column,
                              value ? arrow::MakeArrayFromScalar(arrow::StringScalar(*value), batch->num_rows())
                                    : arrow::MakeArrayOfNull(arrow::utf8(), batch->num_rows()));
        ARROW_ASSIGN_OR_RAISE(batch, batch->AddColumn(batch->num_columns(),
                                                      arrow::field(key, arrow::utf8()), column));
      }
      if (include_paths_) {
        if (int existing = batch->schema()->GetFieldIndex("path"); existing >= 0) {
          ARROW_ASSIGN_OR_RAISE(batch, batch->RemoveColumn(existing));
        }
        ARROW_ASSIGN_OR_RAISE(auto column, arrow::MakeArrayFromScalar(arrow::StringScalar(path_),
                                                                      batch->num_rows()));
        ARROW_ASSIGN_OR_RAISE(batch, batch->AddColumn(batch->num_columns(),
                                                      arrow::field("path", arrow::utf8()), column));
      }
      if (target_schema_) {
        ARROW_ASSIGN_OR_RAISE(batch, CastToTarget(batch));
      }
      if (filter_) {
        if (!bound_schema || !bound_schema->Equals(*batch->schema())) {
          ARROW_ASSIGN_OR_RAISE(bound, filter_->Bind(*batch->schema()));
          bound_schema = batch->schema();
        }
        // The mask and the filtered copy count as the engine's memory.
        cp::ExecContext exec(EngineMemoryPool());
        ARROW_ASSIGN_OR_RAISE(auto mask, cp::ExecuteScalarExpression(bound, cp::ExecBatch(*batch), &exec));
        ARROW_ASSIGN_OR_RAISE(auto filtered, cp::Filter(batch, mask, cp::FilterOptions::Defaults(), &exec));
        batch = filtered.record_batch();
      }
      if (hash_wanted) {
        // After the filter: a row's position among the rows read from the file, as Ray.
        ARROW_ASSIGN_OR_RAISE(auto hashes, RowHashes(seed, next_row, batch->num_rows()));
        next_row += batch->num_rows();
        if (int existing = batch->schema()->GetFieldIndex("row_hash"); existing >= 0) {
          ARROW_ASSIGN_OR_RAISE(batch, batch->RemoveColumn(existing));
        }
        ARROW_ASSIGN_OR_RAISE(batch, batch->AddColumn(batch->num_columns(),
                                                      arrow::field("row_hash", arrow::uint64()), hashes));
      }
      if (more_) {
        for (const auto& spec : more_->tensor_columns) {
          int index = batch->schema()->GetFieldIndex(spec.name);
          if (index < 0) continue;
          ARROW_ASSIGN_OR_RAISE(auto tensor, ToTensorColumn(batch->column(index), spec, path_));
          ARROW_ASSIGN_OR_RAISE(batch, batch->SetColumn(index, arrow::field(spec.name, tensor->type()), tensor));
        }
      }
      if (batch->num_columns() != static_cast<int>(wanted.size()) || !columns_.empty()) {
        arrow::FieldVector out_fields;
        arrow::ArrayVector out_columns;
        for (const auto& name : wanted) {
          int index = batch->schema()->GetFieldIndex(name);
          out_fields.push_back(batch->schema()->field(index));
          out_columns.push_back(batch->column(index));
        }
        batch = arrow::RecordBatch::Make(arrow::schema(out_fields, batch->schema()->metadata()),
                                         batch->num_rows(), out_columns);
      }
      ARROW_RETURN_NOT_OK(emit(std::move(batch)));
    }
    return arrow::Status::OK();
  }

  std::shared_ptr<arrow::fs::FileSystem> fs_;
  std::string path_;
  int64_t file_size_;
  /// The whole file, read when the read was planned (small files); null: open it.
  std::shared_ptr<arrow::Buffer> contents_;
  std::shared_ptr<parquet::FileMetaData> metadata_;
  std::vector<int> row_groups_;
  std::vector<std::string> columns_;
  std::vector<std::string> dictionary_columns_;
  std::optional<cp::Expression> filter_;
  int64_t rows_, bytes_, batch_rows_;
  std::vector<PartitionKey> partition_;
  bool include_paths_;
  std::shared_ptr<arrow::Schema> target_schema_;
  std::shared_ptr<const RetryPolicy> retry_;
  std::shared_ptr<const ParquetFileOptions> more_;
  /// The position in its file of the first row this task reads (for row hashes).
  int64_t first_row_;

  bool row_hash() const { return more_ && more_->include_row_hash; }
};

class ParquetDatasource : public Datasource {
 public:
  ParquetDatasource(std::shared_ptr<arrow::fs::FileSystem> fs,
                    std::shared_ptr<std::vector<ParquetFile>> files,
                    std::shared_ptr<arrow::Schema> schema, ReadParquetOptions options,
                    std::shared_ptr<const ParquetFileOptions> more, bool rows_unfiltered = false)
      : fs_(std::move(fs)), files_(std::move(files)), schema_(std::move(schema)),
        options_(std::move(options)), more_(std::move(more)), rows_unfiltered_(rows_unfiltered) {}

  /// "ReadParquet", or with what was pushed into the read:
  /// "ReadParquet[columns=[a, b], filter=(a > 1)]" (past 8 columns, the first 6 and a count).
  std::string name() const override {
    std::vector<std::string> pushed;
    if (!options_.columns.empty()) pushed.push_back("columns=[" + ShortColumnList(options_.columns) + "]");
    if (options_.filter) pushed.push_back((rows_unfiltered_ ? "prune=" : "filter=") + options_.filter->ToString());
    if (!options_.dictionary_columns.empty()) {
      pushed.push_back("dictionary=[" + ShortColumnList(options_.dictionary_columns) + "]");
    }
    if (pushed.empty()) return "ReadParquet";
    std::string out = "ReadParquet[";
    for (size_t i = 0; i < pushed.size(); ++i) out += (i ? ", " : "") + pushed[i];
    return out + "]";
  }

  arrow::Result<std::vector<std::shared_ptr<ReadTask>>> GetReadTasks(
      const ReadTaskOptions& read_options) const override {
    int64_t parallelism = read_options.parallelism;
    const int64_t target_max_block_size = read_options.target_max_block_size;
    if (options_.override_num_blocks) parallelism = *options_.override_num_blocks;
    struct Piece {
      const ParquetFile* file;
      std::vector<int> row_groups;
      int64_t rows = 0, bytes = 0;
    };
    std::vector<Piece> pieces;
    std::vector<const ParquetFile*> order;
    for (const auto& file : *files_) order.push_back(&file);
    if (more_->shuffle) {
      uint64_t execution = executions_.fetch_add(1);
      uint64_t seed = !more_->shuffle_seed ? std::random_device{}()
                      : more_->reseed_after_execution ? *more_->shuffle_seed + execution
                                                      : *more_->shuffle_seed;
      std::mt19937_64 rng(seed);
      std::shuffle(order.begin(), order.end(), rng);
    }
    // Row hashes count the rows a filter keeps from the start of the file: such a file is
    // read by one task.
    const bool whole_files = more_->include_row_hash && options_.filter.has_value();
    for (const ParquetFile* file_ptr : order) {
      const ParquetFile& file = *file_ptr;
      std::optional<cp::Expression> bound;
      if (options_.filter) {
        auto bound_result = options_.filter->Bind(*file.schema);
        if (!bound_result.ok() && more_->schema) {
          // The filter is on the target schema's types: no pruning by this file's statistics.
        } else if (!bound_result.ok()) {
          return arrow::Status::Invalid("read_parquet filter ", options_.filter->ToString(),
                                        " does not apply to '", file.path,
                                        "': ", bound_result.status().message());
        }
        bound = *bound_result;
      }
      Piece piece{&file, {}, 0, 0};
      for (int rg = 0; rg < file.metadata->num_row_groups(); ++rg) {
        if (bound && RowGroupExcluded(file, rg, *bound)) continue;
        auto row_group = file.metadata->RowGroup(rg);
        int64_t bytes = ProjectedBytes(*row_group, file);
        if (!piece.row_groups.empty() && piece.bytes + bytes > target_max_block_size && !whole_files) {
          pieces.push_back(std::move(piece));
          piece = Piece{&file, {}, 0, 0};
        }
        piece.row_groups.push_back(rg);
        piece.rows += row_group->num_rows();
        piece.bytes += bytes;
      }
      if (!piece.row_groups.empty()) pieces.push_back(std::move(piece));
    }
    // Split the largest pieces further (by row group) while fewer than asked for.
    while (!whole_files && static_cast<int64_t>(pieces.size()) < parallelism) {
      auto largest = std::max_element(pieces.begin(), pieces.end(), [](const Piece& a, const Piece& b) {
        return a.row_groups.size() < b.row_groups.size();
      });
      if (largest == pieces.end() || largest->row_groups.size() < 2) break;
      Piece second{largest->file, {}, 0, 0};
      size_t half = largest->row_groups.size() / 2;
      second.row_groups.assign(largest->row_groups.begin() + half, largest->row_groups.end());
      largest->row_groups.resize(half);
      for (Piece* p : {&*largest, &second}) {
        p->rows = p->bytes = 0;
        for (int rg : p->row_groups) {
          p->rows += p->file->metadata->RowGroup(rg)->num_rows();
          p->bytes += ProjectedBytes(*p->file->metadata->RowGroup(rg), *p->file);
        }
      }
      pieces.insert(largest + 1, std::move(second));
    }
    std::vector<std::shared_ptr<ReadTask>> tasks;
    for (const auto& piece : pieces) {
      // Blocks of at most one row group (so the first block streams out after decoding
      // one row group, not the whole piece) and at most target_max_block_size.
      int64_t bytes_per_row = piece.rows ? std::max<int64_t>(1, piece.bytes / piece.rows) : 1;
      int64_t largest_row_group = 1;
      for (int rg : piece.row_groups) {
        largest_row_group = std::max(largest_row_group, piece.file->metadata->RowGroup(rg)->num_rows());
      }
      int64_t batch_rows = std::min({largest_row_group, kMaxReadBatchRows,
                                     std::max<int64_t>(1024, target_max_block_size / bytes_per_row)});
      tasks.push_back(std::make_shared<ParquetReadTask>(
          fs_, piece.file->path, piece.file->size, piece.file->contents, piece.file->metadata, piece.row_groups,
          options_.columns, options_.dictionary_columns,
          rows_unfiltered_ ? std::nullopt : options_.filter, piece.rows, piece.bytes, batch_rows, piece.file->partition,
          more_->include_paths, more_->schema, &more_->retry, more_, whole_files ? 0 : FirstRow(piece)));
    }
    // Many small pieces (many small files): group neighbours so that there are about
    // max(parallelism, min_tasks) tasks, no group larger than a block.
    int64_t wanted = std::max<int64_t>(1, parallelism > 0 ? parallelism : read_options.min_tasks);
    if (static_cast<int64_t>(tasks.size()) <= wanted) return tasks;
    int64_t per_group = (static_cast<int64_t>(tasks.size()) + wanted - 1) / wanted;
    std::vector<std::shared_ptr<ReadTask>> grouped;
    std::vector<std::shared_ptr<ReadTask>> group;
    int64_t group_bytes = 0;
    auto flush = [&] {
      if (group.size() == 1) grouped.push_back(group[0]);
      else if (!group.empty()) grouped.push_back(MakeGroupedReadTask(std::move(group)));
      group.clear();
      group_bytes = 0;
    };
    for (auto& task : tasks) {
      if (!group.empty() && (static_cast<int64_t>(group.size()) >= per_group ||
                             group_bytes + task->estimated_bytes() > target_max_block_size)) {
        flush();
      }
      group_bytes += task->estimated_bytes();
      group.push_back(std::move(task));
    }
    flush();
    return grouped;
  }

  std::optional<int64_t> num_rows() const override {
    if (options_.filter) return std::nullopt;
    int64_t rows = 0;
    for (const auto& file : *files_) rows += file.metadata->num_rows();
    return rows;
  }

  std::vector<std::string> input_files() const override {
    std::vector<std::string> paths;
    for (const auto& file : *files_) paths.push_back(file.path);
    return paths;
  }

  std::shared_ptr<arrow::Schema> schema() const override {
    if (options_.columns.empty() && options_.dictionary_columns.empty()) return schema_;
    arrow::FieldVector fields;
    if (options_.columns.empty()) {
      fields = schema_->fields();
    } else {
      for (const auto& name : options_.columns) fields.push_back(schema_->GetFieldByName(name));
    }
    for (auto& field : fields) {
      if (IsDictionaryColumn(field->name()) && field->type()->id() != arrow::Type::DICTIONARY) {
        field = field->WithType(arrow::dictionary(arrow::int32(), field->type()));
      }
    }
    return arrow::schema(fields, schema_->metadata());
  }

  arrow::Result<std::shared_ptr<Datasource>> WithDictionaryColumns(
      const std::vector<std::string>& columns) const override {
    // A target schema's types are what the read produces.
    if (more_->schema) return nullptr;
    auto options = options_;
    for (const auto& name : columns) {
      auto field = schema_->GetFieldByName(name);
      if (!field || IsDictionaryColumn(name)) continue;
      // What the reader produces as dictionary<int32, value>: a BYTE_ARRAY column's values.
      if (field->type()->id() != arrow::Type::STRING && field->type()->id() != arrow::Type::BINARY) continue;
      // In every file: not a partition column or the path, which come from the path.
      if ((more_->include_paths && name == "path") || (more_->include_row_hash && name == "row_hash")) continue;
      auto in_file = [&](const ParquetFile& file) {
        return file.metadata->schema()->ColumnIndex(name) >= 0 &&
               std::none_of(file.partition.begin(), file.partition.end(),
                            [&](const PartitionKey& key) { return key.name == name; });
      };
      if (!std::all_of(files_->begin(), files_->end(), in_file)) {
        continue;
      }
      // Tensor columns are made from binary values after the read.
      if (std::any_of(more_->tensor_columns.begin(), more_->tensor_columns.end(),
                      [&](const auto& spec) { return spec.name == name; })) {
        continue;
      }
      options.dictionary_columns.push_back(name);
    }
    if (options.dictionary_columns.size() == options_.dictionary_columns.size()) return nullptr;
    return std::make_shared<ParquetDatasource>(fs_, files_, schema_, options, more_, rows_unfiltered_);
  }

  arrow::Result<std::shared_ptr<Datasource>> WithFilter(
      const cp::Expression& predicate) const override {
    // Pushed only when it binds to the files' schema as a boolean: otherwise the filter
    // step stays and reports the problem itself.
    // Once the rows are left unfiltered for the operator after the read, a new predicate
    // would be left unapplied too.
    if (rows_unfiltered_) return nullptr;
    auto bound = predicate.Bind(*schema());
    if (!bound.ok() || !bound->type() || bound->type()->id() != arrow::Type::BOOL) return nullptr;
    // Row hashes and tensor columns are made after the source's filter runs.
    for (const auto& ref : cp::FieldsInExpression(predicate)) {
      const std::string* name = ref.name();
      if (!name) return nullptr;
      if (more_->include_row_hash && *name == "row_hash") return nullptr;
      for (const auto& spec : more_->tensor_columns) {
        if (spec.name == *name) return nullptr;
      }
    }
    auto options = options_;
    options.filter = options_.filter ? cp::and_(*options_.filter, predicate) : predicate;
    return std::make_shared<ParquetDatasource>(fs_, files_, schema_, options, more_);
  }

  arrow::Result<std::shared_ptr<Datasource>> WithColumns(
      const std::vector<std::string>& columns) const override {
    ARROW_RETURN_NOT_OK(CheckColumns(*schema(), columns, files_->front().path));
    auto options = options_;
    options.columns = columns;
    if (rows_unfiltered_ && options_.filter) {
      // The filter's columns stay in the output: the operator after the read reads them.
      for (const auto& ref : cp::FieldsInExpression(*options_.filter)) {
        if (ref.name() && std::find(columns.begin(), columns.end(), *ref.name()) == columns.end()) return nullptr;
      }
    }
    return std::make_shared<ParquetDatasource>(fs_, files_, schema_, options, more_, rows_unfiltered_);
  }

  arrow::Result<std::optional<DeferredFilter>> WithoutRowFilter() const override {
    if (!options_.filter || rows_unfiltered_) return std::nullopt;
    // Row hashes number the rows the filter keeps.
    if (more_->include_row_hash) return std::nullopt;
    for (const auto& ref : cp::FieldsInExpression(*options_.filter)) {
      const std::string* name = ref.name();
      if (!name) return std::nullopt;
      // Every column the filter reads is in the output, as the read's own type.
      if (!options_.columns.empty() &&
          std::find(options_.columns.begin(), options_.columns.end(), *name) == options_.columns.end()) {
        return std::nullopt;
      }
      if (IsDictionaryColumn(*name)) return std::nullopt;
    }
    return DeferredFilter{std::make_shared<ParquetDatasource>(fs_, files_, schema_, options_, more_, true),
                          *options_.filter};
  }

  bool IsDictionaryColumn(const std::string& name) const {
    return std::find(options_.dictionary_columns.begin(), options_.dictionary_columns.end(), name) !=
           options_.dictionary_columns.end();
  }

  static arrow::Status CheckColumns(const arrow::Schema& schema,
                                    const std::vector<std::string>& columns,
                                    const std::string& path) {
    for (size_t i = 0; i < columns.size(); ++i) {
      if (std::find(columns.begin(), columns.begin() + i, columns[i]) != columns.begin() + i) {
        return arrow::Status::Invalid("read_parquet: column '", columns[i],
                                      "' is listed more than once in columns");
      }
    }
    for (const auto& name : columns) {
      if (schema.GetAllFieldIndices(name).size() > 1) {
        return arrow::Status::Invalid("'", path, "' has more than one column named '", name,
                                      "'; its columns are: ", ColumnList(schema));
      }
      if (schema.GetFieldIndex(name) < 0) {
        return arrow::Status::KeyError("column '", name, "' not found in '", path,
                                       "'; its columns are: ", ColumnList(schema));
      }
    }
    return arrow::Status::OK();
  }

 private:
  /// The position in its file of a piece's first row: the rows of the row groups before it
  /// (without a filter no row group is skipped; with one, a file is one piece).
  template <typename Piece>
  static int64_t FirstRow(const Piece& piece) {
    int64_t rows = 0;
    for (int rg = 0; rg < piece.row_groups.front(); ++rg) rows += piece.file->metadata->RowGroup(rg)->num_rows();
    return rows;
  }

  /// Uncompressed bytes of the row group's columns that this read decodes.
  int64_t ProjectedBytes(const parquet::RowGroupMetaData& row_group, const ParquetFile& file) const {
    if (options_.columns.empty()) return row_group.total_byte_size();
    std::set<std::string> wanted(options_.columns.begin(), options_.columns.end());
    int64_t bytes = 0;
    for (int c = 0; c < row_group.num_columns(); ++c) {
      auto chunk = row_group.ColumnChunk(c);
      auto top = chunk->path_in_schema()->ToDotVector();
      if (!top.empty() && wanted.count(top[0])) bytes += chunk->total_uncompressed_size();
    }
    return bytes;
  }

  std::shared_ptr<arrow::fs::FileSystem> fs_;
  std::shared_ptr<std::vector<ParquetFile>> files_;
  std::shared_ptr<arrow::Schema> schema_;
  ReadParquetOptions options_;
  std::shared_ptr<const ParquetFileOptions> more_;
  /// The filter only prunes row groups and files; the operator after the read filters rows.
  bool rows_unfiltered_ = false;
  /// Executions planned so far (for reseed_after_execution).
  mutable std::atomic<uint64_t> executions_{0};
};

/// Reads the footer of `found` (and, for a small file, the whole file, kept while
/// `*whole_budget` bytes remain).
arrow::Result<ParquetFile> ReadFooter(arrow::fs::FileSystem& fs, const FoundFile& found,
                                      bool hive_partitioning, std::atomic<int64_t>* whole_budget) {
  ARROW_ASSIGN_OR_RAISE(std::shared_ptr<arrow::io::RandomAccessFile> input,
                        OpenWithSize(fs, found.path, found.size));
  ParquetFile file;
  file.path = found.path;
  file.size = found.size;
  if (found.size > 0 && found.size <= kWholeFileBytes && whole_budget->fetch_sub(found.size) >= found.size) {
    ARROW_ASSIGN_OR_RAISE(file.contents, input->ReadAt(0, found.size));
    if (file.contents->size() != found.size) {
      return arrow::Status::IOError("read ", file.contents->size(), " bytes of ", found.size);
    }
    ARROW_RETURN_NOT_OK(input->Close());
    input = std::make_shared<arrow::io::BufferReader>(file.contents);
  }
  auto reader = parquet::ParquetFileReader::Open(input);
  file.metadata = reader->metadata();
  ARROW_RETURN_NOT_OK(parquet::arrow::FromParquetSchema(file.metadata->schema(), parquet::ArrowReaderProperties(),
                                                        file.metadata->key_value_metadata(), &file.schema));
  if (hive_partitioning) {
    ARROW_ASSIGN_OR_RAISE(auto keys, HivePartition(found));
    for (auto& key : keys) {
      if (file.schema->GetFieldIndex(key.name) >= 0) continue;  // the file's own column wins
      ARROW_ASSIGN_OR_RAISE(file.schema, file.schema->AddField(file.schema->num_fields(),
                                                               arrow::field(key.name, arrow::utf8())));
      file.partition.push_back(std::move(key));
    }
  }
  return file;
}

}  // namespace

arrow::Result<std::shared_ptr<Datasource>> MakeParquetSource(
    const std::vector<std::string>& paths, const ReadParquetOptions& options) {
  std::shared_ptr<arrow::fs::FileSystem> fs;
  ARROW_ASSIGN_OR_RAISE(auto found, ExpandPaths(paths, &fs, options.file_extensions));
  if (found.empty()) {
    return arrow::Status::IOError("read_parquet: no Parquet files under '", paths.front(), "'");
  }
  return MakeParquetSource(std::move(fs), std::move(found), options, {});
}

arrow::Result<std::shared_ptr<Datasource>> MakeParquetSource(std::shared_ptr<arrow::fs::FileSystem> fs,
                                                             std::vector<FoundFile> found,
                                                             const ReadParquetOptions& options,
                                                             ParquetFileOptions more) {
  if (found.empty()) return arrow::Status::IOError("read_parquet: no Parquet files to read");
  // Footers are read side by side (on an object store each is a round trip or two).
  std::atomic<int64_t> whole_budget{kWholeFilesBudget};
  std::vector<arrow::Result<ParquetFile>> footers(found.size(), arrow::Status::UnknownError("not read"));
  auto read_one = [&](size_t i) {
    const auto& f = found[i];
    // parquet throws ParquetException on a bad footer; turn it into a Status naming the file.
    auto read_footer = [&](const Emit&) -> arrow::Status {
      try {
        footers[i] = ReadFooter(*fs, f, options.hive_partitioning, &whole_budget);
      } catch (const std::exception& e) {
        footers[i] = arrow::Status::IOError(e.what());
      }
      return footers[i].status();
    };
    (void)RunWithRetry(read_footer, [](Block) { return arrow::Status::OK(); }, more.retry);
  };
  size_t threads = std::min<size_t>(found.size(), IsLocal(*fs) ? 4 : 32);
  if (threads <= 1) {
    for (size_t i = 0; i < found.size(); ++i) read_one(i);
  } else {
    std::atomic<size_t> next{0};
    std::vector<std::thread> workers;
    auto work = [&] {
      for (size_t i = next++; i < found.size(); i = next++) read_one(i);
    };
    try {
      for (size_t t = 1; t < threads; ++t) workers.emplace_back(work);
    } catch (const std::system_error&) {
      // fewer threads than asked: the others and this one do the rest
    }
    work();
    for (auto& worker : workers) worker.join();
  }
  auto files = std::make_shared<std::vector<ParquetFile>>();
  files->reserve(found.size());
  for (size_t i = 0; i < found.size(); ++i) {
    auto& file = footers[i];
    const auto& f = found[i];
    if (!file.ok()) {
      // IOError whatever the reader said, keeping its detail (the errno of an OS error).
      return arrow::Status(arrow::StatusCode::IOError,
                           "read_parquet: '" + f.path + "' is not a readable Parquet file: " +
                               file.status().message(),
                           file.status().detail());
    }
    files->push_back(std::move(*file));
  }
  auto schema = more.schema ? more.schema : files->front().schema;
  if (more.include_paths && schema->GetFieldIndex("path") < 0) {
    ARROW_ASSIGN_OR_RAISE(schema, schema->AddField(schema->num_fields(), arrow::field("path", arrow::utf8())));
  }
  if (more.include_row_hash) {
    if (int existing = schema->GetFieldIndex("row_hash"); existing >= 0) {
      ARROW_ASSIGN_OR_RAISE(schema, schema->RemoveField(existing));
    }
    ARROW_ASSIGN_OR_RAISE(schema, schema->AddField(schema->num_fields(), arrow::field("row_hash", arrow::uint64())));
  }
  for (const auto& spec : more.tensor_columns) {
    int index = schema->GetFieldIndex(spec.name);
    if (index < 0) {
      return arrow::Status::KeyError("tensor_column_schema: column '", spec.name, "' not found in '",
                                     files->front().path, "'; its columns are: ", ColumnList(*schema));
    }
    if (spec.value_type->byte_width() <= 0) {
      return arrow::Status::TypeError("tensor_column_schema: column '", spec.name,
                                      "' needs a fixed-width dtype, got ", spec.value_type->ToString());
    }
    ARROW_ASSIGN_OR_RAISE(schema, schema->SetField(index, arrow::field(spec.name, TensorType(spec))));
  }
  ARROW_RETURN_NOT_OK(ParquetDatasource::CheckColumns(*schema, options.columns, files->front().path));
  if (options.filter) {
    auto bound = options.filter->Bind(*schema);
    if (!bound.ok()) {
      return arrow::Status::Invalid("read_parquet filter ", options.filter->ToString(), ": ",
                                    bound.status().message(), " (columns: ", ColumnList(*schema), ")");
    }
    if (bound->type()->id() != arrow::Type::BOOL) {
      return arrow::Status::TypeError("read_parquet filter ", options.filter->ToString(),
                                      " is of type ", bound->type()->ToString(),
                                      ", not boolean; compare it (e.g. `x != 0`)");
    }
  }
  return std::make_shared<ParquetDatasource>(fs, files, schema, options,
                                             std::make_shared<const ParquetFileOptions>(std::move(more)));
}

}  // namespace millstream
