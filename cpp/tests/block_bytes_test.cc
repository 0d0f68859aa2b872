// BlockBytes against the reference: Arrow's own ReferencedBufferSize (pyarrow's nbytes),
// for every layout a block may hold, whole and sliced.

#include <arrow/api.h>
#include <arrow/json/from_string.h>
#include <arrow/util/byte_size.h>
#include <gtest/gtest.h>

#include "millstream/block.h"

namespace millstream {
namespace {

std::shared_ptr<arrow::Array> FromJson(const std::shared_ptr<arrow::DataType>& type,
                                       const std::string& json) {
  return arrow::json::ArrayFromJSONString(type, json).ValueOrDie();
}

/// BlockBytes of a one-column block over every slice of `array`, against Arrow.
void ExpectEveryReferencedSliceMatchesArrow(const std::shared_ptr<arrow::Array>& array) {
  const int64_t n = array->length();
  for (int64_t offset = 0; offset <= n; ++offset) {
    for (int64_t length = 0; offset + length <= n; ++length) {
      auto slice = array->Slice(offset, length);
      auto block = arrow::RecordBatch::Make(arrow::schema({arrow::field("c", slice->type())}),
                                            length, {slice});
      auto expected = arrow::util::ReferencedBufferSize(*block);
      ASSERT_TRUE(expected.ok()) << expected.status().ToString();
      ASSERT_EQ(BlockBytes(*block), *expected)
          << array->type()->ToString() << " slice(" << offset << ", " << length << ")";
    }
  }
}

TEST(BlockBytes, EveryLayoutAndSliceCountsWhatArrowCounts) {
  using namespace arrow;
  const std::string long_a(40, 'a'), long_b(30, 'b');
  const std::string strings = "[\"x\", null, \"" + long_a + "\", \"\", \"yz\", \"" + long_b + "\"]";
  ExpectEveryReferencedSliceMatchesArrow(FromJson(int64(), "[1, null, 3, 4, 5, null, 7, 8, 9]"));
  ExpectEveryReferencedSliceMatchesArrow(FromJson(int8(), "[1, 2, 3]"));  // no validity bitmap
  ExpectEveryReferencedSliceMatchesArrow(
      FromJson(boolean(), "[true, false, null, true, true, false, true, false, true, null, true]"));
  ExpectEveryReferencedSliceMatchesArrow(FromJson(float64(), "[1.5, null, 2.5]"));
  ExpectEveryReferencedSliceMatchesArrow(FromJson(utf8(), strings));
  ExpectEveryReferencedSliceMatchesArrow(FromJson(large_utf8(), strings));
  ExpectEveryReferencedSliceMatchesArrow(FromJson(binary(), strings));
  ExpectEveryReferencedSliceMatchesArrow(FromJson(utf8_view(), strings));
  ExpectEveryReferencedSliceMatchesArrow(FromJson(fixed_size_binary(3), "[\"abc\", null, \"def\"]"));
  ExpectEveryReferencedSliceMatchesArrow(FromJson(decimal128(10, 2), "[\"1.25\", null, \"-3.50\"]"));
  ExpectEveryReferencedSliceMatchesArrow(FromJson(timestamp(TimeUnit::MICRO), "[1, null, 3]"));
  ExpectEveryReferencedSliceMatchesArrow(FromJson(date32(), "[1, 2, null]"));
  ExpectEveryReferencedSliceMatchesArrow(FromJson(null(), "[null, null, null]"));
  ExpectEveryReferencedSliceMatchesArrow(FromJson(list(int32()), "[[1, 2], null, [], [3, 4, 5], [6]]"));
  ExpectEveryReferencedSliceMatchesArrow(
      FromJson(large_list(utf8()), "[[\"a\", \"" + long_a + "\"], null, [], [\"c\"]]"));
  ExpectEveryReferencedSliceMatchesArrow(
      FromJson(fixed_size_list(float32(), 2), "[[1, 2], null, [3, 4], [5, null]]"));
  ExpectEveryReferencedSliceMatchesArrow(
      FromJson(map(utf8(), int64()), "[[[\"k\", 1], [\"l\", 2]], null, [], [[\"m\", 3]]]"));
  ExpectEveryReferencedSliceMatchesArrow(
      FromJson(struct_({field("a", int64()), field("b", utf8())}),
               "[{\"a\": 1, \"b\": \"x\"}, {\"a\": null, \"b\": \"" + long_a + "\"}, {\"a\": 3, \"b\": null}]"));
  ExpectEveryReferencedSliceMatchesArrow(
      FromJson(list(struct_({field("a", int16()), field("s", list(utf8()))})),
               "[[{\"a\": 1, \"s\": [\"p\", \"q\"]}], [], [{\"a\": 2, \"s\": null}, {\"a\": null, \"s\": []}]]"));
  ExpectEveryReferencedSliceMatchesArrow(
      json::DictArrayFromJSONString(dictionary(int32(), utf8()), "[0, 1, null, 2, 0]",
                                    "[\"a\", \"bb\", \"" + long_a + "\"]")
          .ValueOrDie());
}

TEST(BlockBytes, LayoutsItDoesNotWalkFallBackToArrow) {
  using namespace arrow;
  auto type = sparse_union({field("i", int32()), field("s", utf8())}, {0, 1});
  auto array = FromJson(type, "[[0, 5], [1, \"x\"], [0, null]]");
  auto block = RecordBatch::Make(schema({field("u", type)}), 3, {array});
  EXPECT_EQ(BlockBytes(*block), *util::ReferencedBufferSize(*block));
}

TEST(BlockBytes, ABlockIsTheSumOfItsColumns) {
  using namespace arrow;
  auto ints = FromJson(int64(), "[1, 2, 3, null]");
  auto strings = FromJson(utf8(), "[\"a\", \"bc\", null, \"def\"]");
  auto block = RecordBatch::Make(schema({field("i", int64()), field("s", utf8())}), 4, {ints, strings});
  // By hand: 1 bitmap byte + 32 value bytes; 1 bitmap byte + 16 offset bytes + 6 value bytes.
  EXPECT_EQ(BlockBytes(*block), 33 + 23);
  EXPECT_EQ(BlockBytes(*block->Slice(1, 2)), (1 + 16) + (1 + 8 + 2));
}

}  // namespace
}  // namespace millstream
