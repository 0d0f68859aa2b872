#include "shuffle/sort_boundaries.h"

#include <algorithm>
#include <cmath>
#include <limits>


namespace millstream {

namespace {

// long double holds every int64, uint64 and double exactly on the platforms built for
// (x86-64's 64-bit mantissa), so comparisons through it are exact.
static_assert(std::numeric_limits<long double>::digits >= 64,
              "sort boundaries compare through long double: needs a 64-bit mantissa");

long double AsLongDouble(const SortBoundary& b) {
  return b.is_integer ? static_cast<long double>(b.integer) : static_cast<long double>(b.real);
}

template <typename ArrayType>
long double Get(const arrow::Array& values, int64_t i) {
  return static_cast<long double>(static_cast<const ArrayType&>(values).Value(i));
}

/// The value at row `i` of a numeric array; false for null or NaN.
bool ValueAt(const arrow::Array& values, int64_t i, long double* out) {
  if (values.IsNull(i)) return false;
  switch (values.type_id()) {
    case arrow::Type::INT8: *out = Get<arrow::Int8Array>(values, i); return true;
    case arrow::Type::INT16: *out = Get<arrow::Int16Array>(values, i); return true;
    case arrow::Type::INT32: *out = Get<arrow::Int32Array>(values, i); return true;
    case arrow::Type::INT64: *out = Get<arrow::Int64Array>(values, i); return true;
    case arrow::Type::UINT8: *out = Get<arrow::UInt8Array>(values, i); return true;
    case arrow::Type::UINT16: *out = Get<arrow::UInt16Array>(values, i); return true;
    case arrow::Type::UINT32: *out = Get<arrow::UInt32Array>(values, i); return true;
    case arrow::Type::UINT64: *out = Get<arrow::UInt64Array>(values, i); return true;
    case arrow::Type::FLOAT: *out = Get<arrow::FloatArray>(values, i); return !std::isnan(*out);
    case arrow::Type::DOUBLE: *out = Get<arrow::DoubleArray>(values, i); return !std::isnan(*out);
    default: return false;  // refused by CheckType
  }
}

}  // namespace

arrow::Result<std::vector<SortBoundary>> NormalizeSortBoundaries(std::vector<SortBoundary> boundaries) {
  for (const auto& b : boundaries) {
    if (!b.is_integer && std::isnan(b.real)) {
      return arrow::Status::Invalid("sort: a boundary is NaN; boundaries must be numbers to split the first key at");
    }
  }
  auto less = [](const SortBoundary& a, const SortBoundary& b) { return AsLongDouble(a) < AsLongDouble(b); };
  std::stable_sort(boundaries.begin(), boundaries.end(), less);
  boundaries.erase(std::unique(boundaries.begin(), boundaries.end(),
                               [](const SortBoundary& a, const SortBoundary& b) {
                                 return AsLongDouble(a) == AsLongDouble(b);
                               }),
                   boundaries.end());
  return boundaries;
}

arrow::Status GivenBoundaries::CheckType(const arrow::DataType& type, const SortKey& key) {
  if (arrow::is_integer(type.id()) || type.id() == arrow::Type::FLOAT || type.id() == arrow::Type::DOUBLE) {
    return arrow::Status::OK();
  }
  return arrow::Status::TypeError("sort: boundaries split the first key column '", key.column,
                                  "', which is ", type.ToString(),
                                  "; boundaries need an integer or floating-point column");
}

arrow::Result<GivenBoundaries> GivenBoundaries::Make(std::shared_ptr<arrow::Array> values,
                                                     const std::vector<SortBoundary>& ascending,
                                                     const SortKey& key) {
  ARROW_RETURN_NOT_OK(CheckType(*values->type(), key));
  GivenBoundaries out;
  out.values_ = std::move(values);
  out.descending_ = key.descending;
  for (const auto& b : ascending) out.bounds_.push_back(AsLongDouble(b));
  if (key.descending) std::reverse(out.bounds_.begin(), out.bounds_.end());
  return out;
}

bool GivenBoundaries::Before(int64_t i, int64_t j) const {
  long double v = 0;
  if (!ValueAt(*values_, i, &v)) return false;
  return descending_ ? v >= bounds_[j] : v < bounds_[j];
}

}  // namespace millstream
