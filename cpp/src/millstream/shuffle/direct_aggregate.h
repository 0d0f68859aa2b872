#pragma once

#include <optional>
#include <string>
#include <vector>

#include <arrow/compute/api_aggregate.h>
#include <arrow/memory_pool.h>
#include <arrow/result.h>

#include "millstream/block.h"

namespace millstream {

/// The most groups (products of the keys' value ranges) DirectAggregate indexes.
constexpr int64_t kMaxDirectGroups = 1 << 16;

/// \brief Arrow's hash aggregation of `batch` by `keys` for few distinct keys, without
/// hashing: when every key is an integer column (dictionary indices among them) and their
/// value ranges (plus one for null) multiply to at most kMaxDirectGroups, a row's group is
/// computed from its keys, and counts, sums, mins and maxes of numbers accumulate into
/// arrays indexed by it. The output is what the Acero path gives: the key columns, then
/// one column per aggregate named by its `name`, one row per group present, typed as
/// Arrow's kernels type them (sums of signed integers int64, of unsigned uint64, of
/// floats double; mins and maxes as the input; counts int64), nulls where Arrow's
/// skip_nulls / min_count = 1 options put them. nullopt when the keys range too widely or
/// an aggregate is not `hash_count_all`, `hash_count`, `hash_sum`, `hash_min`, `hash_max`
/// over an integer or floating-point column (mins and maxes: integers only).
///
/// `selection` (a boolean array of the batch's length, or null for every row): only the
/// rows where it is true are aggregated (false and null drop a row, as a filter does),
/// and groups none of them fall in are not output.
arrow::Result<std::optional<Block>> DirectAggregate(const arrow::RecordBatch& batch,
                                                    const std::vector<std::string>& keys,
                                                    const std::vector<arrow::compute::Aggregate>& aggregates,
                                                    arrow::MemoryPool* pool,
                                                    const arrow::Array* selection = nullptr);

}  // namespace millstream
