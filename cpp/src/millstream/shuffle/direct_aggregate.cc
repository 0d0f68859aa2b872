#include "shuffle/direct_aggregate.h"

#include <algorithm>
#include <limits>
#include <type_traits>

#include <arrow/api.h>
#include <arrow/util/bit_util.h>

namespace millstream {

namespace {

namespace cp = arrow::compute;

/// Calls `fn(T{})` with the C type of an integer (`floats`: or floating-point) type;
/// false for any other type.
template <typename Fn>
bool WithNumberType(const arrow::DataType& type, bool floats, Fn&& fn) {
  switch (type.id()) {
    case arrow::Type::INT8: fn(int8_t{}); return true;
    case arrow::Type::INT16: fn(int16_t{}); return true;
    case arrow::Type::INT32: fn(int32_t{}); return true;
    case arrow::Type::INT64: fn(int64_t{}); return true;
    case arrow::Type::UINT8: fn(uint8_t{}); return true;
    case arrow::Type::UINT16: fn(uint16_t{}); return true;
    case arrow::Type::UINT32: fn(uint32_t{}); return true;
    case arrow::Type::UINT64: fn(uint64_t{}); return true;
    case arrow::Type::FLOAT: if (!floats) return false; fn(float{}); return true;
    case arrow::Type::DOUBLE: if (!floats) return false; fn(double{}); return true;
    default: return false;
  }
}

/// A column's values and validity, row i at values[i].
template <typename T>
struct View {
  explicit View(const arrow::Array& array)
      : values(array.data()->GetValues<T>(1)), bits(array.null_count() > 0 ? array.null_bitmap_data() : nullptr),
        offset(array.offset()) {}
  bool valid(int64_t i) const { return !bits || arrow::bit_util::GetBit(bits, offset + i); }
  const T* values;
  const uint8_t* bits;
  int64_t offset;
};

template <typename T>
arrow::Result<std::shared_ptr<arrow::Array>> Build(const std::vector<T>& values, const std::vector<bool>& valid,
                                                   const std::shared_ptr<arrow::DataType>& type,
                                                   arrow::MemoryPool* pool) {
  using ArrowType = typename arrow::CTypeTraits<T>::ArrowType;
  arrow::NumericBuilder<ArrowType> builder(type, pool);
  ARROW_RETURN_NOT_OK(builder.Reserve(static_cast<int64_t>(values.size())));
  for (size_t g = 0; g < values.size(); ++g) {
    if (valid[g]) {
      builder.UnsafeAppend(values[g]);
    } else {
      builder.UnsafeAppendNull();
    }
  }
  return builder.Finish();
}

/// One integer key's values in [min, min + range), null at digit `range - 1` when the
/// column has nulls.
struct KeyRange {
  int64_t min = 0;
  int64_t range = 1;
  bool nulls = false;
};

/// The key's range, or nullopt when a value does not fit int64 or the range exceeds
/// kMaxDirectGroups.
std::optional<KeyRange> RangeOf(const arrow::Array& column) {
  std::optional<KeyRange> out;
  WithNumberType(*column.type(), /*floats=*/false, [&](auto tag) {
    using T = decltype(tag);
    View<T> view(column);
    const int64_t n = column.length();
    bool any = false;
    T lo = 0, hi = 0;
    if (!view.bits && n > 0) {
      lo = hi = view.values[0];
      for (int64_t i = 1; i < n; ++i) {
        lo = std::min(lo, view.values[i]);
        hi = std::max(hi, view.values[i]);
      }
      any = true;
    }
    for (int64_t i = 0; view.bits && i < n; ++i) {
      if (!view.valid(i)) continue;
      T v = view.values[i];
      if (!any || v < lo) lo = v;
      if (!any || v > hi) hi = v;
      any = true;
    }
    if constexpr (std::is_same_v<T, uint64_t>) {
      if (hi > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return;
    }
    KeyRange range;
    range.nulls = column.null_count() > 0;
    range.min = any ? static_cast<int64_t>(lo) : 0;
    const double width = any ? static_cast<double>(hi) - static_cast<double>(lo) + 1 : 0;
    if (width + (range.nulls ? 1 : 0) > static_cast<double>(kMaxDirectGroups)) return;
    range.range = static_cast<int64_t>(width) + (range.nulls ? 1 : 0);
    if (range.range == 0) range.range = 1;
    out = range;
  });
  return out;
}

// Up to this many groups, sums accumulate into kLanes interleaved copies (row i into copy
// i % kLanes), so that consecutive rows of one group do not wait on each other's add.
constexpr int64_t kLaneGroups = 1024;
constexpr int64_t kLanes = 4;

/// Per slot g of `slots`: the sum of `value(i)` over the rows i with gid[i] == g.
template <typename Acc, typename Value>
std::vector<Acc> SumBySlot(const std::vector<uint32_t>& gid, int64_t slots, Value&& value) {
  const int64_t n = static_cast<int64_t>(gid.size());
  const uint32_t* g = gid.data();
  if (slots > kLaneGroups) {
    std::vector<Acc> out(slots, Acc{});
    for (int64_t i = 0; i < n; ++i) out[g[i]] += value(i);
    return out;
  }
  std::vector<Acc> lanes(kLanes * slots, Acc{});
  Acc* l0 = lanes.data();
  Acc* l1 = l0 + slots;
  Acc* l2 = l1 + slots;
  Acc* l3 = l2 + slots;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    l0[g[i]] += value(i);
    l1[g[i + 1]] += value(i + 1);
    l2[g[i + 2]] += value(i + 2);
    l3[g[i + 3]] += value(i + 3);
  }
  for (; i < n; ++i) l0[g[i]] += value(i);
  std::vector<Acc> out(slots);
  for (int64_t s = 0; s < slots; ++s) out[s] = l0[s] + l1[s] + l2[s] + l3[s];
  return out;
}

/// `bits` (a validity or boolean bitmap at `offset`, null: all set) as one byte per row.
std::vector<uint8_t> Bytes(const uint8_t* bits, int64_t offset, int64_t n) {
  std::vector<uint8_t> out(n, 1);
  if (bits != nullptr) {
    for (int64_t i = 0; i < n; ++i) out[i] = arrow::bit_util::GetBit(bits, offset + i);
  }
  return out;
}

}  // namespace

arrow::Result<std::optional<Block>> DirectAggregate(const arrow::RecordBatch& batch,
                                                    const std::vector<std::string>& keys,
                                                    const std::vector<cp::Aggregate>& aggregates,
                                                    arrow::MemoryPool* pool, const arrow::Array* selection) {
  const int64_t n = batch.num_rows();
  if (selection != nullptr && (selection->type_id() != arrow::Type::BOOL || selection->length() != n)) {
    return arrow::Status::Invalid("DirectAggregate: the selection is ", selection->type()->ToString(), " of ",
                                  selection->length(), " rows; expected bool of ", n);
  }
  // What each aggregate reads, checked before any work.
  std::vector<std::shared_ptr<arrow::Array>> targets;
  for (const auto& agg : aggregates) {
    const std::string& f = agg.function;
    if (f == "hash_count_all") {
      targets.push_back(nullptr);
      continue;
    }
    if (agg.target.size() != 1 || !agg.target[0].name()) return std::nullopt;
    auto column = batch.GetColumnByName(*agg.target[0].name());
    if (!column) return std::nullopt;
    const bool floats = f == "hash_sum";
    if (f != "hash_count" && f != "hash_sum" && f != "hash_min" && f != "hash_max") return std::nullopt;
    if (f == "hash_count") {
      // A count reads the validity bitmap, which these types do not have.
      switch (column->type_id()) {
        case arrow::Type::NA: case arrow::Type::SPARSE_UNION: case arrow::Type::DENSE_UNION:
        case arrow::Type::RUN_END_ENCODED:
          return std::nullopt;
        default:
          break;
      }
    } else if (!WithNumberType(*column->type(), floats, [](auto) {})) {
      return std::nullopt;
    }
    targets.push_back(std::move(column));
  }
  // Group ids from the keys: digit k of row i is its value's offset in key k's range.
  std::vector<std::shared_ptr<arrow::Array>> key_columns;
  std::vector<KeyRange> ranges;
  int64_t groups = 1;
  for (const auto& key : keys) {
    auto column = batch.GetColumnByName(key);
    if (!column) return std::nullopt;
    auto range = RangeOf(*column);
    if (!range || groups * range->range > kMaxDirectGroups) return std::nullopt;
    groups *= range->range;
    key_columns.push_back(std::move(column));
    ranges.push_back(*range);
  }
  // Group ids: digit k of row i is its value's offset in key k's range. A row the
  // selection drops goes to slot `groups`, past every group, and is never output.
  std::vector<uint32_t> gid(n, 0);
  int64_t stride = 1;
  for (size_t k = 0; k < keys.size(); ++k) {
    const KeyRange& range = ranges[k];
    WithNumberType(*key_columns[k]->type(), false, [&](auto tag) {
      using T = decltype(tag);
      View<T> view(*key_columns[k]);
      const uint32_t scale = static_cast<uint32_t>(stride);
      const int64_t min = range.min;
      uint32_t* g = gid.data();
      if (!view.bits) {
        for (int64_t i = 0; i < n; ++i) {
          g[i] += scale * static_cast<uint32_t>(static_cast<int64_t>(view.values[i]) - min);
        }
        return;
      }
      const uint32_t null_digit = static_cast<uint32_t>(range.range - 1);
      for (int64_t i = 0; i < n; ++i) {
        const uint32_t digit = view.valid(i)
                                   ? static_cast<uint32_t>(static_cast<int64_t>(view.values[i]) - min)
                                   : null_digit;
        g[i] += scale * digit;
      }
    });
    stride *= range.range;
  }
  if (selection != nullptr) {
    const auto& keep = static_cast<const arrow::BooleanArray&>(*selection);
    const uint8_t* values = keep.values()->data();
    const uint8_t* valid = keep.null_count() > 0 ? keep.null_bitmap_data() : nullptr;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t at = keep.offset() + i;
      const bool kept = arrow::bit_util::GetBit(values, at) && (!valid || arrow::bit_util::GetBit(valid, at));
      if (!kept) gid[i] = static_cast<uint32_t>(groups);
    }
  }
  const int64_t slots = groups + 1;
  const std::vector<int64_t> rows = SumBySlot<int64_t>(gid, slots, [](int64_t) { return int64_t{1}; });
  std::vector<uint32_t> present;
  for (int64_t g = 0; g < groups; ++g) {
    if (rows[g] > 0) present.push_back(static_cast<uint32_t>(g));
  }
  const size_t out_groups = present.size();

  arrow::FieldVector fields;
  arrow::ArrayVector columns;
  stride = 1;
  for (size_t k = 0; k < keys.size(); ++k) {
    const KeyRange& range = ranges[k];
    const auto& type = key_columns[k]->type();
    arrow::Status status;
    WithNumberType(*type, false, [&](auto tag) {
      using T = decltype(tag);
      std::vector<T> values(out_groups);
      std::vector<bool> valid(out_groups);
      for (size_t r = 0; r < out_groups; ++r) {
        const int64_t digit = (present[r] / stride) % range.range;
        valid[r] = !(range.nulls && digit == range.range - 1);
        values[r] = valid[r] ? static_cast<T>(range.min + digit) : T{};
      }
      auto built = Build(values, valid, type, pool);
      if (!built.ok()) {
        status = built.status();
        return;
      }
      columns.push_back(*std::move(built));
    });
    ARROW_RETURN_NOT_OK(status);
    fields.push_back(arrow::field(keys[k], type));
    stride *= range.range;
  }

  for (size_t a = 0; a < aggregates.size(); ++a) {
    const cp::Aggregate& agg = aggregates[a];
    const auto& column = targets[a];
    std::shared_ptr<arrow::Array> out;
    if (!column) {  // hash_count_all
      std::vector<int64_t> counts(out_groups);
      for (size_t r = 0; r < out_groups; ++r) counts[r] = rows[present[r]];
      ARROW_ASSIGN_OR_RAISE(out, Build(counts, std::vector<bool>(out_groups, true), arrow::int64(), pool));
      fields.push_back(arrow::field(agg.name, arrow::int64()));
      columns.push_back(std::move(out));
      continue;
    }
    // Valid values per group.
    std::vector<int64_t> valid;
    std::vector<uint8_t> valid_bytes;  // with nulls: 1 per valid row, 0 per null
    if (column->null_count() == 0) {
      valid = rows;
    } else {
      valid_bytes = Bytes(column->null_bitmap_data(), column->offset(), n);
      const uint8_t* v = valid_bytes.data();
      valid = SumBySlot<int64_t>(gid, slots, [v](int64_t i) { return static_cast<int64_t>(v[i]); });
    }
    if (agg.function == "hash_count") {
      auto mode = agg.options ? static_cast<const cp::CountOptions&>(*agg.options).mode
                              : cp::CountOptions::ONLY_VALID;
      std::vector<int64_t> counts(out_groups);
      for (size_t r = 0; r < out_groups; ++r) {
        const uint32_t g = present[r];
        counts[r] = mode == cp::CountOptions::ONLY_VALID ? valid[g]
                    : mode == cp::CountOptions::ONLY_NULL ? rows[g] - valid[g]
                                                          : rows[g];
      }
      ARROW_ASSIGN_OR_RAISE(out, Build(counts, std::vector<bool>(out_groups, true), arrow::int64(), pool));
      fields.push_back(arrow::field(agg.name, arrow::int64()));
      columns.push_back(std::move(out));
      continue;
    }
    const auto defaults = cp::ScalarAggregateOptions::Defaults();
    const auto& options = agg.options ? static_cast<const cp::ScalarAggregateOptions&>(*agg.options) : defaults;
    std::vector<bool> result_valid(out_groups);
    for (size_t r = 0; r < out_groups; ++r) {
      const uint32_t g = present[r];
      result_valid[r] = (options.skip_nulls || valid[g] == rows[g]) &&
                        valid[g] >= static_cast<int64_t>(options.min_count);
    }
    arrow::Status status;
    WithNumberType(*column->type(), /*floats=*/true, [&](auto tag) {
      using T = decltype(tag);
      View<T> view(*column);
      auto finish = [&](auto&& values, const std::shared_ptr<arrow::DataType>& type) {
        auto built = Build(values, result_valid, type, pool);
        if (!built.ok()) {
          status = built.status();
          return;
        }
        fields.push_back(arrow::field(agg.name, type));
        columns.push_back(*std::move(built));
      };
      if (agg.function == "hash_sum") {
        // Arrow's sums: signed integers into int64 (wrapping), unsigned into uint64,
        // floating point into double.
        using Sum = std::conditional_t<std::is_floating_point_v<T>, double,
                                       std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>>;
        using Acc = std::conditional_t<std::is_floating_point_v<T>, double, uint64_t>;
        const T* column_values = view.values;
        std::vector<Acc> sums;
        if (valid_bytes.empty()) {
          sums = SumBySlot<Acc>(gid, slots, [column_values](int64_t i) { return static_cast<Acc>(static_cast<Sum>(column_values[i])); });
        } else {
          // A null's slot may hold any bits: multiplied by its 0, or masked out.
          const uint8_t* v = valid_bytes.data();
          sums = SumBySlot<Acc>(gid, slots, [column_values, v](int64_t i) {
            return v[i] ? static_cast<Acc>(static_cast<Sum>(column_values[i])) : Acc{};
          });
        }
        std::vector<Sum> values(out_groups);
        for (size_t r = 0; r < out_groups; ++r) values[r] = static_cast<Sum>(sums[present[r]]);
        finish(values, arrow::CTypeTraits<Sum>::type_singleton());
        return;
      }
      if constexpr (!std::is_floating_point_v<T>) {
        const bool min = agg.function == "hash_min";
        std::vector<T> best(slots, min ? std::numeric_limits<T>::max() : std::numeric_limits<T>::lowest());
        for (int64_t i = 0; i < n; ++i) {
          if (!view.valid(i)) continue;
          T& b = best[gid[i]];
          const T v = view.values[i];
          if (min ? v < b : v > b) b = v;
        }
        std::vector<T> values(out_groups);
        for (size_t r = 0; r < out_groups; ++r) values[r] = best[present[r]];
        finish(values, column->type());
      }
    });
    ARROW_RETURN_NOT_OK(status);
  }
  return arrow::RecordBatch::Make(arrow::schema(fields), static_cast<int64_t>(out_groups), std::move(columns));
}

}  // namespace millstream
