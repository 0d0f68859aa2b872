#include "test_util.h"

namespace millstream {
namespace {

using testing::IdTable;
namespace cp = arrow::compute;

TEST(WithColumn, AddsAColumnFromAnExpression) {
  auto ds = Dataset::FromArrow(IdTable(10), 3).ValueOrDie();
  auto out = ds.WithColumn("twice", cp::call("multiply", {cp::field_ref("id"), cp::literal(int64_t{2})}))
                 .ToTable(DataContext{})
                 .ValueOrDie();
  // IdTable's columns, then the new one; rows in input order (ToTable collects in order).
  ASSERT_EQ(out->num_columns(), 3);
  EXPECT_EQ(out->schema()->field(2)->name(), "twice");
  int64_t row = 0;
  for (const auto& chunk : out->column(2)->chunks()) {
    auto twice = std::static_pointer_cast<arrow::Int64Array>(chunk);
    for (int64_t i = 0; i < twice->length(); ++i, ++row) EXPECT_EQ(twice->Value(i), 2 * row);
  }
  EXPECT_EQ(row, 10);
}

TEST(WithColumn, ReplacesAColumnAndRepeatsAScalar) {
  auto ds = Dataset::FromArrow(IdTable(5)).ValueOrDie();
  auto out = ds.WithColumn("id", cp::literal(7.5)).ToTable(DataContext{}).ValueOrDie();
  ASSERT_EQ(out->num_columns(), 2);
  EXPECT_EQ(out->schema()->field(0)->name(), "id");
  EXPECT_TRUE(out->schema()->field(0)->type()->Equals(arrow::float64()));
  auto values = out->column(0)->chunk(0);
  ASSERT_EQ(values->length(), 5);
  EXPECT_EQ(std::static_pointer_cast<arrow::DoubleArray>(values)->Value(4), 7.5);
}

TEST(WithColumn, SchemaIsKnownWithoutRunning) {
  auto ds = Dataset::FromArrow(IdTable(5)).ValueOrDie().WithColumn(
      "half", cp::call("divide", {cp::call("cast", {cp::field_ref("id")},
                                           cp::CastOptions::Safe(arrow::float64())),
                                  cp::literal(2.0)}));
  auto schema = ds.KnownSchema();
  ASSERT_NE(schema, nullptr);
  ASSERT_EQ(schema->num_fields(), 3);
  EXPECT_EQ(schema->field(2)->name(), "half");
  EXPECT_TRUE(schema->field(2)->type()->Equals(arrow::float64()));
}

TEST(WithColumn, AMissingColumnIsAKeyErrorNamingIt) {
  auto ds = Dataset::FromArrow(IdTable(5)).ValueOrDie();
  auto out = ds.WithColumn("x", cp::call("add", {cp::field_ref("nope"), cp::literal(int64_t{1})}))
                 .ToTable(DataContext{});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), arrow::StatusCode::KeyError);
  EXPECT_NE(out.status().message().find("'nope' not found"), std::string::npos) << out.status().ToString();
}

}  // namespace
}  // namespace millstream
