#include <filesystem>

#include <arrow/csv/writer.h>
#include <arrow/io/api.h>
#include <arrow/json/from_string.h>
#include <parquet/arrow/reader.h>
#include <parquet/arrow/writer.h>
#include <parquet/file_reader.h>
#include <parquet/metadata.h>

#include "io/sources.h"
#include "optimizer/optimizer.h"
#include "runtime/counting_memory_pool.h"
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

TEST(ParquetRead, DecodeBuffersComeFromTheEnginePool) {
  // A read task decodes through the engine's counting pool: its meter sees at least one
  // block's worth of decode buffers before it is handed on, and the pool counts at least
  // the bytes of every row read (16 bytes a row).
  TempDir dir;
  auto table = IdTable(200000);
  WriteParquet(table, dir.path() + "/t.parquet", 50000);
  auto source = MakeParquetSource({dir.path()}, ReadParquetOptions{}).ValueOrDie();
  auto tasks = source->GetReadTasks(ReadTaskOptions{}).ValueOrDie();
  ASSERT_FALSE(tasks.empty());
  TaskMemoryMeter meter;
  int64_t rows = 0, largest = 0;
  const int64_t pool_before = EngineMemoryPool()->total_bytes_allocated();
  {
    ScopedTaskMeter scoped(&meter);
    for (const auto& task : tasks) {
      ASSERT_OK(task->Run([&](Block block) -> arrow::Status {
        rows += block->num_rows();
        largest = std::max(largest, BlockBytes(*block));
        meter.emitted += BlockBytes(*block);
        return arrow::Status::OK();
      }));
    }
  }
  EXPECT_EQ(rows, 200000);
  EXPECT_GE(meter.peak.load(), largest);
  EXPECT_GE(EngineMemoryPool()->total_bytes_allocated() - pool_before, rows * 16);
}

TEST(ParquetRead, FilteredAndComputedColumnsComeFromTheEnginePool) {
  // A filter's copy of the rows it keeps (in a Parquet read or as a step) and a computed
  // column are the engine's memory: counted by its pool, not left to Arrow's default one.
  TempDir dir;
  WriteParquet(IdTable(200000), dir.path() + "/t.parquet", 50000);
  auto odd = cp::equal(cp::call("bit_wise_and", {cp::field_ref("id"), cp::literal(int64_t{1})}),
                       cp::literal(int64_t{1}));
  // Arrow's default pool's growth over a run (what the source itself takes from it).
  auto default_growth = [](const Dataset& ds, int64_t rows) {
    const int64_t before = arrow::default_memory_pool()->total_bytes_allocated();
    EXPECT_EQ(ds.ToTable(DataContext{}).ValueOrDie()->num_rows(), rows);
    return arrow::default_memory_pool()->total_bytes_allocated() - before;
  };
  auto run = [&](const Dataset& input, const Dataset& ds, int columns) {
    const int64_t unfiltered = default_growth(input, 200000);
    const int64_t engine_before = EngineMemoryPool()->total_bytes_allocated();
    const int64_t filtered = default_growth(ds, 100000);
    const int64_t bytes = 100000 * 8 * columns;  // the kept rows' values
    EXPECT_GE(EngineMemoryPool()->total_bytes_allocated() - engine_before, bytes);
    // (With MILLSTREAM_MEMORY_POOL=default the engine's pool wraps the default one.)
    if (EngineMemoryPool()->base() != arrow::default_memory_pool()) EXPECT_LT(filtered - unfiltered, bytes / 4);
  };
  ReadParquetOptions options;
  options.filter = odd;
  auto read = Dataset::ReadParquet({dir.path()}).ValueOrDie();
  run(read, Dataset::ReadParquet({dir.path()}, options).ValueOrDie(), 2);
  auto range = Dataset::Range(200000, 4).ValueOrDie();
  run(range, range.Filter(odd), 1);
  run(range, range.Filter(odd).WithColumn(
                 "twice", cp::call("multiply", {cp::field_ref("id"), cp::literal(int64_t{2})})), 2);
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

std::shared_ptr<arrow::ChunkedArray> Chunked(const std::shared_ptr<arrow::DataType>& type, const std::string& json) {
  return std::make_shared<arrow::ChunkedArray>(arrow::json::ArrayFromJSONString(type, json).ValueOrDie());
}

/// A table of a string column "s" and an int64 column "n", from JSON lists.
std::shared_ptr<arrow::Table> StringsAndInts(const std::string& strings, const std::string& ints) {
  return arrow::Table::Make(arrow::schema({arrow::field("s", arrow::utf8()), arrow::field("n", arrow::int64())}),
                            {Chunked(arrow::utf8(), strings), Chunked(arrow::int64(), ints)});
}

std::string PlanNames(const PlanPtr& plan) {
  std::string out;
  for (const auto& op : PlanChain(plan)) out += (out.empty() ? "" : " | ") + op->Name();
  return out;
}

TEST(PredicatePushdown, FilterGoesIntoTheReadPastSelectionsAndIntoUnions) {
  TempDir dir;
  auto table = IdTable(5000);
  WriteParquet(table, dir.path() + "/t.parquet", 500);
  auto read = Dataset::ReadParquet({dir.path()}).ValueOrDie();
  auto predicate = cp::greater_equal(cp::field_ref("id"), cp::literal(int64_t{4200}));
  auto ds = read.SelectColumns({"id"}).ValueOrDie().Filter(predicate);
  auto optimized = Optimize(ds.plan()).ValueOrDie();
  // The selection folds into the read too: one operator, reading one column of the rows.
  EXPECT_EQ(PlanNames(optimized), "ReadParquet[columns=[id], filter=(id >= 4200)]");
  auto out = ds.ToTable(DataContext{}).ValueOrDie();
  EXPECT_EQ(out->num_rows(), 800);
  EXPECT_EQ(out->num_columns(), 1);
  // Only the two row groups that can hold id >= 4200 are read.
  auto stream = ds.Execute(DataContext{}).ValueOrDie();
  while (stream->Next().ValueOrDie()) {
  }
  EXPECT_EQ(stream->stats().operators.front().rows_in, 800);
  // Into each input of a union whose inputs all have the column.
  auto both = read.Union({read}).Filter(predicate);
  auto pushed = Optimize(both.plan()).ValueOrDie();
  ASSERT_EQ(pushed->inputs().size(), 2u);
  for (const auto& input : pushed->inputs()) EXPECT_EQ(input->Name(), "ReadParquet[filter=(id >= 4200)]");
  EXPECT_EQ(both.ToTable(DataContext{}).ValueOrDie()->num_rows(), 1600);
}

TEST(ParquetRead, DictionaryColumnsKeepTheirValues) {
  TempDir dir;
  auto table = StringsAndInts(R"(["b", "a", null, "b", "c"])", "[1, 2, 3, 4, 5]");
  WriteParquet(table, dir.path() + "/t.parquet", 2);
  ReadParquetOptions options;
  options.dictionary_columns = {"s"};
  auto out = Dataset::ReadParquet({dir.path()}, options).ValueOrDie().ToTable(DataContext{}).ValueOrDie();
  EXPECT_EQ(out->schema()->field(0)->type()->id(), arrow::Type::DICTIONARY);
  auto decoded = cp::Cast(out->column(0), arrow::utf8()).ValueOrDie().chunked_array();
  EXPECT_TRUE(decoded->Equals(*table->column(0)));
  EXPECT_TRUE(out->column(1)->Equals(*table->column(1)));
}

TEST(DictionaryKeys, AGroupByReadsItsStringKeysAsDictionaries) {
  TempDir dir;
  auto table = StringsAndInts(R"(["b", "a", "b", "b"])", "[1, 2, 3, 4]");
  WriteParquet(table, dir.path() + "/t.parquet", 3);
  AggregateSpec sum{AggregateSpec::Kind::kSum, "n", true, 1, "sum(n)"};
  // The int key stays as it is; the string key is read as a dictionary.
  auto grouped = Dataset::ReadParquet({dir.path()}).ValueOrDie().GroupByAggregate({"s", "n"}, {sum}).ValueOrDie();
  EXPECT_NE(PlanNames(Optimize(grouped.plan()).ValueOrDie()).find("ReadParquet[dictionary=[s]]"), std::string::npos);
  auto by_s = Dataset::ReadParquet({dir.path()}).ValueOrDie().GroupByAggregate({"s"}, {sum}).ValueOrDie();
  auto out = by_s.ToTable(DataContext{}).ValueOrDie()->CombineChunks().ValueOrDie();
  // By hand: a = 2, b = 1 + 3 + 4; the key decoded back to strings.
  EXPECT_TRUE(out->column(0)->Equals(*Chunked(arrow::utf8(), R"(["a", "b"])")));
  EXPECT_TRUE(out->column(1)->Equals(*Chunked(arrow::int64(), "[2, 8]")));
}

TEST(PredicatePushdown, StaysWhereItCannotGo) {
  TempDir dir;
  WriteParquet(IdTable(100), dir.path() + "/t.parquet", 50);
  auto read = Dataset::ReadParquet({dir.path()}).ValueOrDie();
  auto on_x = cp::greater(cp::field_ref("x"), cp::literal(10.0));
  // Not below a limit (the first rows, then the filter), nor past a selection that drops
  // its column, nor into a read that lacks it.
  EXPECT_EQ(PlanNames(Optimize(read.Limit(5).Filter(on_x).plan()).ValueOrDie()),
            "ReadParquet | Limit[5] | Filter((x > 10))");
  auto dropped = read.SelectColumns({"id"}).ValueOrDie().Filter(on_x);
  EXPECT_EQ(PlanNames(Optimize(dropped.plan()).ValueOrDie()), "ReadParquet[columns=[id]]->Filter((x > 10))");
  EXPECT_FALSE(dropped.ToTable(DataContext{}).ok());
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

/// The files of a directory (recursive), sorted by path.
std::vector<arrow::fs::FileInfo> FilesUnder(const std::string& directory) {
  arrow::fs::FileSelector selector;
  selector.base_dir = directory;
  selector.recursive = true;
  selector.allow_not_found = true;
  auto infos = arrow::fs::LocalFileSystem().GetFileInfo(selector).ValueOrDie();
  std::vector<arrow::fs::FileInfo> files;
  for (auto& info : infos) if (info.IsFile()) files.push_back(std::move(info));
  std::sort(files.begin(), files.end(),
            [](const auto& a, const auto& b) { return a.path() < b.path(); });
  return files;
}

std::shared_ptr<parquet::FileMetaData> ParquetMetadata(const std::string& path) {
  auto input = arrow::io::ReadableFile::Open(path).ValueOrDie();
  return parquet::ReadMetaData(input);
}

TEST(WriteModes, ErrorIgnoreOverwriteAppendOnAnExistingDirectory) {
  TempDir dir;
  std::string out = dir.path() + "/out";
  std::filesystem::create_directories(out + "/sub");
  WriteParquet(IdTable(3), out + "/old.parquet", 10);
  WriteParquet(IdTable(3), out + "/sub/old.parquet", 10);
  auto ds = Dataset::FromArrow(IdTable(10), 1).ValueOrDie();

  auto error = ds.Write(out, FileFormat::kParquet, WriteOptions{}, SaveMode::kError, DataContext{});
  EXPECT_EQ(error.code(), arrow::StatusCode::Invalid);
  EXPECT_NE(error.message().find(out), std::string::npos) << error.message();
  EXPECT_EQ(FilesUnder(out).size(), 2u);

  ASSERT_OK(ds.Write(out, FileFormat::kParquet, WriteOptions{}, SaveMode::kIgnore, DataContext{}));
  EXPECT_EQ(FilesUnder(out).size(), 2u);

  ASSERT_OK(ds.Write(out, FileFormat::kParquet, WriteOptions{}, SaveMode::kAppend, DataContext{}));
  EXPECT_EQ(FilesUnder(out).size(), 3u);

  ASSERT_OK(ds.Write(out, FileFormat::kParquet, WriteOptions{}, SaveMode::kOverwrite, DataContext{}));
  auto files = FilesUnder(out);
  ASSERT_EQ(files.size(), 1u);
  EXPECT_FALSE(std::filesystem::exists(out + "/sub"));
  EXPECT_TRUE(ReadWithArrow(files[0].path())->Equals(*IdTable(10)));
}

TEST(WriteModes, ABadOptionFailsBeforeAnOverwriteDeletesAnything) {
  TempDir dir;
  std::string out = dir.path() + "/out";
  std::filesystem::create_directories(out);
  WriteParquet(IdTable(3), out + "/old.parquet", 10);
  WriteOptions options;
  options.parquet.version = "3.0";
  auto status = Dataset::FromArrow(IdTable(10), 1).ValueOrDie().Write(
      out, FileFormat::kParquet, options, SaveMode::kOverwrite, DataContext{});
  EXPECT_EQ(status.code(), arrow::StatusCode::Invalid);
  EXPECT_NE(status.message().find("version='3.0'"), std::string::npos) << status.message();
  EXPECT_EQ(FilesUnder(out).size(), 1u);
}

TEST(WriteModes, ErrorOnAnEmptyExistingDirectoryAndNotOnAMissingOne) {
  TempDir dir;
  std::filesystem::create_directories(dir.path() + "/empty");
  EXPECT_EQ(PrepareWriteDirectory(dir.path() + "/empty", SaveMode::kError, "Write").status().code(),
            arrow::StatusCode::Invalid);
  EXPECT_TRUE(PrepareWriteDirectory(dir.path() + "/new/dir", SaveMode::kError, "Write").ValueOrDie());
  EXPECT_TRUE(std::filesystem::is_directory(dir.path() + "/new/dir"));
  EXPECT_FALSE(PrepareWriteDirectory(dir.path() + "/empty", SaveMode::kIgnore, "Write").ValueOrDie());
}

TEST(WriteOptionsTest, MaxRowsPerFileSplitsEveryFile) {
  TempDir dir;
  WriteOptions options;
  options.max_rows_per_file = 30;
  auto ds = Dataset::FromArrow(IdTable(100), 1).ValueOrDie();
  ASSERT_OK(ds.Write(dir.path() + "/out", FileFormat::kParquet, options, SaveMode::kAppend, DataContext{}));
  std::vector<int64_t> rows;
  for (const auto& f : FilesUnder(dir.path() + "/out")) rows.push_back(ParquetMetadata(f.path())->num_rows());
  EXPECT_EQ(rows, (std::vector<int64_t>{30, 30, 30, 10}));
}

TEST(WriteOptionsTest, ParquetOptionsReachTheFile) {
  TempDir dir;
  WriteOptions options;
  options.parquet.compression = "zstd";
  options.parquet.row_group_size = 40;
  options.parquet.write_statistics = false;
  options.parquet.version = "1.0";
  auto ds = Dataset::FromArrow(IdTable(100), 1).ValueOrDie();
  ASSERT_OK(ds.Write(dir.path() + "/out", FileFormat::kParquet, options, SaveMode::kAppend, DataContext{}));
  auto files = FilesUnder(dir.path() + "/out");
  ASSERT_EQ(files.size(), 1u);
  auto meta = ParquetMetadata(files[0].path());
  ASSERT_EQ(meta->num_row_groups(), 3);
  EXPECT_EQ(meta->RowGroup(0)->num_rows(), 40);
  EXPECT_EQ(meta->RowGroup(0)->ColumnChunk(0)->compression(), arrow::Compression::ZSTD);
  EXPECT_FALSE(meta->RowGroup(0)->ColumnChunk(0)->is_stats_set());
  EXPECT_EQ(meta->version(), parquet::ParquetVersion::PARQUET_1_0);

  options.parquet.compression = "zip";
  auto bad = ds.Write(dir.path() + "/bad", FileFormat::kParquet, options, SaveMode::kAppend, DataContext{});
  EXPECT_EQ(bad.code(), arrow::StatusCode::Invalid);
  EXPECT_NE(bad.message().find("compression='zip'"), std::string::npos) << bad.message();
}

TEST(WriteOptionsTest, FilenameFunctionNamesTheFilesAndStaysInside) {
  TempDir dir;
  WriteOptions options;
  options.filename = [](const std::string& write_id, int64_t task) -> arrow::Result<std::string> {
    return "part-" + std::to_string(task) + ".csv";
  };
  options.max_rows_per_file = 60;
  auto ds = Dataset::FromArrow(IdTable(100), 1).ValueOrDie();
  ASSERT_OK(ds.Write(dir.path() + "/out", FileFormat::kCsv, options, SaveMode::kAppend, DataContext{}));
  auto files = FilesUnder(dir.path() + "/out");
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].base_name(), "part-0.csv");
  EXPECT_EQ(files[1].base_name(), "part-0_000001.csv");

  // A template: `{i}` is the file's number in its task.
  options.filename = [](const std::string& write_id, int64_t task) -> arrow::Result<std::string> {
    return "t" + std::to_string(task) + "-{i}.csv";
  };
  options.filename_template = true;
  ASSERT_OK(ds.Write(dir.path() + "/template", FileFormat::kCsv, options, SaveMode::kAppend, DataContext{}));
  files = FilesUnder(dir.path() + "/template");
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].base_name(), "t0-0.csv");
  EXPECT_EQ(files[1].base_name(), "t0-1.csv");

  options.filename = [](const std::string&, int64_t) -> arrow::Result<std::string> {
    return std::string("../outside.csv");
  };
  auto bad = ds.Write(dir.path() + "/bad", FileFormat::kCsv, options, SaveMode::kAppend, DataContext{});
  EXPECT_EQ(bad.code(), arrow::StatusCode::Invalid);
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/outside.csv"));
}

TEST(WriteOptionsTest, CsvOptionsReachTheFile) {
  TempDir dir;
  WriteOptions options;
  options.csv.include_header = false;
  options.csv.delimiter = ';';
  options.csv.quoting_style = "all_valid";
  arrow::Int64Builder ints;
  ASSERT_OK(ints.AppendValues({1, 2}));
  arrow::StringBuilder strings;
  ASSERT_OK(strings.AppendValues({"x", "y b"}));
  auto table = arrow::Table::Make(arrow::schema({arrow::field("a", arrow::int64()), arrow::field("b", arrow::utf8())}),
                                  {ints.Finish().ValueOrDie(), strings.Finish().ValueOrDie()});
  auto ds = Dataset::FromArrow(table, 1).ValueOrDie();
  ASSERT_OK(ds.Write(dir.path() + "/out", FileFormat::kCsv, options, SaveMode::kAppend, DataContext{}));
  auto files = FilesUnder(dir.path() + "/out");
  ASSERT_EQ(files.size(), 1u);
  auto input = arrow::io::ReadableFile::Open(files[0].path()).ValueOrDie();
  auto bytes = input->Read(1 << 20).ValueOrDie();
  // What Arrow's CSV writer makes of the same table with the same options.
  auto expected_out = arrow::io::BufferOutputStream::Create().ValueOrDie();
  auto arrow_options = arrow::csv::WriteOptions::Defaults();
  arrow_options.include_header = false;
  arrow_options.delimiter = ';';
  arrow_options.quoting_style = arrow::csv::QuotingStyle::AllValid;
  ASSERT_OK(arrow::csv::WriteCSV(*table, arrow_options, expected_out.get()));
  EXPECT_EQ(bytes->ToString(), expected_out->Finish().ValueOrDie()->ToString());
  EXPECT_EQ(bytes->ToString().find("a;b"), std::string::npos);
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
