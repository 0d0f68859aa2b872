#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "shuffle/exchange.h"

namespace millstream {

/// \brief The exchange of `random_shuffle(seed)`: a uniformly random permutation of all
/// rows (any row can land anywhere). The same seed and the same input blocks give the same
/// order; no seed gives a different order every run.
///
/// Map sends each row of block i to one of B buckets (B = `num_partitions`, else 128),
/// drawn from a stream seeded by (seed, i); FinishMap splits the buckets evenly among
/// the partitions; Reduce p concatenates its buckets' rows and permutes them (Fisher-Yates,
/// a stream seeded by (seed, p)). Uniform bucket choice and a uniform permutation within
/// each bucket make the whole order a uniform permutation.
arrow::Result<std::unique_ptr<Exchange>> MakeRandomShuffleExchange(std::optional<uint64_t> seed,
                                                                   ExchangeOptions options);

}  // namespace millstream
