#include "shuffle/key_hash.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <string_view>

#include <arrow/util/decimal.h>

#include "shuffle/random.h"

namespace millstream {

namespace {

constexpr uint64_t kNullHash = 0x6a09e667f3bcc908ULL;
constexpr uint64_t kNanHash = 0xbb67ae8584caa73bULL;

uint64_t HashInt(int64_t v) { return Mix64(static_cast<uint64_t>(v)); }

/// Integral doubles hash as the integer they equal, so an integer column widened to
/// double keeps its rows' partitions.
uint64_t HashDouble(double v) {
  if (std::isnan(v)) return kNanHash;
  if (v == std::trunc(v) && v >= -9.2233720368547758e18 && v < 9.2233720368547758e18) {
    return HashInt(static_cast<int64_t>(v));
  }
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  return Mix64(bits ^ 0x3c6ef372fe94f82bULL);
}

uint64_t HashBytes(std::string_view bytes) {
  return Mix64(std::hash<std::string_view>{}(bytes));
}

int64_t UnitNanos(arrow::TimeUnit::type unit) {
  switch (unit) {
    case arrow::TimeUnit::SECOND: return 1000000000LL;
    case arrow::TimeUnit::MILLI: return 1000000LL;
    case arrow::TimeUnit::MICRO: return 1000LL;
    default: return 1;
  }
}

template <typename ArrayT, typename Fn>
void ForEach(const arrow::Array& array, std::vector<uint64_t>* out, Fn fn) {
  const auto& a = static_cast<const ArrayT&>(array);
  bool nulls = a.null_count() != 0;
  for (int64_t i = 0; i < a.length(); ++i) {
    (*out)[i] = nulls && a.IsNull(i) ? kNullHash : fn(a, i);
  }
}

/// Temporal values hash in nanoseconds, so units that widen to a finer one keep their
/// hash (wrapping on overflow only merges hashes).
template <typename C>
arrow::Status HashNanos(const arrow::Array& array, int64_t scale, std::vector<uint64_t>* out) {
  const C* values = array.data()->GetValues<C>(1);
  bool nulls = array.null_count() != 0;
  for (int64_t i = 0; i < array.length(); ++i) {
    if (nulls && array.IsNull(i)) continue;
    uint64_t nanos = static_cast<uint64_t>(static_cast<int64_t>(values[i])) * static_cast<uint64_t>(scale);
    (*out)[i] = HashInt(static_cast<int64_t>(nanos));
  }
  return arrow::Status::OK();
}

/// Hash of every value of `array` (same length as the array).
arrow::Status HashArray(const arrow::Array& array, const std::string& column,
                        std::vector<uint64_t>* out) {
  out->assign(array.length(), kNullHash);
  switch (array.type_id()) {
    case arrow::Type::NA:
      return arrow::Status::OK();
    case arrow::Type::BOOL:
      ForEach<arrow::BooleanArray>(array, out, [](const auto& a, int64_t i) { return HashInt(a.Value(i)); });
      return arrow::Status::OK();
#define MILLSTREAM_INT(ID, ARRAY)                                                          \
  case arrow::Type::ID:                                                                    \
    ForEach<arrow::ARRAY>(array, out, [](const auto& a, int64_t i) {                      \
      return HashInt(static_cast<int64_t>(a.Value(i)));                                    \
    });                                                                                    \
    return arrow::Status::OK();
    MILLSTREAM_INT(INT8, Int8Array)
    MILLSTREAM_INT(INT16, Int16Array)
    MILLSTREAM_INT(INT32, Int32Array)
    MILLSTREAM_INT(INT64, Int64Array)
    MILLSTREAM_INT(UINT8, UInt8Array)
    MILLSTREAM_INT(UINT16, UInt16Array)
    MILLSTREAM_INT(UINT32, UInt32Array)
    MILLSTREAM_INT(UINT64, UInt64Array)
    MILLSTREAM_INT(DATE32, Date32Array)
    MILLSTREAM_INT(DATE64, Date64Array)
#undef MILLSTREAM_INT
    case arrow::Type::FLOAT:
      ForEach<arrow::FloatArray>(array, out, [](const auto& a, int64_t i) { return HashDouble(a.Value(i)); });
      return arrow::Status::OK();
    case arrow::Type::DOUBLE:
      ForEach<arrow::DoubleArray>(array, out, [](const auto& a, int64_t i) { return HashDouble(a.Value(i)); });
      return arrow::Status::OK();
    case arrow::Type::TIMESTAMP:
      return HashNanos<int64_t>(
          array, UnitNanos(static_cast<const arrow::TimestampType&>(*array.type()).unit()), out);
    case arrow::Type::DURATION:
      return HashNanos<int64_t>(
          array, UnitNanos(static_cast<const arrow::DurationType&>(*array.type()).unit()), out);
    case arrow::Type::TIME64:
      return HashNanos<int64_t>(
          array, UnitNanos(static_cast<const arrow::Time64Type&>(*array.type()).unit()), out);
    case arrow::Type::TIME32:
      return HashNanos<int32_t>(
          array, UnitNanos(static_cast<const arrow::Time32Type&>(*array.type()).unit()), out);
    case arrow::Type::STRING:
    case arrow::Type::BINARY:
      ForEach<arrow::BinaryArray>(array, out, [](const auto& a, int64_t i) { return HashBytes(a.GetView(i)); });
      return arrow::Status::OK();
    case arrow::Type::LARGE_STRING:
    case arrow::Type::LARGE_BINARY:
      ForEach<arrow::LargeBinaryArray>(array, out, [](const auto& a, int64_t i) { return HashBytes(a.GetView(i)); });
      return arrow::Status::OK();
    case arrow::Type::STRING_VIEW:
    case arrow::Type::BINARY_VIEW:
      ForEach<arrow::BinaryViewArray>(array, out, [](const auto& a, int64_t i) { return HashBytes(a.GetView(i)); });
      return arrow::Status::OK();
    case arrow::Type::FIXED_SIZE_BINARY:
      ForEach<arrow::FixedSizeBinaryArray>(array, out, [](const auto& a, int64_t i) { return HashBytes(a.GetView(i)); });
      return arrow::Status::OK();
    case arrow::Type::DECIMAL128: {
      int32_t scale = static_cast<const arrow::Decimal128Type&>(*array.type()).scale();
      ForEach<arrow::Decimal128Array>(array, out, [scale](const auto& a, int64_t i) {
        return HashDouble(arrow::Decimal128(a.GetValue(i)).ToDouble(scale));
      });
      return arrow::Status::OK();
    }
    case arrow::Type::DECIMAL256: {
      int32_t scale = static_cast<const arrow::Decimal256Type&>(*array.type()).scale();
      ForEach<arrow::Decimal256Array>(array, out, [scale](const auto& a, int64_t i) {
        return HashDouble(arrow::Decimal256(a.GetValue(i)).ToDouble(scale));
      });
      return arrow::Status::OK();
    }
    case arrow::Type::DICTIONARY: {
      const auto& dict = static_cast<const arrow::DictionaryArray&>(array);
      std::vector<uint64_t> values;
      ARROW_RETURN_NOT_OK(HashArray(*dict.dictionary(), column, &values));
      for (int64_t i = 0; i < dict.length(); ++i) {
        (*out)[i] = dict.IsNull(i) ? kNullHash : values[dict.GetValueIndex(i)];
      }
      return arrow::Status::OK();
    }
    default:
      return arrow::Status::NotImplemented("repartition key column '", column, "' has type ",
                                           array.type()->ToString(), ", which cannot be hashed");
  }
}

}  // namespace

arrow::Result<std::vector<uint64_t>> HashKeyColumns(const arrow::RecordBatch& batch,
                                                    const std::vector<std::string>& keys) {
  std::vector<uint64_t> hashes(batch.num_rows(), 0x510e527fade682d1ULL), column_hashes;
  for (const auto& key : keys) {
    auto column = batch.GetColumnByName(key);
    if (column == nullptr) {
      std::string names;
      for (const auto& f : batch.schema()->fields()) {
        if (!names.empty()) names += ", ";
        names += f->name();
      }
      return arrow::Status::KeyError("repartition key column '", key,
                                     "' is not in the dataset; its columns are [", names, "]");
    }
    ARROW_RETURN_NOT_OK(HashArray(*column, key, &column_hashes));
    for (size_t i = 0; i < hashes.size(); ++i) hashes[i] = Mix64(hashes[i] * 31 + column_hashes[i]);
  }
  return hashes;
}

arrow::Result<std::vector<uint64_t>> HashKeyColumns(const arrow::RecordBatch& batch,
                                                    const std::vector<std::string>& keys,
                                                    uint64_t seed) {
  ARROW_ASSIGN_OR_RAISE(auto hashes, HashKeyColumns(batch, keys));
  if (seed == 0) return hashes;
  const uint64_t salt = Mix64(seed * 0xd6e8feb86659fd93ULL);
  for (auto& h : hashes) h = Mix64(h ^ salt);
  return hashes;
}

}  // namespace millstream
