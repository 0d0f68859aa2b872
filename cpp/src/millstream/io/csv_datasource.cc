#include <arrow/api.h>
#include <arrow/csv/api.h>

#include "io/file_datasource.h"
#include "runtime/counting_memory_pool.h"

namespace millstream {

std::shared_ptr<Datasource> MakeCsvSource(std::shared_ptr<arrow::fs::FileSystem> fs,
                                          std::vector<FoundFile> files, FileReadOptions options,
                                          CsvReadOptions csv) {
  auto reader = [csv](std::shared_ptr<arrow::io::InputStream> input, const std::string& path,
                      const Emit& emit) -> arrow::Status {
    arrow::io::IOContext io_context(EngineMemoryPool());
    ARROW_ASSIGN_OR_RAISE(auto batches, arrow::csv::StreamingReader::Make(
                                            io_context, std::move(input), csv.read, csv.parse, csv.convert));
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
