#include <filesystem>
#include <fstream>

#include <arrow/csv/api.h>
#include <arrow/io/api.h>
#include <arrow/json/api.h>

#include "io/file_datasource.h"
#include "test_util.h"

namespace millstream {
namespace {

using testing::TempDir;

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::shared_ptr<arrow::Table> ReadAll(std::shared_ptr<Datasource> source) {
  auto ds = Dataset::FromSource(std::move(source)).ValueOrDie();
  DataContext context;
  context.execution_options.preserve_order = true;
  return ds.ToTable(context).ValueOrDie();
}

std::vector<FoundFile> List(const std::vector<std::string>& paths, std::shared_ptr<arrow::fs::FileSystem>* fs,
                            std::vector<std::string> extensions = {}) {
  ListOptions options;
  options.extensions = std::move(extensions);
  return ListFiles(paths, fs, options).ValueOrDie();
}

TEST(FileDatasource, CsvMatchesArrowsReader) {
  TempDir dir;
  WriteText(dir.path() + "/a.csv", "id,name\n1,x\n2,\n");
  WriteText(dir.path() + "/b.csv", "id,name\n3,z\n");
  std::shared_ptr<arrow::fs::FileSystem> fs;
  auto files = List({dir.path()}, &fs, {"csv"});
  ASSERT_EQ(files.size(), 2u);
  auto out = ReadAll(MakeCsvSource(fs, files, {}, {}));
  auto input = arrow::io::ReadableFile::Open(dir.path() + "/a.csv").ValueOrDie();
  auto reader = arrow::csv::TableReader::Make(arrow::io::default_io_context(), input,
                                              arrow::csv::ReadOptions::Defaults(),
                                              arrow::csv::ParseOptions::Defaults(),
                                              arrow::csv::ConvertOptions::Defaults())
                    .ValueOrDie();
  auto first = reader->Read().ValueOrDie();
  EXPECT_TRUE(out->Slice(0, 2)->Equals(*first)) << out->ToString();
  EXPECT_EQ(out->num_rows(), 3);
}

TEST(FileDatasource, MalformedCsvNamesTheFile) {
  TempDir dir;
  WriteText(dir.path() + "/bad.csv", "a,b\n1,2\n3\n");
  std::shared_ptr<arrow::fs::FileSystem> fs;
  FileReadOptions options;
  options.operation = "read_csv";
  auto files = List({dir.path()}, &fs);
  auto ds = Dataset::FromSource(MakeCsvSource(fs, files, options, {})).ValueOrDie();
  auto result = ds.ToTable(DataContext{});
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("bad.csv"), std::string::npos) << result.status().ToString();
  EXPECT_NE(result.status().message().find("read_csv"), std::string::npos);
}

TEST(FileDatasource, JsonLinesAndArraysAgree) {
  TempDir dir;
  WriteText(dir.path() + "/lines.json", "{\"a\": 1, \"s\": \"[,]\"}\n{\"a\": 2, \"s\": \"\\\"\"}\n");
  WriteText(dir.path() + "/array.json", "[ {\"a\": 1, \"s\": \"[,]\"},\n  {\"a\": 2, \"s\": \"\\\"\"} ]\n");
  std::shared_ptr<arrow::fs::FileSystem> fs;
  auto lines_files = List({dir.path() + "/lines.json"}, &fs);
  auto lines = ReadAll(MakeJsonSource(fs, lines_files, {}, {}));
  auto array_files = List({dir.path() + "/array.json"}, &fs);
  auto array = ReadAll(MakeJsonSource(fs, array_files, {}, {}));
  EXPECT_TRUE(lines->Equals(*array)) << lines->ToString() << array->ToString();
  EXPECT_EQ(array->num_rows(), 2);
}

TEST(FileDatasource, TextLinesAndPartitionsAndPaths) {
  TempDir dir;
  std::filesystem::create_directories(dir.path() + "/k=v");
  WriteText(dir.path() + "/k=v/t.txt", "a\r\n\n  \nb\rc");
  std::shared_ptr<arrow::fs::FileSystem> fs;
  FileReadOptions options;
  options.hive_partitioning = true;
  options.include_paths = true;
  auto files = List({dir.path()}, &fs);
  auto out = ReadAll(MakeTextSource(fs, files, options, /*drop_empty_lines=*/true));
  ASSERT_EQ(out->num_rows(), 3);
  EXPECT_EQ(out->schema()->field_names(), (std::vector<std::string>{"text", "k", "path"}));
  auto text = out->GetColumnByName("text")->chunk(0);
  EXPECT_EQ(std::static_pointer_cast<arrow::StringArray>(text)->GetString(2), "c");
}

TEST(FileDatasource, BinaryFilesAreOneRowEachAndCounted) {
  TempDir dir;
  WriteText(dir.path() + "/x.bin", std::string("\0\1\2", 3));
  WriteText(dir.path() + "/y.bin", "");
  std::shared_ptr<arrow::fs::FileSystem> fs;
  auto files = List({dir.path()}, &fs);
  auto source = MakeBinarySource(fs, files, {});
  EXPECT_EQ(source->num_rows(), 2);
  auto out = ReadAll(source);
  auto bytes = std::static_pointer_cast<arrow::BinaryArray>(out->GetColumnByName("bytes")->chunk(0));
  EXPECT_EQ(bytes->GetString(0), std::string("\0\1\2", 3));
}

TEST(FileDatasource, CompressionIsDetectedFromTheName) {
  EXPECT_EQ(DetectCompression("a/b.csv.gz"), "gzip");
  EXPECT_EQ(DetectCompression("a/b.JSON.ZST"), "zstd");
  EXPECT_EQ(DetectCompression("a/b.csv"), "");
}

TEST(FileDatasource, UncompressedFilesAreSizedByTheirBytes) {
  // An uncompressed text file decodes to about its size, so its first tasks may start
  // together; a compressed one may decode to many times its size.
  TempDir dir;
  WriteText(dir.path() + "/a.csv", "i\n1\n");
  WriteText(dir.path() + "/b.csv.gz", "not read");
  std::shared_ptr<arrow::fs::FileSystem> fs;
  auto files = List({dir.path()}, &fs);
  ASSERT_EQ(files.size(), 2u);
  auto tasks = MakeCsvSource(fs, files, {}, {})->GetReadTasks(ReadTaskOptions{}).ValueOrDie();
  ASSERT_EQ(tasks.size(), 2u);
  EXPECT_TRUE(tasks[0]->sized_by_metadata());
  EXPECT_FALSE(tasks[1]->sized_by_metadata());
  FileReadOptions gzip;
  gzip.stream_compression = "gzip";
  auto said = MakeCsvSource(fs, {files[0]}, gzip, {})->GetReadTasks(ReadTaskOptions{}).ValueOrDie();
  EXPECT_FALSE(said[0]->sized_by_metadata());
}

TEST(FileDatasource, ManySmallFilesAreGrouped) {
  TempDir dir;
  for (int i = 0; i < 50; ++i) WriteText(dir.path() + "/f" + std::to_string(100 + i) + ".csv", "i\n" + std::to_string(i) + "\n");
  std::shared_ptr<arrow::fs::FileSystem> fs;
  auto files = List({dir.path()}, &fs);
  auto source = MakeCsvSource(fs, files, {}, {});
  ReadTaskOptions options;
  options.min_tasks = 10;
  EXPECT_EQ(source->GetReadTasks(options).ValueOrDie().size(), 10u);
  EXPECT_EQ(ReadAll(source)->num_rows(), 50);
}

TEST(FileDatasource, MissingPathsAreErrorsUnlessIgnored) {
  TempDir dir;
  WriteText(dir.path() + "/a.csv", "i\n1\n");
  std::shared_ptr<arrow::fs::FileSystem> fs;
  ListOptions options;
  auto missing = ListFiles({dir.path() + "/nope.csv"}, &fs, options);
  EXPECT_TRUE(missing.status().IsIOError());
  options.ignore_missing_paths = true;
  EXPECT_EQ(ListFiles({dir.path() + "/nope.csv", dir.path() + "/a.csv"}, &fs, options).ValueOrDie().size(), 1u);
  EXPECT_TRUE(ListFiles({dir.path() + "/nope.csv"}, &fs, options).status().IsInvalid());
  EXPECT_TRUE(ListFiles({"hdfs://namenode/x"}, &fs, options).status().IsNotImplemented());
}

}  // namespace
}  // namespace millstream
