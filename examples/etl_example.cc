// A C++ ETL pipeline: write a Parquet dataset, then stream it through a filter and a
// C++ UDF into new Parquet files, and check the result.
//
//   etl_example OUTPUT_DIR

#include <iostream>

#include <arrow/api.h>
#include <arrow/compute/api.h>
#include <arrow/filesystem/api.h>

#include "millstream/millstream.h"

namespace cp = arrow::compute;

/// Adds a column "total" = price * quantity.
class AddTotal : public millstream::BatchUdf {
 public:
  arrow::Result<std::shared_ptr<arrow::Table>> Call(
      const std::shared_ptr<arrow::RecordBatch>& batch) override {
    ARROW_ASSIGN_OR_RAISE(auto total, cp::Multiply(batch->GetColumnByName("price"),
                                                   batch->GetColumnByName("quantity")));
    ARROW_ASSIGN_OR_RAISE(auto with_total,
                          batch->AddColumn(batch->num_columns(), "total", total.make_array()));
    return arrow::Table::FromRecordBatches({with_total});
  }
};

arrow::Status Run(const std::string& out_dir) {
  ARROW_RETURN_NOT_OK(millstream::Initialize());
  millstream::DataContext context;

  // Sample input: 100,000 orders written as Parquet by the engine itself.
  arrow::Int64Builder ids;
  arrow::DoubleBuilder prices;
  arrow::Int64Builder quantities;
  for (int64_t i = 0; i < 100000; ++i) {
    ARROW_RETURN_NOT_OK(ids.Append(i));
    ARROW_RETURN_NOT_OK(prices.Append(static_cast<double>(i % 100) / 4));
    ARROW_RETURN_NOT_OK(quantities.Append(i % 7));
  }
  ARROW_ASSIGN_OR_RAISE(auto id_array, ids.Finish());
  ARROW_ASSIGN_OR_RAISE(auto price_array, prices.Finish());
  ARROW_ASSIGN_OR_RAISE(auto quantity_array, quantities.Finish());
  auto table = arrow::Table::Make(
      arrow::schema({arrow::field("id", arrow::int64()), arrow::field("price", arrow::float64()),
                     arrow::field("quantity", arrow::int64())}),
      {id_array, price_array, quantity_array});
  ARROW_ASSIGN_OR_RAISE(auto orders, millstream::Dataset::FromArrow(table, 8));
  // Overwrite: a rerun replaces the files of the last run instead of adding to them.
  millstream::WriteOptions write_options;
  write_options.parquet.compression = "zstd";
  write_options.max_rows_per_file = 20000;
  ARROW_RETURN_NOT_OK(orders.Write(out_dir + "/orders", millstream::FileFormat::kParquet, write_options,
                                   millstream::SaveMode::kOverwrite, context));

  // The pipeline: read -> filter -> UDF -> write.
  millstream::ReadParquetOptions read_options;
  ARROW_ASSIGN_OR_RAISE(auto ds, millstream::Dataset::ReadParquet({out_dir + "/orders"}, read_options));
  millstream::MapBatchesOptions map_options;
  map_options.name = "MapBatches(AddTotal)";
  auto udf = std::make_shared<AddTotal>();
  auto pipeline = ds.Filter(cp::greater(cp::field_ref("quantity"), cp::literal(int64_t{2})))
                      .MapBatches([udf]() -> arrow::Result<std::shared_ptr<millstream::BatchUdf>> {
                        return udf;
                      }, map_options);
  std::cout << pipeline.Explain(context);
  millstream::ExecutionStats stats;
  ARROW_RETURN_NOT_OK(pipeline.Write(out_dir + "/totals", millstream::FileFormat::kParquet,
                                     millstream::WriteOptions{}, millstream::SaveMode::kOverwrite,
                                     context, &stats));
  std::cout << stats.ToString();

  // Check: rows with quantity > 2 are 4/7 of the input; totals add up.
  ARROW_ASSIGN_OR_RAISE(auto totals, millstream::Dataset::ReadParquet({out_dir + "/totals"}));
  ARROW_ASSIGN_OR_RAISE(int64_t rows, totals.Count(context));
  int64_t expected = 0;
  for (int64_t i = 0; i < 100000; ++i) expected += (i % 7) > 2;
  std::cout << "rows written: " << rows << " (expected " << expected << ")\n";
  if (rows != expected) return arrow::Status::Invalid("wrong row count");
  return arrow::Status::OK();
}

int main(int argc, char** argv) {
  std::string out_dir = argc > 1 ? argv[1] : "etl_example_out";
  auto fs = std::make_shared<arrow::fs::LocalFileSystem>();
  (void)fs->DeleteDirContents(out_dir, /*missing_dir_ok=*/true);
  auto status = Run(out_dir);
  if (!status.ok()) {
    std::cerr << "error: " << status.ToString() << "\n";
    return 1;
  }
  return 0;
}
