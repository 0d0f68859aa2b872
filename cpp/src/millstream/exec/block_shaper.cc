#include "exec/block_shaper.h"

#include <arrow/api.h>

namespace millstream {

arrow::Status BlockShaper::Push(Block block, const Emit& emit) {
  if (block->num_rows() == 0) {
    empty_ = std::move(block);
    return arrow::Status::OK();
  }
  int64_t bytes = BlockBytes(*block);
  if (!pending_.empty() && !pending_.front()->schema()->Equals(*block->schema())) {
    ARROW_RETURN_NOT_OK(Flush(emit));
  }
  if (bytes > max_bytes_ && block->num_rows() > 1) {
    ARROW_RETURN_NOT_OK(Flush(emit));
    int64_t pieces = std::min<int64_t>((bytes + max_bytes_ - 1) / max_bytes_, block->num_rows());
    int64_t rows = block->num_rows();
    for (int64_t i = 0; i < pieces; ++i) {
      int64_t begin = rows * i / pieces, end = rows * (i + 1) / pieces;
      emitted_ = true;
      ARROW_RETURN_NOT_OK(emit(block->Slice(begin, end - begin)));
    }
    return arrow::Status::OK();
  }
  if (bytes >= min_bytes_) {
    ARROW_RETURN_NOT_OK(Flush(emit));
    emitted_ = true;
    return emit(std::move(block));
  }
  pending_.push_back(std::move(block));
  pending_bytes_ += bytes;
  if (pending_bytes_ >= min_bytes_) return Flush(emit);
  return arrow::Status::OK();
}

arrow::Status BlockShaper::Flush(const Emit& emit) {
  if (pending_.empty()) return arrow::Status::OK();
  Block out;
  if (pending_.size() == 1) {
    out = std::move(pending_[0]);
  } else {
    ARROW_ASSIGN_OR_RAISE(out, arrow::ConcatenateRecordBatches(pending_));
  }
  pending_.clear();
  pending_bytes_ = 0;
  emitted_ = true;
  return emit(std::move(out));
}

arrow::Status BlockShaper::Finish(const Emit& emit) {
  ARROW_RETURN_NOT_OK(Flush(emit));
  if (!emitted_ && empty_) return emit(std::move(empty_));
  return arrow::Status::OK();
}

}  // namespace millstream
