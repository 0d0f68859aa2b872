#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <arrow/api.h>

namespace millstream {

/// \brief A 64-bit hash of each row's values in the columns `keys` of `batch`, such that
/// rows whose keys are equal after blocks meet in one schema hash alike: an int32 5, an
/// int64 5 and a double 5.0 hash the same, as do a string and a large_string, a dictionary
/// and its values, timestamps of different units. Nulls hash alike. Deterministic (no
/// seed). A missing column is an error naming it and the columns there are.
arrow::Result<std::vector<uint64_t>> HashKeyColumns(const arrow::RecordBatch& batch,
                                                    const std::vector<std::string>& keys);

/// \brief HashKeyColumns under a seed: `seed` 0 is the unseeded hash; another seed gives
/// a hash independent of it (rows that share the unseeded hash's top bits spread over
/// the seeded one's), for re-partitioning a partition (grace hash join).
arrow::Result<std::vector<uint64_t>> HashKeyColumns(const arrow::RecordBatch& batch,
                                                    const std::vector<std::string>& keys,
                                                    uint64_t seed);

}  // namespace millstream
