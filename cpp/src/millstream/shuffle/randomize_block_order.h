#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "shuffle/exchange.h"

namespace millstream {

/// \brief The exchange of `randomize_block_order(seed)`: the input blocks, whole, in a
/// uniformly random order (rows inside a block keep theirs). The same seed and the same
/// number of blocks give the same order; no seed gives a different order every run.
/// One reduce task per input block (a block of no rows included); reduce p emits the
/// block the permutation puts at position p.
arrow::Result<std::unique_ptr<Exchange>> MakeRandomizeBlockOrderExchange(
    std::optional<uint64_t> seed, ExchangeOptions options);

}  // namespace millstream
