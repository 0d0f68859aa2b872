// ZipOperator driven directly (alignment of misaligned blocks, zero-copy slices, length
// checks), and Dataset::Zip / Dataset::RandomSample through the executor.

#include <memory>
#include <vector>

#include "exec/operators/operators.h"
#include "plan/logical_operators.h"
#include "test_util.h"

namespace millstream {
namespace {

/// An int64 column `name` = start..start+n-1.
Block Column(const std::string& name, int64_t start, int64_t n) {
  arrow::Int64Builder builder;
  for (int64_t i = 0; i < n; ++i) (void)builder.Append(start + i);
  return arrow::RecordBatch::Make(arrow::schema({arrow::field(name, arrow::int64())}), n,
                                  {builder.Finish().ValueOrDie()});
}

std::vector<Block> Outputs(PhysicalOperator& op) {
  std::vector<Block> out;
  while (op.HasNext()) {
    for (const auto& ref : op.TakeNext().blocks) out.push_back(ref.Get().ValueOrDie());
  }
  return out;
}

/// The value of an OK result (the test stops loudly on an error).
template <typename T>
T Ok(arrow::Result<T> result) {
  if (!result.ok()) ADD_FAILURE() << result.status().ToString();
  return std::move(result).ValueOrDie();
}

const int64_t* Values(const Block& block, int column) {
  return std::static_pointer_cast<arrow::Int64Array>(block->column(column))->raw_values();
}

TEST(ZipOperator, AlignsMisalignedBlocksWithZeroCopySlices) {
  auto op = MakeZipOperator(2);
  EXPECT_TRUE(op->NeedsOrderedInput());
  auto left = Column("id", 0, 10);
  op->AddInput(0, RefBundle::Of(left));
  EXPECT_FALSE(op->HasNext());  // nothing of input 1 yet
  op->AddInput(1, RefBundle::Of(Column("id", 100, 3)));
  op->AddInput(1, RefBundle::Of(Column("id", 103, 7)));
  op->InputDone(0);
  op->InputDone(1);
  ASSERT_OK(op->status());
  auto out = Outputs(*op);
  ASSERT_EQ(out.size(), 2u);  // cut where input 1's first block ends
  EXPECT_EQ(out[0]->num_rows(), 3);
  EXPECT_EQ(out[1]->num_rows(), 7);
  EXPECT_EQ(out[0]->schema()->field_names(), (std::vector<std::string>{"id", "id_1"}));
  for (const auto& block : out) {
    for (int64_t r = 0; r < block->num_rows(); ++r) {
      EXPECT_EQ(Values(block, 1)[r], Values(block, 0)[r] + 100);
    }
  }
  // The left column is a slice of the input block's buffer, not a copy.
  EXPECT_EQ(Values(out[1], 0), Values(left, 0) + 3);
  EXPECT_TRUE(op->Completed());
}

TEST(ZipOperator, DifferentLengthsFailWithBothCounts) {
  auto op = MakeZipOperator(2);
  op->AddInput(0, RefBundle::Of(Column("a", 0, 5)));
  op->AddInput(1, RefBundle::Of(Column("b", 0, 4)));
  op->InputDone(0);
  ASSERT_OK(op->status());  // input 1 may still bring a row
  op->InputDone(1);
  EXPECT_TRUE(op->status().IsInvalid());
  EXPECT_NE(op->status().message().find("different number of rows: 5, 4"), std::string::npos)
      << op->status().ToString();
}

TEST(ZipOperator, ALongerInputFailsAsSoonAsItPassesAFinishedOne) {
  auto op = MakeZipOperator(2);
  op->AddInput(0, RefBundle::Of(Column("a", 0, 2)));
  op->InputDone(0);
  op->AddInput(1, RefBundle::Of(Column("b", 0, 3)));
  EXPECT_TRUE(op->status().IsInvalid()) << op->status().ToString();
}

TEST(ZipOperator, StoppedByALimitIsNoError) {
  auto op = MakeZipOperator(2);
  op->AddInput(0, RefBundle::Of(Column("a", 0, 5)));
  op->AddInput(1, RefBundle::Of(Column("b", 0, 2)));
  op->Stop();  // what a satisfied limit downstream does, then its inputs are done
  op->InputDone(0);
  op->InputDone(1);
  ASSERT_OK(op->status());
}

TEST(DatasetZip, ThreeWayWithRayNamesThroughTheExecutor) {
  auto a = Ok(Dataset::Range(1000, 7));
  auto b = Ok(Dataset::Range(1000, 3));
  auto c = Ok(Dataset::Range(1000, 1));
  DataContext context;
  auto table = Ok(a.Zip({b, c}).ToTable(context));
  EXPECT_EQ(table->schema()->field_names(), (std::vector<std::string>{"id", "id_1", "id_2"}));
  ASSERT_EQ(table->num_rows(), 1000);
  EXPECT_TRUE(table->column(0)->Equals(*table->column(1)));
  EXPECT_TRUE(table->column(0)->Equals(*table->column(2)));
  auto short_one = Ok(Dataset::Range(999, 2));
  auto failed = a.Zip({short_one}).ToTable(context);
  EXPECT_TRUE(failed.status().IsInvalid()) << failed.status().ToString();
}

TEST(DatasetRandomSample, SeededIsDeterministicAndNearTheFraction) {
  auto ds = Ok(Dataset::Range(100000, 16));
  auto sampled = Ok(ds.RandomSample(0.25, {7, false}));
  DataContext context;
  auto first = Ok(sampled.ToTable(context));
  auto second = Ok(sampled.ToTable(context));
  EXPECT_TRUE(first->Equals(*second));
  // Binomial(100000, 0.25): sd ~137; 6 sd either side.
  EXPECT_NEAR(first->num_rows(), 25000, 6 * 137);
  EXPECT_FALSE(ds.RandomSample(1.5).ok());
  EXPECT_FALSE(ds.RandomSample(-0.1).ok());
}

}  // namespace
}  // namespace millstream
