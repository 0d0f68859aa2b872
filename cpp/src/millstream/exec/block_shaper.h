#pragma once

#include <vector>

#include "io/datasource.h"

namespace millstream {

/// \brief Shapes a task's output stream: splits blocks over `max_bytes` into zero-copy
/// slices, combines runs of blocks under `min_bytes`, and drops empty blocks (keeping one
/// if the task produced nothing else, so the schema survives). One per task.
class BlockShaper {
 public:
  BlockShaper(int64_t min_bytes, int64_t max_bytes) : min_bytes_(min_bytes), max_bytes_(max_bytes) {}
  arrow::Status Push(Block block, const Emit& emit);
  arrow::Status Finish(const Emit& emit);

 private:
  arrow::Status Flush(const Emit& emit);

  int64_t min_bytes_, max_bytes_;
  std::vector<Block> pending_;
  int64_t pending_bytes_ = 0;
  Block empty_;
  bool emitted_ = false;
};

}  // namespace millstream
