#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <arrow/api.h>

#include "millstream/dataset.h"

namespace millstream {

/// \brief `boundaries` as a sort splits at them: NaN refused, duplicates dropped, in
/// ascending order (Ray Data sorts and deduplicates its `boundaries`).
arrow::Result<std::vector<SortBoundary>> NormalizeSortBoundaries(std::vector<SortBoundary> boundaries);

/// \brief Where the rows of one array of first-key values fall among a sort's given
/// boundaries. Values and boundaries are compared exactly (an int64 column against a
/// float boundary, a float column against an int64 boundary).
class GivenBoundaries {
 public:
  /// For `values` (the first key, of an integer or floating-point type: an error naming
  /// `key.column` otherwise) and `ascending` boundaries (normalized). Boundaries count
  /// in output order: reversed when `key.descending`.
  static arrow::Result<GivenBoundaries> Make(std::shared_ptr<arrow::Array> values,
                                             const std::vector<SortBoundary>& ascending,
                                             const SortKey& key);
  /// An error naming the column unless `type` is an integer or floating-point type.
  static arrow::Status CheckType(const arrow::DataType& type, const SortKey& key);
  /// Whether row `i` belongs to a partition before boundary `j` (in output order):
  /// ascending, its value is below it; descending, at or above it. Null and NaN never
  /// are (they go to the last partition).
  bool Before(int64_t i, int64_t j) const;

 private:
  std::shared_ptr<arrow::Array> values_;
  std::vector<long double> bounds_;  // in output order
  bool descending_ = false;
};

}  // namespace millstream
