#include "shuffle/sort_keys.h"

#include <array>
#include <cmath>
#include <cstring>
#include <string_view>

#include <arrow/compute/api.h>
#include <arrow/util/decimal.h>

namespace millstream {

namespace cp = arrow::compute;
using ArrayVector = std::vector<std::shared_ptr<arrow::Array>>;

namespace {

using ColumnCompare = std::function<int(int64_t, int64_t)>;

template <typename T>
int Three(const T& a, const T& b) {
  return a < b ? -1 : (b < a ? 1 : 0);
}

/// A column comparator from a value comparator: nulls after everything, `is_nan` values
/// after every other value, both in either direction; other values flipped when
/// descending.
template <typename ArrayT, typename Values, typename IsNan>
ColumnCompare Wrap(std::shared_ptr<arrow::Array> left, std::shared_ptr<arrow::Array> right,
                   bool descending, Values values, IsNan is_nan) {
  auto* a = static_cast<const ArrayT*>(left.get());
  auto* b = static_cast<const ArrayT*>(right.get());
  bool nulls = left->null_count() != 0 || right->null_count() != 0;
  return [left, right, a, b, descending, nulls, values, is_nan](int64_t i, int64_t j) {
    if (nulls) {
      bool ni = a->IsNull(i), nj = b->IsNull(j);
      if (ni || nj) return ni == nj ? 0 : (ni ? 1 : -1);
    }
    bool nan_i = is_nan(*a, i), nan_j = is_nan(*b, j);
    if (nan_i || nan_j) return nan_i == nan_j ? 0 : (nan_i ? 1 : -1);
    int c = values(*a, i, *b, j);
    return descending ? -c : c;
  };
}

constexpr auto kNoNan = [](const auto&, int64_t) { return false; };

template <typename ArrowType>
ColumnCompare Primitive(std::shared_ptr<arrow::Array> l, std::shared_ptr<arrow::Array> r,
                        bool desc) {
  using ArrayT = typename arrow::TypeTraits<ArrowType>::ArrayType;
  auto values = [](const ArrayT& a, int64_t i, const ArrayT& b, int64_t j) {
    return Three(a.Value(i), b.Value(j));
  };
  if constexpr (std::is_floating_point_v<typename ArrowType::c_type>) {
    auto is_nan = [](const ArrayT& a, int64_t i) { return std::isnan(a.Value(i)); };
    return Wrap<ArrayT>(std::move(l), std::move(r), desc, values, is_nan);
  } else {
    return Wrap<ArrayT>(std::move(l), std::move(r), desc, values, kNoNan);
  }
}

template <typename ArrayT>
ColumnCompare Binary(std::shared_ptr<arrow::Array> l, std::shared_ptr<arrow::Array> r,
                     bool desc) {
  auto values = [](const ArrayT& a, int64_t i, const ArrayT& b, int64_t j) {
    std::string_view x = a.GetView(i), y = b.GetView(j);
    int c = x.compare(y);
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  };
  return Wrap<ArrayT>(std::move(l), std::move(r), desc, values, kNoNan);
}

template <typename ArrayT, typename Decimal>
ColumnCompare DecimalColumn(std::shared_ptr<arrow::Array> l, std::shared_ptr<arrow::Array> r,
                            bool desc) {
  auto values = [](const ArrayT& a, int64_t i, const ArrayT& b, int64_t j) {
    return Three(Decimal(a.GetValue(i)), Decimal(b.GetValue(j)));
  };
  return Wrap<ArrayT>(std::move(l), std::move(r), desc, values, kNoNan);
}

arrow::Result<ColumnCompare> MakeColumnCompare(std::shared_ptr<arrow::Array> l,
                                               std::shared_ptr<arrow::Array> r,
                                               const SortKey& key) {
  if (!l->type()->Equals(*r->type())) {
    return arrow::Status::Invalid("sort key column '", key.column, "' compared as ",
                                  l->type()->ToString(), " and ", r->type()->ToString());
  }
  bool d = key.descending;
  switch (l->type_id()) {
    case arrow::Type::NA:  // every value null: all alike
      return ColumnCompare([](int64_t, int64_t) { return 0; });
#define MILLSTREAM_PRIMITIVE(ID, TYPE) \
  case arrow::Type::ID:                \
    return Primitive<arrow::TYPE>(std::move(l), std::move(r), d);
    MILLSTREAM_PRIMITIVE(BOOL, BooleanType)
    MILLSTREAM_PRIMITIVE(INT8, Int8Type)
    MILLSTREAM_PRIMITIVE(INT16, Int16Type)
    MILLSTREAM_PRIMITIVE(INT32, Int32Type)
    MILLSTREAM_PRIMITIVE(INT64, Int64Type)
    MILLSTREAM_PRIMITIVE(UINT8, UInt8Type)
    MILLSTREAM_PRIMITIVE(UINT16, UInt16Type)
    MILLSTREAM_PRIMITIVE(UINT32, UInt32Type)
    MILLSTREAM_PRIMITIVE(UINT64, UInt64Type)
    MILLSTREAM_PRIMITIVE(FLOAT, FloatType)
    MILLSTREAM_PRIMITIVE(DOUBLE, DoubleType)
    MILLSTREAM_PRIMITIVE(DATE32, Date32Type)
    MILLSTREAM_PRIMITIVE(DATE64, Date64Type)
    MILLSTREAM_PRIMITIVE(TIME32, Time32Type)
    MILLSTREAM_PRIMITIVE(TIME64, Time64Type)
    MILLSTREAM_PRIMITIVE(TIMESTAMP, TimestampType)
    MILLSTREAM_PRIMITIVE(DURATION, DurationType)
#undef MILLSTREAM_PRIMITIVE
    case arrow::Type::STRING:
    case arrow::Type::BINARY:
      return Binary<arrow::BinaryArray>(std::move(l), std::move(r), d);
    case arrow::Type::LARGE_STRING:
    case arrow::Type::LARGE_BINARY:
      return Binary<arrow::LargeBinaryArray>(std::move(l), std::move(r), d);
    case arrow::Type::STRING_VIEW:
    case arrow::Type::BINARY_VIEW:
      return Binary<arrow::BinaryViewArray>(std::move(l), std::move(r), d);
    case arrow::Type::FIXED_SIZE_BINARY:
      return Binary<arrow::FixedSizeBinaryArray>(std::move(l), std::move(r), d);
    case arrow::Type::DECIMAL128:
      return DecimalColumn<arrow::Decimal128Array, arrow::Decimal128>(std::move(l), std::move(r), d);
    case arrow::Type::DECIMAL256:
      return DecimalColumn<arrow::Decimal256Array, arrow::Decimal256>(std::move(l), std::move(r), d);
    default:
      return arrow::Status::NotImplemented("sort key column '", key.column, "' has type ",
                                           l->type()->ToString(), ", which cannot be sorted");
  }
}

// ---- Radix sort for one fixed-width key ----

/// Maps a value to a uint64 whose unsigned order is the value's order.
template <typename C>
uint64_t OrderedBits(C v) {
  if constexpr (std::is_floating_point_v<C>) {
    double d = v == 0 ? 0.0 : static_cast<double>(v);  // -0.0 ties with 0.0, as in Arrow
    uint64_t bits;
    std::memcpy(&bits, &d, sizeof(bits));
    return (bits >> 63) ? ~bits : (bits | (1ULL << 63));
  } else if constexpr (std::is_signed_v<C>) {
    using U = std::make_unsigned_t<C>;
    return static_cast<uint64_t>(static_cast<U>(v) ^ (U{1} << (sizeof(C) * 8 - 1)));
  } else {
    return static_cast<uint64_t>(v);
  }
}

/// LSD radix sort of `n` keys (with their row numbers), 11 bits a pass (6 passes cover
/// 64 bits), skipping passes where every key has the same digit. Stable. `keys2`/`rows2`
/// are scratch of the same sizes; the result ends up in `*keys`/`*rows` (pointers swapped).
void RadixSort(size_t n, uint64_t** keys, uint32_t** rows, uint64_t* keys2, uint32_t* rows2) {
  constexpr int kBits = 11, kPasses = 6;
  constexpr uint64_t kMask = (1u << kBits) - 1;
  if (n < 2) return;
  std::vector<uint32_t> hist(kPasses << kBits, 0);
  const uint64_t* k0 = *keys;
  for (size_t i = 0; i < n; ++i) {
    uint64_t k = k0[i];
    for (int b = 0; b < kPasses; ++b) ++hist[(b << kBits) + ((k >> (kBits * b)) & kMask)];
  }
  uint64_t* in_keys = *keys;
  uint32_t* in_rows = *rows;
  for (int b = 0; b < kPasses; ++b) {
    uint32_t* h = hist.data() + (b << kBits);
    int shift = kBits * b;
    if (h[(in_keys[0] >> shift) & kMask] == n) continue;
    uint32_t sum = 0;
    for (uint64_t d = 0; d <= kMask; ++d) {
      uint32_t count = h[d];
      h[d] = sum;
      sum += count;
    }
    for (size_t i = 0; i < n; ++i) {
      uint32_t pos = h[(in_keys[i] >> shift) & kMask]++;
      keys2[pos] = in_keys[i];
      rows2[pos] = in_rows[i];
    }
    std::swap(in_keys, keys2);
    std::swap(in_rows, rows2);
  }
  *keys = in_keys;
  *rows = in_rows;
}

template <typename ArrowType>
arrow::Result<std::shared_ptr<arrow::Array>> RadixOrder(const arrow::Array& array, bool desc,
                                                        arrow::MemoryPool* pool) {
  using C = typename ArrowType::c_type;
  const C* values = array.data()->GetValues<C>(1);
  int64_t n = array.length();
  // Scratch from the pool (which keeps freed pages), not fresh zeroed vectors: page faults
  // on new memory cost more than the sort.
  ARROW_ASSIGN_OR_RAISE(auto key_buffer, arrow::AllocateBuffer(2 * n * sizeof(uint64_t), pool));
  ARROW_ASSIGN_OR_RAISE(auto row_buffer, arrow::AllocateBuffer(2 * n * sizeof(uint32_t), pool));
  uint64_t* keys = reinterpret_cast<uint64_t*>(key_buffer->mutable_data());
  uint32_t* rows = reinterpret_cast<uint32_t*>(row_buffer->mutable_data());
  std::vector<uint32_t> nans, nulls;
  size_t valid = 0;
  bool has_nulls = array.null_count() != 0;
  for (int64_t i = 0; i < n; ++i) {
    if (has_nulls && array.IsNull(i)) {
      nulls.push_back(static_cast<uint32_t>(i));
      continue;
    }
    C v = values[i];
    if constexpr (std::is_floating_point_v<C>) {
      if (std::isnan(v)) {
        nans.push_back(static_cast<uint32_t>(i));
        continue;
      }
    }
    uint64_t k = OrderedBits(v);
    keys[valid] = desc ? ~k : k;
    rows[valid] = static_cast<uint32_t>(i);
    ++valid;
  }
  uint64_t* sorted_keys = keys;
  uint32_t* sorted_rows = rows;
  RadixSort(valid, &sorted_keys, &sorted_rows, keys + n, rows + n);
  ARROW_ASSIGN_OR_RAISE(auto buffer, arrow::AllocateBuffer(n * sizeof(uint64_t), pool));
  auto* out = reinterpret_cast<uint64_t*>(buffer->mutable_data());
  for (size_t i = 0; i < valid; ++i) *out++ = sorted_rows[i];
  for (uint32_t r : nans) *out++ = r;
  for (uint32_t r : nulls) *out++ = r;
  return std::make_shared<arrow::UInt64Array>(n, std::shared_ptr<arrow::Buffer>(std::move(buffer)));
}

/// The stable merged order of sorted runs of one fixed-width key (each as SortOrder leaves
/// it: values, then NaN, then nulls), as indices into their concatenation: a heap merge of
/// the values (ties to the earlier run), then every run's NaN, then every run's nulls.
template <typename ArrowType>
arrow::Result<std::shared_ptr<arrow::Array>> MergeOrderImpl(const ArrayVector& runs, bool desc,
                                                            arrow::MemoryPool* pool) {
  using C = typename ArrowType::c_type;
  struct Cursor {
    const C* values;
    int64_t pos, value_end, nan_end, end, base;
  };
  std::vector<Cursor> cursors;
  int64_t total = 0;
  for (const auto& run : runs) {
    Cursor c{run->data()->GetValues<C>(1), 0, 0, 0, run->length(), total};
    c.nan_end = run->length() - run->null_count();  // nulls are last
    c.value_end = c.nan_end;
    if constexpr (std::is_floating_point_v<C>) {
      while (c.value_end > 0 && std::isnan(c.values[c.value_end - 1])) --c.value_end;
    }
    total += run->length();
    cursors.push_back(c);
  }
  ARROW_ASSIGN_OR_RAISE(auto buffer, arrow::AllocateBuffer(total * sizeof(uint64_t), pool));
  auto* out = reinterpret_cast<uint64_t*>(buffer->mutable_data());
  auto key = [&](const Cursor& c) {
    uint64_t k = OrderedBits(c.values[c.pos]);
    return desc ? ~k : k;
  };
  // A binary min-heap of (key, run): the run breaks ties, so equal keys keep run order.
  std::vector<std::pair<uint64_t, uint32_t>> heap;
  for (uint32_t r = 0; r < cursors.size(); ++r) {
    if (cursors[r].pos < cursors[r].value_end) heap.emplace_back(key(cursors[r]), r);
  }
  auto sift_down = [&](size_t i) {
    size_t n = heap.size();
    while (true) {
      size_t l = 2 * i + 1, smallest = i;
      if (l < n && heap[l] < heap[smallest]) smallest = l;
      if (l + 1 < n && heap[l + 1] < heap[smallest]) smallest = l + 1;
      if (smallest == i) return;
      std::swap(heap[i], heap[smallest]);
      i = smallest;
    }
  };
  for (size_t i = heap.size(); i-- > 0;) sift_down(i);
  while (!heap.empty()) {
    Cursor& c = cursors[heap[0].second];
    *out++ = static_cast<uint64_t>(c.base + c.pos);
    if (++c.pos < c.value_end) {
      heap[0].first = key(c);
    } else {
      heap[0] = heap.back();
      heap.pop_back();
    }
    if (!heap.empty()) sift_down(0);
  }
  for (const auto& c : cursors) {
    for (int64_t i = c.value_end; i < c.nan_end; ++i) *out++ = static_cast<uint64_t>(c.base + i);
  }
  for (const auto& c : cursors) {
    for (int64_t i = c.nan_end; i < c.end; ++i) *out++ = static_cast<uint64_t>(c.base + i);
  }
  return std::make_shared<arrow::UInt64Array>(total, std::shared_ptr<arrow::Buffer>(std::move(buffer)));
}

arrow::Result<std::shared_ptr<arrow::Array>> TryRadixOrder(const arrow::Array& array, bool desc,
                                                           arrow::MemoryPool* pool) {
  if (array.length() >= (int64_t{1} << 32)) return nullptr;
  switch (array.type_id()) {
#define MILLSTREAM_RADIX(ID, TYPE) \
  case arrow::Type::ID:            \
    return RadixOrder<arrow::TYPE>(array, desc, pool);
    MILLSTREAM_RADIX(INT8, Int8Type)
    MILLSTREAM_RADIX(INT16, Int16Type)
    MILLSTREAM_RADIX(INT32, Int32Type)
    MILLSTREAM_RADIX(INT64, Int64Type)
    MILLSTREAM_RADIX(UINT8, UInt8Type)
    MILLSTREAM_RADIX(UINT16, UInt16Type)
    MILLSTREAM_RADIX(UINT32, UInt32Type)
    MILLSTREAM_RADIX(UINT64, UInt64Type)
    MILLSTREAM_RADIX(FLOAT, FloatType)
    MILLSTREAM_RADIX(DOUBLE, DoubleType)
    MILLSTREAM_RADIX(DATE32, Date32Type)
    MILLSTREAM_RADIX(DATE64, Date64Type)
    MILLSTREAM_RADIX(TIME32, Time32Type)
    MILLSTREAM_RADIX(TIME64, Time64Type)
    MILLSTREAM_RADIX(TIMESTAMP, TimestampType)
    MILLSTREAM_RADIX(DURATION, DurationType)
#undef MILLSTREAM_RADIX
    default:
      return nullptr;
  }
}

std::string ColumnNames(const arrow::Schema& schema) {
  std::string names;
  for (const auto& f : schema.fields()) {
    if (!names.empty()) names += ", ";
    names += f->name();
  }
  return names;
}

}  // namespace

std::string KeyName(size_t i) {
  std::string name(1, 'k');
  name += std::to_string(i);
  return name;
}

arrow::Result<std::vector<std::shared_ptr<arrow::Array>>> SortKeyArrays(
    const arrow::RecordBatch& batch, const std::vector<SortKey>& keys, arrow::MemoryPool* pool) {
  std::vector<std::shared_ptr<arrow::Array>> out;
  out.reserve(keys.size());
  cp::ExecContext exec(pool);
  for (const auto& key : keys) {
    auto column = batch.GetColumnByName(key.column);
    if (column == nullptr) {
      return arrow::Status::KeyError("sort key column '", key.column,
                                     "' is not in the dataset; its columns are [",
                                     ColumnNames(*batch.schema()), "]");
    }
    if (column->type_id() == arrow::Type::DICTIONARY) {
      const auto& dict_type = static_cast<const arrow::DictionaryType&>(*column->type());
      ARROW_ASSIGN_OR_RAISE(auto decoded,
                            cp::Cast(*column, dict_type.value_type(), cp::CastOptions::Safe(), &exec));
      column = std::move(decoded);
    }
    out.push_back(std::move(column));
  }
  return out;
}

arrow::Result<std::shared_ptr<arrow::Schema>> SortKeySchema(const arrow::Schema& schema,
                                                           const std::vector<SortKey>& keys) {
  arrow::FieldVector fields;
  for (const auto& key : keys) {
    auto field = schema.GetFieldByName(key.column);
    if (field == nullptr) {
      return arrow::Status::KeyError("sort key column '", key.column,
                                     "' is not in the dataset; its columns are [",
                                     ColumnNames(schema), "]");
    }
    auto type = field->type();
    if (type->id() == arrow::Type::DICTIONARY) {
      type = static_cast<const arrow::DictionaryType&>(*type).value_type();
    }
    fields.push_back(arrow::field(KeyName(fields.size()), type));
  }
  return arrow::schema(std::move(fields));
}

arrow::Result<std::shared_ptr<arrow::Array>> SortOrder(
    const std::vector<std::shared_ptr<arrow::Array>>& key_arrays,
    const std::vector<SortKey>& keys, arrow::MemoryPool* pool) {
  cp::ExecContext exec(pool);
  if (key_arrays.size() == 1) {
    ARROW_ASSIGN_OR_RAISE(auto radix, TryRadixOrder(*key_arrays[0], keys[0].descending, pool));
    if (radix != nullptr) return radix;
  }
  std::vector<cp::SortKey> sort_keys;
  arrow::FieldVector fields;
  for (size_t i = 0; i < keys.size(); ++i) {
    std::string name = KeyName(i);
    fields.push_back(arrow::field(name, key_arrays[i]->type()));
    sort_keys.emplace_back(name, keys[i].descending ? cp::SortOrder::Descending
                                                    : cp::SortOrder::Ascending,
                           cp::NullPlacement::AtEnd);
  }
  int64_t rows = key_arrays.empty() ? 0 : key_arrays[0]->length();
  auto batch = arrow::RecordBatch::Make(arrow::schema(fields), rows, key_arrays);
  ARROW_ASSIGN_OR_RAISE(auto indices, cp::SortIndices(arrow::Datum(batch),
                                                      cp::SortOptions(sort_keys), &exec));
  return indices;
}

arrow::Result<std::shared_ptr<arrow::Array>> MergeSortedRuns(const ArrayVector& runs,
                                                             const SortKey& key,
                                                             arrow::MemoryPool* pool) {
  if (runs.empty()) return nullptr;
  int64_t total = 0;
  for (const auto& run : runs) total += run->length();
  if (total >= (int64_t{1} << 32) || runs.size() >= (size_t{1} << 32)) return nullptr;
  bool d = key.descending;
  switch (runs[0]->type_id()) {
#define MILLSTREAM_MERGE(ID, TYPE) \
  case arrow::Type::ID:            \
    return MergeOrderImpl<arrow::TYPE>(runs, d, pool);
    MILLSTREAM_MERGE(INT8, Int8Type)
    MILLSTREAM_MERGE(INT16, Int16Type)
    MILLSTREAM_MERGE(INT32, Int32Type)
    MILLSTREAM_MERGE(INT64, Int64Type)
    MILLSTREAM_MERGE(UINT8, UInt8Type)
    MILLSTREAM_MERGE(UINT16, UInt16Type)
    MILLSTREAM_MERGE(UINT32, UInt32Type)
    MILLSTREAM_MERGE(UINT64, UInt64Type)
    MILLSTREAM_MERGE(FLOAT, FloatType)
    MILLSTREAM_MERGE(DOUBLE, DoubleType)
    MILLSTREAM_MERGE(DATE32, Date32Type)
    MILLSTREAM_MERGE(DATE64, Date64Type)
    MILLSTREAM_MERGE(TIME32, Time32Type)
    MILLSTREAM_MERGE(TIME64, Time64Type)
    MILLSTREAM_MERGE(TIMESTAMP, TimestampType)
    MILLSTREAM_MERGE(DURATION, DurationType)
#undef MILLSTREAM_MERGE
    default:
      return nullptr;
  }
}

arrow::Result<RowComparator> RowComparator::Make(
    const std::vector<std::shared_ptr<arrow::Array>>& left,
    const std::vector<std::shared_ptr<arrow::Array>>& right, const std::vector<SortKey>& keys) {
  RowComparator comparator;
  for (size_t i = 0; i < keys.size(); ++i) {
    ARROW_ASSIGN_OR_RAISE(auto column, MakeColumnCompare(left[i], right[i], keys[i]));
    comparator.columns_.push_back(std::move(column));
  }
  return comparator;
}

}  // namespace millstream
