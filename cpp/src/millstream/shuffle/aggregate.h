#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <arrow/compute/expression.h>

#include "shuffle/exchange.h"

namespace millstream {

/// \brief Checks a group-by before it runs: key names non-empty and distinct, at least
/// one aggregate, each naming a column (only Count may count rows), `ddof >= 0`, output
/// names distinct from each other and from the keys. Errors name the argument.
arrow::Status ValidateAggregates(const std::vector<std::string>& keys,
                                 const std::vector<AggregateSpec>& aggregates);

/// \brief The exchange of a hash aggregation (`groupby(keys).aggregate(...)`): Map
/// aggregates its block into one partial row per group (Arrow's hash kernels: counts,
/// sums, mins, maxes, and count/mean/M2 for Std), hash-partitions those rows by key and
/// stores them (spilling past the reservation); Reduce p merges its partition's partial
/// rows into one row per group (sums of counts and sums, mins of mins, Std by Chan's
/// parallel formula) and emits the keys then one column per aggregate, groups in no
/// particular order. No keys: the whole dataset is one group, one partition (no row when
/// the input has none). A key or aggregate column missing from a block is an error
/// naming it. With a `filter`, Map aggregates only the rows where it is true (a boolean
/// predicate over the block's columns): the direct aggregation skips the others without
/// copying the rows it keeps.
///
/// With `input_is_partial`, the input blocks are a PartialAggregation's output for the
/// same keys and aggregates (made upstream, in the tasks that made the rows) and Map only
/// partitions them; `filter` must then be unset (it is the partial aggregation's).
arrow::Result<std::unique_ptr<Exchange>> MakeAggregateExchange(
    std::vector<std::string> keys, std::vector<AggregateSpec> aggregates, ExchangeOptions options,
    std::optional<arrow::compute::Expression> filter = std::nullopt, bool input_is_partial = false);

/// \brief The map side of a hash aggregation as a step of its own: a block into one
/// partial row per group of its rows (of those `filter` keeps), the rows an aggregate
/// exchange made with `input_is_partial` merges. Run inside the tasks that make the rows
/// (a read's), it leaves only the partial rows to hand on. Thread-safe.
class PartialAggregation {
 public:
  virtual ~PartialAggregation() = default;
  /// The partial rows of `block`, allocated from `pool`. A key or aggregate column missing
  /// from it is an error naming it.
  virtual arrow::Result<Block> Apply(Block block, arrow::MemoryPool* pool) const = 0;
};

/// \brief The partial aggregation of `groupby(keys).aggregate(aggregates)` over the rows
/// `filter` keeps (all without one); the arguments are checked as for the exchange.
arrow::Result<std::shared_ptr<const PartialAggregation>> MakePartialAggregation(
    std::vector<std::string> keys, std::vector<AggregateSpec> aggregates,
    std::optional<arrow::compute::Expression> filter = std::nullopt);

}  // namespace millstream
