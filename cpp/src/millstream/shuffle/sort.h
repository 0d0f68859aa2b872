#pragma once

#include <memory>
#include <vector>

#include "shuffle/exchange.h"

namespace millstream {

/// \brief The exchange of `sort(keys)`: rows of every input block in the order of `keys`
/// (per-key descending; nulls last in both directions, NaN just before them, as pyarrow's
/// `sort_indices` with `null_placement="at_end"`, which Ray Data uses). Stable: rows with
/// equal keys keep their input order.
///
/// Map sorts each block into a run (a radix sort for one fixed-width key, Arrow's
/// `sort_indices` otherwise), keeps a sample of its keys and stores it, in memory or
/// spilled in chunks. FinishMap picks range boundaries from the samples, ordered by key
/// then input position (so rows of one key spread over partitions when there are many);
/// Reduce p takes, from every run, the rows between boundaries p-1 and p (binary search;
/// only the chunks it needs are read back from spill files) and sorts them. A block without a key column
/// that other blocks have sorts as if its keys were null. An empty `keys` or a key column
/// in no block is an error (at FinishMap) naming the column and the columns there are.
///
/// With `boundaries` (values of the first key; see Dataset::Sort), they replace the
/// sampled ones: `boundaries.size() + 1` partitions (after deduplication), split by the
/// first key alone, each emitting at least one block (an empty one when no row falls
/// there); `options.num_partitions` is then ignored. A first key that is not of an
/// integer or floating-point type is an error at FinishMap naming it.
arrow::Result<std::unique_ptr<Exchange>> MakeSortExchange(std::vector<SortKey> keys,
                                                          ExchangeOptions options,
                                                          std::vector<SortBoundary> boundaries = {});

}  // namespace millstream
