#include "exec/schema_unify.h"

#include <arrow/extension/fixed_shape_tensor.h>
#include <arrow/extension/variable_shape_tensor.h>
#include <arrow/json/from_string.h>

#include "test_util.h"

namespace millstream {
namespace {

Block MakeBlock(std::shared_ptr<arrow::Schema> schema, const std::string& json_rows) {
  auto rows = arrow::json::ArrayFromJSONString(arrow::struct_(schema->fields()), json_rows);
  EXPECT_TRUE(rows.ok()) << rows.status().ToString();
  return arrow::RecordBatch::FromStructArray(*rows).ValueOrDie();
}

TEST(SchemaUnify, AddsMissingColumnsAsNullAndPromotesTypes) {
  auto a = MakeBlock(arrow::schema({arrow::field("id", arrow::int64()), arrow::field("s", arrow::null())}),
                     R"([{"id": 1, "s": null}])");
  auto b = MakeBlock(arrow::schema({arrow::field("id", arrow::float64()), arrow::field("s", arrow::utf8()),
                                    arrow::field("extra", arrow::int32())}),
                     R"([{"id": 2.5, "s": "x", "extra": 7}])");
  ASSERT_OK_AND_ASSIGN(auto out, ConcatenateBlocks({a, b}));
  auto expected = MakeBlock(
      arrow::schema({arrow::field("id", arrow::float64()), arrow::field("s", arrow::utf8()),
                     arrow::field("extra", arrow::int32())}),
      R"([{"id": 1.0, "s": null, "extra": null}, {"id": 2.5, "s": "x", "extra": 7}])");
  ASSERT_TRUE(out->Equals(*expected)) << out->ToString();
}

Block TensorBlock(int64_t width, const std::string& json_cells) {
  auto type = arrow::extension::FixedShapeTensorType::Make(arrow::float64(), {width}).ValueOrDie();
  auto storage = arrow::json::ArrayFromJSONString(
      arrow::fixed_size_list(arrow::float64(), static_cast<int32_t>(width)), json_cells).ValueOrDie();
  auto column = arrow::ExtensionType::WrapArray(type, storage);
  return arrow::RecordBatch::Make(arrow::schema({arrow::field("t", type)}), column->length(), {column});
}

TEST(SchemaUnify, TensorsOfDifferentShapesBecomeVariableShape) {
  ASSERT_OK_AND_ASSIGN(auto out, ConcatenateBlocks({TensorBlock(2, "[[1, 2], [3, 4]]"),
                                                    TensorBlock(3, "[[5, 6, 7]]")}));
  auto type = arrow::extension::variable_shape_tensor(arrow::float64(), 1);
  ASSERT_TRUE(out->schema()->field(0)->type()->Equals(*type)) << out->schema()->ToString();
  const auto& storage = *static_cast<const arrow::ExtensionArray&>(*out->column(0)).storage();
  auto expected = arrow::json::ArrayFromJSONString(
      static_cast<const arrow::ExtensionType&>(*type).storage_type(),
      R"([{"data": [1, 2], "shape": [2]}, {"data": [3, 4], "shape": [2]},
          {"data": [5, 6, 7], "shape": [3]}])").ValueOrDie();
  ASSERT_TRUE(storage.Equals(*expected)) << storage.ToString();
}

TEST(SchemaUnify, SameSchemaIsUnchanged) {
  auto schema = arrow::schema({arrow::field("id", arrow::int64())});
  auto a = MakeBlock(schema, R"([{"id": 1}])");
  auto b = MakeBlock(schema, R"([{"id": 2}])");
  ASSERT_OK_AND_ASSIGN(auto blocks, UnifyBlocks({a, b}));
  ASSERT_EQ(blocks[0], a);
  ASSERT_EQ(blocks[1], b);
}

TEST(SchemaUnify, ConflictNamesColumnAndBothTypes) {
  auto a = MakeBlock(arrow::schema({arrow::field("v", arrow::int64())}), R"([{"v": 1}])");
  auto b = MakeBlock(arrow::schema({arrow::field("v", arrow::utf8())}), R"([{"v": "x"}])");
  auto out = ConcatenateBlocks({a, b});
  ASSERT_FALSE(out.ok());
  const auto& message = out.status().message();
  EXPECT_NE(message.find("v"), std::string::npos) << message;
  EXPECT_NE(message.find("int64"), std::string::npos) << message;
  EXPECT_NE(message.find("string"), std::string::npos) << message;
}

}  // namespace
}  // namespace millstream
