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
arrow::Result<std::unique_ptr<Exchange>> MakeAggregateExchange(
    std::vector<std::string> keys, std::vector<AggregateSpec> aggregates, ExchangeOptions options,
    std::optional<arrow::compute::Expression> filter = std::nullopt);

}  // namespace millstream
