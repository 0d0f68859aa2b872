#include <filesystem>

#include <arrow/io/api.h>
#include <parquet/arrow/reader.h>
#include <parquet/arrow/writer.h>

#include "io/sources.h"
#include "optimizer/optimizer.h"
#include "test_util.h"

namespace millstream {
namespace {

using testing::IdTable;
using testing::SortedBy;
using testing::TempDir;
namespace cp = arrow::compute;

/// Writes `table` as Parquet with row groups of `row_group_size` rows.
void WriteParquet(const std::shared_ptr<arrow::Table>& table, const std::string& path,
                  int64_t row_group_size) {
  auto out = arrow::io::FileOutputStream::Open(path).ValueOrDie();
  ASSERT_OK(parquet::arrow::WriteTable(*table, arrow::default_memory_pool(), out, row_group_size));
  ASSERT_OK(out->Close());
}

std::shared_ptr<arrow::Table> ReadWithArrow(const std::string& path) {
  auto input = arrow::io::ReadableFile::Open(path).ValueOrDie();
  auto reader = parquet::arrow::OpenFile(input, arrow::default_memory_pool()).ValueOrDie();
  return reader->ReadTable().ValueOrDie();
}

TEST(ParquetRead, DirectoryGlobAndListAgree) {
  TempDir dir;
  auto table = IdTable(3000);
  WriteParquet(table->Slice(0, 1000), dir.path() + "/a.parquet", 300);
  WriteParquet(table->Slice(1000, 2000), dir.path() + "/b.parquet", 300);
  WriteParquet(table->Slice(0, 10), dir.path() + "/.hidden.parquet", 300);
  auto expected = table->CombineChunks().ValueOrDie();
  for (const auto& paths : std::vector<std::vector<std::string>>{
           {dir.path()}, {dir.path() + "/*.parquet"}, {dir.path() + "/a.parquet", dir.path() + "/b.parquet"}}) {
    auto ds = Dataset::ReadParquet(paths).ValueOrDie();
    auto out = ds.ToTable(DataContext{}).ValueOrDie();
    EXPECT_TRUE(SortedBy(out, "id")->Equals(*expected)) << paths[0];
    EXPECT_EQ(ds.Count(DataContext{}).ValueOrDie(), 3000);
  }
}

TEST(ParquetRead, ColumnsAndFilter) {
  TempDir dir;
  auto table = IdTable(5000);
  WriteParquet(table, dir.path() + "/t.parquet", 500);
  ReadParquetOptions options;
  options.columns = {"x"};
  options.filter = cp::greater_equal(cp::field_ref("id"), cp::literal(int64_t{4200}));
  auto ds = Dataset::ReadParquet({dir.path()}, options).ValueOrDie();
  auto out = ds.ToTable(DataContext{}).ValueOrDie();
  ASSERT_EQ(out->num_columns(), 1);
  EXPECT_EQ(out->schema()->field(0)->name(), "x");
  EXPECT_EQ(out->num_rows(), 800);
  // Row groups are ordered by id: only the last two can hold id >= 4200.
  auto source = MakeParquetSource({dir.path()}, options).ValueOrDie();
  auto tasks = source->GetReadTasks(ReadTaskOptions{}).ValueOrDie();
  int64_t rows = 0;
  for (const auto& task : tasks) rows += task->estimated_rows();
  EXPECT_EQ(rows, 1000);
}

TEST(ParquetRead, SelectingNoColumnsKeepsTheRows) {
  TempDir dir;
  WriteParquet(IdTable(1000), dir.path() + "/t.parquet", 300);
  auto ds = Dataset::ReadParquet({dir.path()}).ValueOrDie().SelectColumns({}).ValueOrDie();
  // A read with no columns reads them all, so the empty selection is not folded into it.
  auto optimized = MakeProjectionPushdownRule()->Apply(ds.plan()).ValueOrDie();
  EXPECT_EQ(PlanChain(optimized).size(), PlanChain(ds.plan()).size());
  auto out = ds.ToTable(DataContext{}).ValueOrDie();
  EXPECT_EQ(out->num_columns(), 0);
  EXPECT_EQ(out->num_rows(), 1000);
}

TEST(ParquetRead, BlocksStreamOneRowGroupAtATime) {
  TempDir dir;
  WriteParquet(IdTable(5000), dir.path() + "/t.parquet", 500);
  DataContext context;
  context.target_min_block_size = 1;  // no combining of small blocks: see the reader's own
  auto stream = Dataset::ReadParquet({dir.path()}).ValueOrDie().Execute(context).ValueOrDie();
  int64_t rows = 0;
  while (auto block = stream->Next().ValueOrDie()) {
    EXPECT_LE(block->num_rows(), 500);
    rows += block->num_rows();
  }
  EXPECT_EQ(rows, 5000);
}

TEST(ParquetRead, ManySmallFilesAreGroupedIntoFewerTasks) {
  TempDir dir;
  auto table = IdTable(3000);
  for (int i = 0; i < 30; ++i) {
    WriteParquet(table->Slice(i * 100, 100), dir.path() + "/part-" + std::to_string(100 + i) + ".parquet", 100);
  }
  auto source = MakeParquetSource({dir.path()}, {}).ValueOrDie();
  ReadTaskOptions options;
  options.min_tasks = 8;
  auto tasks = source->GetReadTasks(options).ValueOrDie();
  EXPECT_EQ(tasks.size(), 8u);  // 30 files, 4 per task (the last one 2)
  int64_t rows = 0;
  for (const auto& task : tasks) rows += task->estimated_rows();
  EXPECT_EQ(rows, 3000);
  options.parallelism = 30;  // asked for: one file each
  EXPECT_EQ(source->GetReadTasks(options).ValueOrDie().size(), 30u);

  DataContext context;
  context.read_op_min_num_blocks = 8;
  auto out = Dataset::ReadParquet({dir.path()}).ValueOrDie().ToTable(context).ValueOrDie();
  EXPECT_TRUE(SortedBy(out, "id")->Equals(*table->CombineChunks().ValueOrDie()));
}

TEST(ParquetRead, RelativePathsResolveAgainstTheWorkingDirectory) {
  TempDir dir;
  WriteParquet(IdTable(100), dir.path() + "/t.parquet", 50);
  auto previous = std::filesystem::current_path();
  std::filesystem::current_path(dir.path());
  ASSERT_OK(Dataset::ReadParquet({"t.parquet"}).ValueOrDie().Write("out", FileFormat::kParquet, DataContext{}));
  auto rows = Dataset::ReadParquet({"./out"}).ValueOrDie().Count(DataContext{});
  auto glob_rows = Dataset::ReadParquet({"*.parquet"}).ValueOrDie().Count(DataContext{});
  std::filesystem::current_path(previous);
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  EXPECT_EQ(*rows, 100);
  EXPECT_EQ(glob_rows.ValueOrDie(), 100);
}

TEST(ParquetRead, HivePartitionsAreColumnsAndPruneFiles) {
  TempDir dir;
  auto table = IdTable(300);
  for (int part = 0; part < 3; ++part) {
    std::string sub = dir.path() + "/region=r" + std::to_string(part);
    ASSERT_OK(arrow::fs::LocalFileSystem().CreateDir(sub));
    WriteParquet(table->Slice(part * 100, 100), sub + "/data.parquet", 50);
  }
  ReadParquetOptions options;
  options.filter = cp::equal(cp::field_ref("region"), cp::literal("r1"));
  auto source = MakeParquetSource({dir.path()}, options).ValueOrDie();
  ASSERT_EQ(source->schema()->GetFieldIndex("region"), 2);
  int64_t rows = 0;
  for (const auto& task : source->GetReadTasks(ReadTaskOptions{}).ValueOrDie()) {
    rows += task->estimated_rows();
  }
  EXPECT_EQ(rows, 100);  // the other two directories are never opened
  auto out = Dataset::ReadParquet({dir.path()}, options).ValueOrDie().ToTable(DataContext{}).ValueOrDie();
  ASSERT_EQ(out->num_rows(), 100);
  auto ids = SortedBy(out, "id")->column(0)->chunk(0);
  EXPECT_EQ(std::static_pointer_cast<arrow::Int64Array>(ids)->Value(0), 100);
}

TEST(ParquetRead, MissingPathAndUnknownColumnAreClearErrors) {
  auto missing = Dataset::ReadParquet({"/no/such/dir"});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/no/such/dir"), std::string::npos);

  TempDir dir;
  WriteParquet(IdTable(10), dir.path() + "/t.parquet", 10);
  ReadParquetOptions options;
  options.columns = {"nope"};
  auto unknown = Dataset::ReadParquet({dir.path()}, options);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), arrow::StatusCode::KeyError);
  EXPECT_NE(unknown.status().message().find("nope"), std::string::npos);
}

TEST(ParquetRead, DuplicateColumnsAndNonBooleanFilterAreRejected) {
  TempDir dir;
  WriteParquet(IdTable(10), dir.path() + "/t.parquet", 10);
  ReadParquetOptions twice;
  twice.columns = {"id", "x", "id"};
  auto duplicate = Dataset::ReadParquet({dir.path()}, twice);
  ASSERT_FALSE(duplicate.ok());
  EXPECT_EQ(duplicate.status().code(), arrow::StatusCode::Invalid);
  EXPECT_NE(duplicate.status().message().find("'id'"), std::string::npos);

  ReadParquetOptions numeric;
  numeric.filter = cp::call("add", {cp::field_ref("id"), cp::literal(int64_t{1})});
  auto filtered = Dataset::ReadParquet({dir.path()}, numeric);
  ASSERT_FALSE(filtered.ok());
  EXPECT_EQ(filtered.status().code(), arrow::StatusCode::TypeError);
  EXPECT_NE(filtered.status().message().find("int64"), std::string::npos);
}

TEST(ParquetRead, CorruptFileIsNamed) {
  TempDir dir;
  {
    auto out = arrow::io::FileOutputStream::Open(dir.path() + "/bad.parquet").ValueOrDie();
    ASSERT_OK(out->Write("this is not parquet"));
    ASSERT_OK(out->Close());
  }
  auto ds = Dataset::ReadParquet({dir.path()});
  ASSERT_FALSE(ds.ok());
  EXPECT_NE(ds.status().message().find("bad.parquet"), std::string::npos);
}

TEST(ParquetWrite, RoundTripLeavesOnlyCompleteFiles) {
  TempDir dir;
  auto table = IdTable(20000);
  auto ds = Dataset::FromArrow(table, 7).ValueOrDie();
  ASSERT_OK(ds.Write(dir.path() + "/out", FileFormat::kParquet, DataContext{}));
  auto fs = arrow::fs::LocalFileSystem();
  arrow::fs::FileSelector selector;
  selector.base_dir = dir.path() + "/out";
  auto files = fs.GetFileInfo(selector).ValueOrDie();
  EXPECT_EQ(files.size(), 7u);
  std::vector<std::shared_ptr<arrow::Table>> parts;
  for (const auto& f : files) {
    EXPECT_EQ(f.base_name().find(".tmp"), std::string::npos);
    parts.push_back(ReadWithArrow(f.path()));
  }
  auto all = arrow::ConcatenateTables(parts).ValueOrDie();
  EXPECT_TRUE(SortedBy(all, "id")->Equals(*table->CombineChunks().ValueOrDie()));
}

TEST(ParquetWrite, FailedTaskLeavesNoFile) {
  TempDir dir;
  MapBatchesOptions options;
  options.name = "MapBatches(fail_late)";
  auto ds = Dataset::Range(100, 1).ValueOrDie().MapBatches(
      testing::Udf([](const std::shared_ptr<arrow::RecordBatch>& b) -> arrow::Result<std::shared_ptr<arrow::Table>> {
        return arrow::Status::Invalid("boom");
      }),
      options);
  auto status = ds.Write(dir.path() + "/out", FileFormat::kParquet, DataContext{});
  EXPECT_FALSE(status.ok());
  arrow::fs::FileSelector selector;
  selector.base_dir = dir.path() + "/out";
  selector.allow_not_found = true;
  auto files = arrow::fs::LocalFileSystem().GetFileInfo(selector).ValueOrDie();
  EXPECT_TRUE(files.empty());
}

TEST(CsvJsonWrite, ProduceOneFilePerTask) {
  TempDir dir;
  auto ds = Dataset::FromArrow(IdTable(100), 2).ValueOrDie();
  ASSERT_OK(ds.Write(dir.path() + "/csv", FileFormat::kCsv, DataContext{}));
  ASSERT_OK(ds.Write(dir.path() + "/json", FileFormat::kJson, DataContext{}));
  for (const auto& sub : {"/csv", "/json"}) {
    arrow::fs::FileSelector selector;
    selector.base_dir = dir.path() + sub;
    EXPECT_EQ(arrow::fs::LocalFileSystem().GetFileInfo(selector).ValueOrDie().size(), 2u);
  }
}

TEST(HivePaths, SegmentsAreEncodedAsPyarrowWritesThemAndDecodeBack) {
  // Expected names written by hand from pyarrow's hive partitioning (percent-encoding of
  // every byte but A-Za-z0-9-_.~; null as __HIVE_DEFAULT_PARTITION__).
  EXPECT_EQ(HiveSegment("k", std::string("x/../../y")).ValueOrDie(), "k=x%2F..%2F..%2Fy");
  EXPECT_EQ(HiveSegment("k", std::string("a=b c%")).ValueOrDie(), "k=a%3Db%20c%25");
  EXPECT_EQ(HiveSegment("k", std::string("")).ValueOrDie(), "k=");
  EXPECT_EQ(HiveSegment("k", std::nullopt).ValueOrDie(), "k=__HIVE_DEFAULT_PARTITION__");
  EXPECT_EQ(HiveSegment("../c", std::string("1")).ValueOrDie(), "%2E.%2Fc=1");  // leading . too
  EXPECT_EQ(HiveSegment("_u", std::string("1")).ValueOrDie(), "%5Fu=1");
  EXPECT_EQ(HiveSegment(".h", std::string("1")).ValueOrDie(), "%2Eh=1");
  EXPECT_EQ(HiveSegment("", std::string("1")).status().code(), arrow::StatusCode::Invalid);
  EXPECT_EQ(HiveSegment("k", std::string(300, 'a')).status().code(), arrow::StatusCode::Invalid);

  std::vector<std::pair<std::string, std::optional<std::string>>> keys = {
      {"../c", "x/../../y"}, {"_u", ""}, {"k", std::nullopt}, {"a=b", "%41"}};
  std::string path = "/base/";
  for (const auto& [name, value] : keys) path += HiveSegment(name, value).ValueOrDie() + "/";
  auto decoded = HivePartition(FoundFile{path + "f.parquet", 0, "/base/"}).ValueOrDie();
  ASSERT_EQ(decoded.size(), keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_EQ(decoded[i].name, keys[i].first);
    EXPECT_EQ(decoded[i].value, keys[i].second);
  }
}

TEST(LocalPaths, OtherUriSchemesAreNotImplementedAndTouchNothing) {
  auto s3 = LocalPath("s3://bucket/x", "Write");
  ASSERT_EQ(s3.status().code(), arrow::StatusCode::NotImplemented);
  EXPECT_NE(s3.status().message().find("'s3'"), std::string::npos);
  EXPECT_NE(s3.status().message().find("s3://bucket/x"), std::string::npos);
  EXPECT_EQ(LocalPath("file:///tmp/a%20b", "Write").ValueOrDie(), "/tmp/a b");
  EXPECT_EQ(LocalPath("file:///tmp/a b", "Write").ValueOrDie(), "/tmp/a b");
  EXPECT_EQ(LocalPath("file://localhost/tmp/x", "Write").ValueOrDie(), "/tmp/x");
  EXPECT_EQ(LocalPath("rel/dir", "Write").ValueOrDie(), "rel/dir");
  EXPECT_EQ(LocalPath("a/b://c", "Write").ValueOrDie(), "a/b://c");
  EXPECT_EQ(LocalPath("file://host/x", "Write").status().code(), arrow::StatusCode::Invalid);
  TempDir dir;
  ASSERT_EQ(Dataset::Range(3).ValueOrDie().Write("gs://b/x", FileFormat::kParquet, DataContext{}).code(),
            arrow::StatusCode::NotImplemented);
  ASSERT_EQ(Dataset::ReadParquet({"hdfs://h/x"}).status().code(), arrow::StatusCode::NotImplemented);
}

TEST(ParquetWrite, BlocksWithoutColumnsKeepTheirRowsAndStatsCountThem) {
  TempDir dir;
  auto ds = Dataset::Range(1000, 3).ValueOrDie().DropColumns({"id"}).ValueOrDie();
  ExecutionStats stats;
  ASSERT_OK(ds.Write(dir.path() + "/out", FileFormat::kParquet, DataContext{}, &stats));
  arrow::fs::FileSelector selector;
  selector.base_dir = dir.path() + "/out";
  int64_t rows = 0;
  for (const auto& f : arrow::fs::LocalFileSystem().GetFileInfo(selector).ValueOrDie()) {
    rows += ReadWithArrow(f.path())->num_rows();  // Arrow's own reader is the reference
  }
  EXPECT_EQ(rows, 1000);
  auto back = Dataset::ReadParquet({dir.path() + "/out"}).ValueOrDie();
  EXPECT_EQ(back.Count(DataContext{}).ValueOrDie(), 1000);
  EXPECT_EQ(back.ToTable(DataContext{}).ValueOrDie()->num_rows(), 1000);
  EXPECT_EQ(stats.operators.back().rows_out, 1000);
  EXPECT_EQ(stats.operators.back().blocks_out, 3);
}

TEST(ParquetWrite, StatsCountWhatTheWriteReceived) {
  TempDir dir;
  auto table = IdTable(5000);
  ExecutionStats stats;
  auto ds = Dataset::FromArrow(table, 5).ValueOrDie().Filter(
      cp::less(cp::field_ref("id"), cp::literal(int64_t{1200})));
  ASSERT_OK(ds.Write(dir.path() + "/out", FileFormat::kParquet, DataContext{}, &stats));
  const auto& op = stats.operators.back();
  auto written = Dataset::ReadParquet({dir.path() + "/out"}).ValueOrDie().ToTable(DataContext{}).ValueOrDie();
  EXPECT_EQ(written->num_rows(), 1200);
  EXPECT_EQ(op.rows_in, 5000);
  EXPECT_EQ(op.rows_out, 1200);
  EXPECT_GT(op.bytes_in, 0);
  EXPECT_GT(op.bytes_out, 0);
  EXPECT_GT(op.peak_bytes, 0);
  EXPECT_GT(stats.peak_bytes, 0);
}

}  // namespace
}  // namespace millstream
