#include <arrow/api.h>

#include <vector>

#include "exec/transforms.h"

namespace millstream {
namespace {

/// Cuts the task's rows into blocks of exactly `rows` rows (zero-copy slices where one
/// input block covers a block; pieces of several concatenated otherwise), the rest in one
/// smaller block at the end of the task.
class RebatchState : public TransformState {
 public:
  explicit RebatchState(int64_t rows) : rows_(rows) {}

  arrow::Status Push(Block block, const Emit& emit) override {
    if (!schema_) schema_ = block->schema();
    if (block->num_rows() == 0) return arrow::Status::OK();
    pending_rows_ += block->num_rows();
    pending_.push_back(std::move(block));
    while (pending_rows_ >= rows_) ARROW_RETURN_NOT_OK(EmitRows(rows_, emit));
    return arrow::Status::OK();
  }

  arrow::Status Finish(const Emit& emit) override {
    if (pending_rows_ > 0) return EmitRows(pending_rows_, emit);
    if (!emitted_ && schema_) {
      // Nothing to hand on: one empty block keeps the schema.
      ARROW_ASSIGN_OR_RAISE(auto empty, arrow::RecordBatch::MakeEmpty(schema_));
      emitted_ = true;
      return emit(std::move(empty));
    }
    return arrow::Status::OK();
  }

 private:
  /// Emits the next `n` pending rows as one block.
  arrow::Status EmitRows(int64_t n, const Emit& emit) {
    std::vector<Block> pieces;
    int64_t need = n;
    while (need > 0) {
      auto& front = pending_.front();
      const int64_t available = front->num_rows() - offset_;
      const int64_t take = std::min(available, need);
      pieces.push_back(take == front->num_rows() ? front : front->Slice(offset_, take));
      need -= take;
      offset_ += take;
      if (offset_ == front->num_rows()) {
        pending_.erase(pending_.begin());
        offset_ = 0;
      }
    }
    pending_rows_ -= n;
    emitted_ = true;
    if (pieces.size() == 1) return emit(std::move(pieces.front()));
    for (const auto& piece : pieces) {
      if (!piece->schema()->Equals(*pieces.front()->schema())) {
        return arrow::Status::TypeError(
            "repartition(target_num_rows_per_block=...): blocks with different schemas meet "
            "in one block: ", pieces.front()->schema()->ToString(), " and ",
            piece->schema()->ToString());
      }
    }
    ARROW_ASSIGN_OR_RAISE(auto combined, arrow::ConcatenateRecordBatches(pieces));
    return emit(std::move(combined));
  }

  int64_t rows_;
  std::vector<Block> pending_;
  int64_t offset_ = 0;  // rows of pending_.front() already emitted
  int64_t pending_rows_ = 0;
  std::shared_ptr<arrow::Schema> schema_;
  bool emitted_ = false;
};

class RebatchTransform : public Transform {
 public:
  explicit RebatchTransform(int64_t rows) : rows_(rows) {}
  std::string name() const override {
    return "StreamingRepartition[" + std::to_string(rows_) + " rows]";
  }
  bool row_preserving() const override { return true; }
  bool output_sized_by_input() const override { return true; }
  bool shapes_own_output() const override { return true; }
  arrow::Result<std::unique_ptr<TransformState>> MakeState(const TaskContext&) const override {
    return std::make_unique<RebatchState>(rows_);
  }
  arrow::Result<std::shared_ptr<arrow::Schema>> SchemaOut(
      const std::shared_ptr<arrow::Schema>& input) const override {
    return input;
  }

 private:
  int64_t rows_;
};

}  // namespace

std::shared_ptr<const Transform> MakeRebatchTransform(int64_t rows) {
  return std::make_shared<RebatchTransform>(rows);
}

}  // namespace millstream
