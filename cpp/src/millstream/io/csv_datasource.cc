#include <set>
#include <string>

#include <arrow/api.h>
#include <arrow/csv/api.h>
#include <arrow/io/memory.h>

#include "io/file_datasource.h"
#include "runtime/counting_memory_pool.h"

namespace millstream {

namespace {

/// `head`, then the rest of `rest`: a stream whose first bytes were read ahead.
class PrefixedInputStream : public arrow::io::InputStream {
 public:
  PrefixedInputStream(std::shared_ptr<arrow::Buffer> head, std::shared_ptr<arrow::io::InputStream> rest)
      : head_(std::move(head)), rest_(std::move(rest)) {}

  arrow::Status Close() override {
    closed_ = true;
    return rest_->Close();
  }
  bool closed() const override { return closed_; }
  arrow::Result<int64_t> Tell() const override { return position_; }

  arrow::Result<int64_t> Read(int64_t nbytes, void* out) override {
    int64_t from_head = std::min(nbytes, head_->size() - head_offset_);
    std::memcpy(out, head_->data() + head_offset_, static_cast<size_t>(from_head));
    head_offset_ += from_head;
    int64_t total = from_head;
    if (total < nbytes) {
      ARROW_ASSIGN_OR_RAISE(int64_t n, rest_->Read(nbytes - total, static_cast<uint8_t*>(out) + total));
      total += n;
    }
    position_ += total;
    return total;
  }
  arrow::Result<std::shared_ptr<arrow::Buffer>> Read(int64_t nbytes) override {
    if (head_offset_ < head_->size() && nbytes <= head_->size() - head_offset_) {
      auto slice = arrow::SliceBuffer(head_, head_offset_, nbytes);
      head_offset_ += nbytes;
      position_ += nbytes;
      return slice;
    }
    ARROW_ASSIGN_OR_RAISE(auto buffer, arrow::AllocateResizableBuffer(nbytes, EngineMemoryPool()));
    ARROW_ASSIGN_OR_RAISE(int64_t n, Read(nbytes, buffer->mutable_data()));
    ARROW_RETURN_NOT_OK(buffer->Resize(n, /*shrink_to_fit=*/false));
    return std::shared_ptr<arrow::Buffer>(std::move(buffer));
  }

 private:
  std::shared_ptr<arrow::Buffer> head_;
  int64_t head_offset_ = 0;
  std::shared_ptr<arrow::io::InputStream> rest_;
  int64_t position_ = 0;
  bool closed_ = false;
};

/// Up to `size` bytes from the start of `input` (fewer only at its end).
arrow::Result<std::shared_ptr<arrow::Buffer>> ReadHead(arrow::io::InputStream& input, int64_t size) {
  ARROW_ASSIGN_OR_RAISE(auto buffer, arrow::AllocateResizableBuffer(size, EngineMemoryPool()));
  int64_t filled = 0;
  while (filled < size) {
    ARROW_ASSIGN_OR_RAISE(int64_t n, input.Read(size - filled, buffer->mutable_data() + filled));
    if (n == 0) break;
    filled += n;
  }
  ARROW_RETURN_NOT_OK(buffer->Resize(filled, /*shrink_to_fit=*/false));
  return std::shared_ptr<arrow::Buffer>(std::move(buffer));
}

/// The column types Arrow's streaming reader infers for a file that starts with `head`
/// (one block's bytes, not the whole file): those of its first block, its rows up to the
/// last line break, which it keeps for the rest of the file. Unset when those rows do not
/// parse on their own (the real read then reports the problem).
std::optional<std::shared_ptr<arrow::Schema>> InferredTypes(const std::shared_ptr<arrow::Buffer>& head,
                                                            const CsvReadOptions& csv) {
  const auto* data = head->data();
  int64_t end = head->size();
  while (end > 0 && data[end - 1] != '\n' && data[end - 1] != '\r') --end;
  if (end == 0) return std::nullopt;
  arrow::io::IOContext io_context(EngineMemoryPool());
  auto rows = std::make_shared<arrow::io::BufferReader>(arrow::SliceBuffer(head, 0, end));
  auto reader = arrow::csv::StreamingReader::Make(io_context, std::move(rows), csv.read, csv.parse, csv.convert);
  if (!reader.ok()) return std::nullopt;
  // Types from rows only (a block of only a header infers nothing), and by name only
  // when every name is one column's.
  std::shared_ptr<arrow::RecordBatch> first;
  if (!(*reader)->ReadNext(&first).ok() || !first || first->num_rows() == 0) return std::nullopt;
  auto schema = (*reader)->schema();
  std::set<std::string> names;
  for (const auto& field : schema->fields()) {
    if (!names.insert(field->name()).second) return std::nullopt;
  }
  return schema;
}

}  // namespace

std::shared_ptr<Datasource> MakeCsvSource(std::shared_ptr<arrow::fs::FileSystem> fs,
                                          std::vector<FoundFile> files, FileReadOptions options,
                                          CsvReadOptions csv) {
  auto reader = [csv](std::shared_ptr<arrow::io::InputStream> input, const std::string& path,
                      const Emit& emit) -> arrow::Status {
    arrow::io::IOContext io_context(EngineMemoryPool());
    // Arrow's streaming reader infers each column's type from the file's first block and
    // keeps it; a column it converts with a type it was given, not inferred, costs about
    // 40% less. So a file of more than one block has its types inferred from its first
    // block alone, then is read with them: the same types and values.
    arrow::csv::ConvertOptions convert = csv.convert;
    const int64_t block_size = csv.read.block_size;
    // (A value holding a line break would make the first block's end a matter of quotes.)
    // (A head past 64 MiB, a block size asked for, would be read whole before parsing.)
    if (!convert.auto_dict_encode && !csv.parse.newlines_in_values && block_size > 0 &&
        block_size <= (64 << 20)) {
      ARROW_ASSIGN_OR_RAISE(auto head, ReadHead(*input, block_size));
      if (head->size() == block_size) {
        if (auto inferred = InferredTypes(head, csv)) {
          for (const auto& field : (*inferred)->fields()) {
            convert.column_types.emplace(field->name(), field->type());
          }
        }
      }
      input = std::make_shared<PrefixedInputStream>(std::move(head), std::move(input));
    }
    ARROW_ASSIGN_OR_RAISE(auto batches, arrow::csv::StreamingReader::Make(
                                            io_context, std::move(input), csv.read, csv.parse, convert));
    while (true) {
      std::shared_ptr<arrow::RecordBatch> batch;
      ARROW_RETURN_NOT_OK(batches->ReadNext(&batch));
      if (!batch) break;
      ARROW_RETURN_NOT_OK(emit(std::move(batch)));
    }
    return arrow::Status::OK();
  };
  // About 50 bytes per CSV row, before anything is read.
  return MakeFileSource("ReadCSV", std::move(fs), std::move(files), std::move(options),
                        std::move(reader), 1.0 / 50);
}

}  // namespace millstream
