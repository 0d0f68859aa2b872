// BlockBytes: the bytes a block's buffers reference, as pyarrow's `nbytes` counts them
// (arrow::util::ReferencedBufferSize), computed in place. Arrow's own function collects
// every range into a struct array of builders first; for the small blocks of a streaming
// run that costs more than the work on the block, and the engine asks for it several
// times per block (accounting, stats, shaping).

#include <arrow/api.h>
#include <arrow/util/bit_util.h>
#include <arrow/util/byte_size.h>

#include "millstream/block.h"

namespace millstream {

namespace {

namespace bit_util = arrow::bit_util;

/// Sums the referenced bytes of `data` over the logical range [offset, offset + length),
/// seen as `type` (an extension's storage type, or data's own). False for a layout this
/// walk does not know; the caller then asks Arrow.
class ReferencedBytes {
 public:
  bool Add(const arrow::ArrayData& data, const arrow::DataType& type, int64_t offset,
           int64_t length) {
    using arrow::Type;
    switch (type.id()) {
      case Type::NA:
        return true;
      case Type::EXTENSION:
        return Add(data, *static_cast<const arrow::ExtensionType&>(type).storage_type(), offset,
                   length);
      case Type::STRING:
      case Type::BINARY:
        return AddBinary<int32_t>(data, offset, length);
      case Type::LARGE_STRING:
      case Type::LARGE_BINARY:
        return AddBinary<int64_t>(data, offset, length);
      case Type::STRING_VIEW:
      case Type::BINARY_VIEW:
        return AddViews(data, offset, length);
      case Type::LIST:
      case Type::MAP:
        return AddList<int32_t>(data, type, offset, length);
      case Type::LARGE_LIST:
        return AddList<int64_t>(data, type, offset, length);
      case Type::FIXED_SIZE_LIST: {
        if (data.child_data.size() != 1) return false;
        const int64_t size = static_cast<const arrow::FixedSizeListType&>(type).list_size();
        AddBitmap(data, offset, length);
        return Add(*data.child_data[0], *type.field(0)->type(), offset * size, length * size);
      }
      case Type::STRUCT:
        // As Arrow counts a struct: its children's ranges, not its own validity bitmap.
        if (data.child_data.size() != static_cast<size_t>(type.num_fields())) return false;
        for (int i = 0; i < type.num_fields(); ++i) {
          const auto& child = *data.child_data[i];
          if (!Add(child, *type.field(i)->type(), offset + child.offset, length)) return false;
        }
        return true;
      default:
        break;
    }
    const auto* fixed = dynamic_cast<const arrow::FixedWidthType*>(&type);
    if (!fixed) return false;  // unions, run-end encoded, list views...
    AddBitmap(data, offset, length);
    if (data.buffers.size() < 2 || !data.buffers[1]) return false;
    const int64_t first_bit = offset * fixed->bit_width();
    const int64_t end_bit = first_bit + length * fixed->bit_width();
    bytes_ += bit_util::RoundUp(end_bit, 8) / 8 - bit_util::RoundDown(first_bit, 8) / 8;
    if (type.id() == Type::DICTIONARY) {
      if (!data.dictionary) return false;
      // The whole dictionary, whatever part of it the indices use (as Arrow counts it).
      const auto& dictionary = *data.dictionary;
      return Add(dictionary, *dictionary.type, dictionary.offset, dictionary.length);
    }
    return true;
  }

  int64_t bytes() const { return bytes_; }

 private:
  void AddBitmap(const arrow::ArrayData& data, int64_t offset, int64_t length) {
    if (!data.buffers.empty() && data.buffers[0]) bytes_ += bit_util::CoveringBytes(offset, length);
  }

  template <typename Offset>
  bool AddBinary(const arrow::ArrayData& data, int64_t offset, int64_t length) {
    if (data.buffers.size() < 3 || !data.buffers[1] || !data.buffers[2]) return false;
    AddBitmap(data, offset, length);
    bytes_ += static_cast<int64_t>(sizeof(Offset)) * length;
    const auto* offsets = reinterpret_cast<const Offset*>(data.buffers[1]->data()) + offset;
    bytes_ += static_cast<int64_t>(offsets[length] - offsets[0]);
    return true;
  }

  template <typename Offset>
  bool AddList(const arrow::ArrayData& data, const arrow::DataType& type, int64_t offset,
               int64_t length) {
    if (data.buffers.size() < 2 || !data.buffers[1] || data.child_data.size() != 1) return false;
    AddBitmap(data, offset, length);
    bytes_ += static_cast<int64_t>(sizeof(Offset)) * length;
    const auto* offsets = reinterpret_cast<const Offset*>(data.buffers[1]->data()) + offset;
    const int64_t start = offsets[0];
    return Add(*data.child_data[0], *type.field(0)->type(), start, offsets[length] - start);
  }

  bool AddViews(const arrow::ArrayData& data, int64_t offset, int64_t length) {
    if (data.buffers.size() < 2 || !data.buffers[1]) return false;
    AddBitmap(data, offset, length);
    bytes_ += static_cast<int64_t>(sizeof(arrow::BinaryViewType::c_type)) * length;
    // Every data buffer whole, whatever part of it the sliced views use (as Arrow counts
    // them).
    for (size_t i = 2; i < data.buffers.size(); ++i) {
      if (data.buffers[i]) bytes_ += data.buffers[i]->size();
    }
    return true;
  }

  int64_t bytes_ = 0;
};

int64_t ColumnBytes(const arrow::ArrayData& column) {
  ReferencedBytes walk;
  if (walk.Add(column, *column.type, column.offset, column.length)) return walk.bytes();
  auto referenced = arrow::util::ReferencedBufferSize(column);
  return referenced.ok() ? *referenced : arrow::util::TotalBufferSize(column);
}

}  // namespace

int64_t BlockBytes(const arrow::RecordBatch& block) {
  int64_t bytes = 0;
  for (const auto& column : block.column_data()) bytes += ColumnBytes(*column);
  return bytes;
}

}  // namespace millstream
