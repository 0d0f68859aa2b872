#include <arrow/api.h>

#include "io/file_datasource.h"

namespace millstream {

std::shared_ptr<Datasource> MakeBinarySource(std::shared_ptr<arrow::fs::FileSystem> fs,
                                             std::vector<FoundFile> files, FileReadOptions options) {
  auto reader = [](std::shared_ptr<arrow::io::InputStream> input, const std::string& path,
                   const Emit& emit) -> arrow::Status {
    ARROW_ASSIGN_OR_RAISE(auto data, ReadAllBytes(*input));
    // One value whose bytes are the file's buffer, not a copy of it.
    std::shared_ptr<arrow::Array> column;
    if (data->size() < INT32_MAX) {
      ARROW_ASSIGN_OR_RAISE(auto offsets, arrow::AllocateBuffer(2 * sizeof(int32_t)));
      auto* o = reinterpret_cast<int32_t*>(offsets->mutable_data());
      o[0] = 0;
      o[1] = static_cast<int32_t>(data->size());
      column = std::make_shared<arrow::BinaryArray>(1, std::move(offsets), data);
    } else {
      ARROW_ASSIGN_OR_RAISE(auto offsets, arrow::AllocateBuffer(2 * sizeof(int64_t)));
      auto* o = reinterpret_cast<int64_t*>(offsets->mutable_data());
      o[0] = 0;
      o[1] = data->size();
      column = std::make_shared<arrow::LargeBinaryArray>(1, std::move(offsets), data);
    }
    return emit(arrow::RecordBatch::Make(arrow::schema({arrow::field("bytes", column->type())}), 1,
                                         {column}));
  };
  return MakeFileSource("ReadBinary", std::move(fs), std::move(files), std::move(options),
                        std::move(reader), 0, 1);
}

}  // namespace millstream
