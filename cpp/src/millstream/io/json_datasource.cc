#include <arrow/api.h>
#include <arrow/io/api.h>
#include <arrow/json/api.h>

#include "io/file_datasource.h"
#include "runtime/counting_memory_pool.h"

namespace millstream {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/// A JSON array of objects `[{...}, {...}]` as the objects one after another (the array's
/// brackets and separating commas blanked), which Arrow's JSON reader reads with
/// `newlines_in_values`. Only the array's own structure is looked at; the objects are
/// parsed (and checked) by Arrow. Invalid when the array is not closed.
arrow::Result<std::shared_ptr<arrow::Buffer>> ArrayToObjects(const arrow::Buffer& data) {
  std::string out(reinterpret_cast<const char*>(data.data()), static_cast<size_t>(data.size()));
  int64_t depth = 0;
  bool in_string = false, escaped = false, closed = false;
  for (auto& c : out) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (closed) {
      if (!IsSpace(c)) return arrow::Status::Invalid("JSON parse error: text after the top-level array");
      continue;
    }
    switch (c) {
      case '"': in_string = true; break;
      case '[': case '{':
        if (depth++ == 0) c = ' ';
        break;
      case ']': case '}':
        if (--depth == 0) {
          c = ' ';
          closed = true;
        }
        break;
      case ',':
        if (depth == 1) c = '\n';
        break;
      default: break;
    }
  }
  if (!closed) return arrow::Status::Invalid("JSON parse error: the top-level array is not closed");
  return arrow::Buffer::FromString(std::move(out));
}

}  // namespace

std::shared_ptr<Datasource> MakeJsonSource(std::shared_ptr<arrow::fs::FileSystem> fs,
                                           std::vector<FoundFile> files, FileReadOptions options,
                                           JsonReadOptions json) {
  auto reader = [json](std::shared_ptr<arrow::io::InputStream> input, const std::string& path,
                       const Emit& emit) -> arrow::Status {
    ARROW_ASSIGN_OR_RAISE(auto data, ReadAllBytes(*input));
    int64_t first = 0;
    while (first < data->size() && IsSpace(static_cast<char>(data->data()[first]))) ++first;
    if (first == data->size()) return arrow::Status::OK();  // an empty file: no rows
    auto parse = json.parse;
    if (data->data()[first] == '[') {
      ARROW_ASSIGN_OR_RAISE(data, ArrayToObjects(*data));
      parse.newlines_in_values = true;
    }
    // Arrow's reader needs each object within one block: grow the block until it fits,
    // as Ray does, up to max_block_size.
    auto read = json.read;
    while (true) {
      auto buffer_reader = std::make_shared<arrow::io::BufferReader>(data);
      ARROW_ASSIGN_OR_RAISE(auto table_reader, arrow::json::TableReader::Make(
                                                   EngineMemoryPool(), buffer_reader, read, parse));
      auto table = table_reader->Read();
      if (!table.ok() && table.status().message().find("straddl") != std::string::npos &&
          read.block_size < json.max_block_size) {
        read.block_size = static_cast<int32_t>(std::min<int64_t>(int64_t{read.block_size} * 2, INT32_MAX));
        continue;
      }
      ARROW_RETURN_NOT_OK(table.status());
      arrow::TableBatchReader batches(**table);
      while (true) {
        std::shared_ptr<arrow::RecordBatch> batch;
        ARROW_RETURN_NOT_OK(batches.ReadNext(&batch));
        if (!batch) break;
        ARROW_RETURN_NOT_OK(emit(std::move(batch)));
      }
      return arrow::Status::OK();
    }
  };
  // About 60 bytes per JSON row, before anything is read.
  return MakeFileSource("ReadJSON", std::move(fs), std::move(files), std::move(options),
                        std::move(reader), 1.0 / 60);
}

}  // namespace millstream
