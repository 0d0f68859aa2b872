#include "shuffle/exchange.h"

#include <algorithm>

#include <arrow/api.h>

namespace millstream {

arrow::Status ExchangeContext::CheckCancelled() const {
  if (cancelled != nullptr && cancelled->load(std::memory_order_relaxed)) {
    return arrow::Status::Cancelled("execution cancelled");
  }
  return arrow::Status::OK();
}

int64_t ReduceShare(const ExchangeOptions& options) {
  constexpr int64_t kMaxPartitionBytes = 64LL << 20;
  const int64_t parallelism = std::max<int64_t>(1, options.parallelism);
  return std::clamp<int64_t>(options.memory_limit / (8 * parallelism), 1, kMaxPartitionBytes);
}

int64_t ChoosePartitions(int64_t total_bytes, int64_t total_rows,
                         const ExchangeOptions& options) {
  if (options.num_partitions > 0) return options.num_partitions;
  if (total_rows <= 0) return 1;
  // A reduce task holds its partition's pieces read back, their concatenation and the
  // sorted copy it emits (three times the partition), and `parallelism` of them run at
  // once while the map side's runs are still held (up to half the limit, see
  // AllToAllOperator): an eighth of the limit per task keeps them all under it.
  constexpr int64_t kMinPartitionBytes = 1LL << 20;
  int64_t parallelism = std::max<int64_t>(1, options.parallelism);
  // At most 64 MiB (ReduceShare): a reduce over a partition that large is a cache-hostile
  // permutation or sort of hundreds of MB, and the first output waits for all of it.
  int64_t per_partition = std::max(ReduceShare(options), kMinPartitionBytes);
  int64_t n = (total_bytes + per_partition - 1) / per_partition;
  // Enough partitions to keep every reduce thread busy once there is data worth splitting.
  n = std::max(n, std::min(parallelism, (total_bytes + kMinPartitionBytes - 1) / kMinPartitionBytes));
  return std::clamp<int64_t>(n, 1, total_rows);
}

arrow::Status EmitSliced(const Block& block, int64_t max_bytes, const Emit& emit) {
  int64_t rows = block->num_rows();
  int64_t bytes = BlockBytes(*block);
  if (rows <= 1 || max_bytes <= 0 || bytes <= max_bytes) return emit(block);
  int64_t pieces = std::min<int64_t>((bytes + max_bytes - 1) / max_bytes, rows);
  for (int64_t i = 0; i < pieces; ++i) {
    int64_t begin = rows * i / pieces, end = rows * (i + 1) / pieces;
    ARROW_RETURN_NOT_OK(emit(block->Slice(begin, end - begin)));
  }
  return arrow::Status::OK();
}

}  // namespace millstream
