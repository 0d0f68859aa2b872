#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "shuffle/exchange.h"

namespace millstream {

/// \brief The exchange of `repartition(num_blocks, shuffle, keys)`: exactly `num_blocks`
/// output blocks, one per reduce task (an empty block where a partition gets no rows).
///
/// - `shuffle=false`, no keys: the rows in input order, split into `num_blocks` blocks of
///   row counts as equal as possible (they differ by at most one), by slicing and
///   combining the input blocks.
/// - `keys`: hash partitioning: every row whose key columns are equal lands in the same
///   block (rows of one block in input order). A key column not in the data is an error
///   naming it.
/// - `shuffle=true`, no keys: each row goes to a random block (seeded by
///   `ExchangeOptions::seed`; unset, different every run).
///
/// `num_blocks = 0` with keys: as many blocks as the data size asks for
/// (`ChoosePartitions`; map_groups uses it). `options.num_partitions` is ignored.
///
/// With keys and `sort` (Ray Data's `sort=True`), each output block's rows are sorted by
/// the keys (ascending, nulls last, stable); `sort` without keys is an error.
arrow::Result<std::unique_ptr<Exchange>> MakeRepartitionExchange(int64_t num_blocks, bool shuffle,
                                                                 std::vector<std::string> keys,
                                                                 ExchangeOptions options,
                                                                 bool sort = false);

}  // namespace millstream
