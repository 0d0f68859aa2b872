#pragma once

#include <functional>
#include <memory>
#include <vector>

#include <arrow/api.h>

#include "shuffle/exchange.h"

namespace millstream {

/// \brief The sort key columns of `batch`, in key order, dictionary columns decoded to
/// their values (what they sort by). A missing column is an error naming it and the
/// columns there are.
arrow::Result<std::vector<std::shared_ptr<arrow::Array>>> SortKeyArrays(
    const arrow::RecordBatch& batch, const std::vector<SortKey>& keys, arrow::MemoryPool* pool);

/// \brief The name of key column `i` in a batch of key columns: "k0", "k1"...
std::string KeyName(size_t i);

/// \brief The key columns' types as they sort (a dictionary's value type), for `schema`.
arrow::Result<std::shared_ptr<arrow::Schema>> SortKeySchema(const arrow::Schema& schema,
                                                           const std::vector<SortKey>& keys);

/// \brief The stable sort order of rows by `key_arrays` (one per key of `keys`): nulls
/// last, NaN just before them, in both directions, ties in row order. A radix sort for one
/// key of a fixed-width primitive type, Arrow's `sort_indices` otherwise. Returns uint64
/// indices.
arrow::Result<std::shared_ptr<arrow::Array>> SortOrder(
    const std::vector<std::shared_ptr<arrow::Array>>& key_arrays,
    const std::vector<SortKey>& keys, arrow::MemoryPool* pool);

/// \brief For runs each sorted by SortOrder on one fixed-width key: their stable merged
/// order (ties in run order) as uint64 indices into their concatenation, by a heap merge.
/// Null for a key type SortOrder does not radix-sort (the caller sorts instead).
arrow::Result<std::shared_ptr<arrow::Array>> MergeSortedRuns(
    const std::vector<std::shared_ptr<arrow::Array>>& runs, const SortKey& key,
    arrow::MemoryPool* pool);

/// \brief Compares row `i` of one set of key arrays with row `j` of another (of the same
/// types), in the sort's order: negative, zero or positive. Not thread-safe to build,
/// safe to call from one thread.
class RowComparator {
 public:
  /// A comparator of `left` rows with `right` rows (one array per key of `keys`, the
  /// same type on both sides: decoded, unified); it keeps the arrays alive. An
  /// unsortable type is an error naming the column.
  static arrow::Result<RowComparator> Make(const std::vector<std::shared_ptr<arrow::Array>>& left,
                                          const std::vector<std::shared_ptr<arrow::Array>>& right,
                                          const std::vector<SortKey>& keys);
  /// Row `i` of the left arrays against row `j` of the right ones.
  int Compare(int64_t i, int64_t j) const {
    for (const auto& column : columns_) {
      int c = column(i, j);
      if (c != 0) return c;
    }
    return 0;
  }

 private:
  std::vector<std::function<int(int64_t, int64_t)>> columns_;
};

}  // namespace millstream
