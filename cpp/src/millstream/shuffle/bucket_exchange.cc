#include "shuffle/bucket_exchange.h"

#include <algorithm>

#include <arrow/api.h>

#include "exec/schema_unify.h"
#include "shuffle/stored_block.h"

namespace millstream {

arrow::Status BucketExchange::Map(int64_t index, Block block, ExchangeContext& ctx) {
  ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
  int64_t rows = block->num_rows();
  if (rows == 0) {
    std::lock_guard<std::mutex> lock(mutex_);
    empty_schemas_.emplace_back(index, block->schema());
    return arrow::Status::OK();
  }
  int64_t bytes = BlockBytes(*block);
  ARROW_ASSIGN_OR_RAISE(auto buckets, Buckets(index, block, ctx));
  ARROW_ASSIGN_OR_RAISE(auto grouped, GroupRowsByBucket(block, buckets, num_buckets_, ctx.pool));
  block.reset();
  buckets = {};
  ARROW_ASSIGN_OR_RAISE(auto stored, StoredBlock::Make(std::move(grouped.block),
                                                       std::move(grouped.offsets), &ledger_, ctx));
  std::lock_guard<std::mutex> lock(mutex_);
  total_rows_ += rows;
  total_bytes_ += bytes;
  blocks_.push_back({index, std::move(stored)});
  return arrow::Status::OK();
}

arrow::Result<int64_t> BucketExchange::FinishMap(ExchangeContext& ctx) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (blocks_.empty() && empty_schemas_.empty()) return n_ = 0;
  std::sort(blocks_.begin(), blocks_.end(),
            [](const Stored& a, const Stored& b) { return a.index < b.index; });
  auto indexed = empty_schemas_;
  for (const auto& stored : blocks_) indexed.emplace_back(stored.index, stored.block->schema());
  ARROW_ASSIGN_OR_RAISE(schema_, UnifyInOrder(std::move(indexed)));
  n_ = std::clamp<int64_t>(Partitions(total_bytes_, total_rows_), 1, num_buckets_);
  for (auto& stored : blocks_) {
    int64_t readers = 0;
    for (int64_t p = 0; p < n_; ++p) {
      int64_t b0 = p * num_buckets_ / n_, b1 = (p + 1) * num_buckets_ / n_;
      readers += stored.block->piece_offset(b1) > stored.block->piece_offset(b0);
    }
    stored.block->SetReaders(readers, ctx);
  }
  return n_;
}

arrow::Result<int64_t> BucketExchange::Reclaim(int64_t bytes, ExchangeContext& ctx) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<StoredBlock*> blocks;
  for (auto& stored : blocks_) blocks.push_back(stored.block.get());
  return ReclaimFrom(blocks, bytes, ctx);
}

arrow::Result<int64_t> BucketExchange::ReclaimUnread(int64_t bytes, ExchangeContext& ctx) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<StoredBlock*> blocks;
  for (auto& stored : blocks_) blocks.push_back(stored.block.get());
  return millstream::ReclaimUnread(blocks, bytes, ctx);
}

arrow::Status BucketExchange::Reduce(int64_t p, const Emit& emit, ExchangeContext& ctx) {
  if (p < 0 || p >= n_) {
    return arrow::Status::IndexError("no ", name(), " partition ", p, " of ", n_);
  }
  int64_t b0 = p * num_buckets_ / n_, b1 = (p + 1) * num_buckets_ / n_;
  std::vector<Block> pieces;
  std::vector<StoredBlock*> read;
  ReduceHold hold(ledger_, ctx, [this, &ctx](int64_t bytes) { return ReclaimUnread(bytes, ctx); });
  // Once the output is made, what the reduce read is the output's memory: given back
  // before it is handed on (where the operator counts it), not counted twice.
  auto release = [&]() {
    hold.ReleaseAll();
    for (auto* block : read) block->Done(ctx);
    read.clear();
  };
  auto status = [&]() -> arrow::Status {
    // Room for the pieces it reads and their concatenation, reserved before it holds any
    // (while it holds none, blocks it will slice can still be spilled to make room).
    ARROW_RETURN_NOT_OK(hold.Reserve(2 * PartitionBytes(p)));
    for (auto& stored : blocks_) {
      StoredBlock& block = *stored.block;
      if (block.piece_offset(b1) == block.piece_offset(b0)) continue;
      ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
      read.push_back(&block);
      // In memory, the partition's buckets are one range of the block: one slice, not
      // one per bucket (most of them empty when the block is a few partial rows).
      if (Block range = block.InMemoryRange(b0, b1)) {
        ARROW_ASSIGN_OR_RAISE(auto cast, CastBlockToSchema(range, schema_));
        pieces.push_back(std::move(cast));
        continue;
      }
      bool from_disk = false;
      ARROW_ASSIGN_OR_RAISE(auto got, block.Pieces(b0, b1, ctx, &from_disk, /*with_empty=*/false));
      for (auto& piece : got) {
        if (piece->num_rows() == 0) continue;
        if (from_disk) ARROW_RETURN_NOT_OK(hold.Hold(BlockBytes(*piece)));
        ARROW_ASSIGN_OR_RAISE(auto cast, CastBlockToSchema(piece, schema_));
        pieces.push_back(std::move(cast));
      }
    }
    Block rows;
    if (pieces.empty()) {
      ARROW_ASSIGN_OR_RAISE(rows, arrow::RecordBatch::MakeEmpty(schema_, ctx.pool));
    } else if (pieces.size() == 1) {
      rows = std::move(pieces[0]);
    } else {
      ARROW_ASSIGN_OR_RAISE(rows, arrow::ConcatenateRecordBatches(pieces, ctx.pool));
      ARROW_RETURN_NOT_OK(hold.Hold(BlockBytes(*rows)));
    }
    pieces.clear();
    release();
    return Output(p, std::move(rows), emit, ctx);
  }();
  release();
  return status;
}

int64_t BucketExchange::PartitionBytes(int64_t p) const {
  if (p < 0 || p >= n_) return 0;
  const int64_t b0 = p * num_buckets_ / n_, b1 = (p + 1) * num_buckets_ / n_;
  int64_t bytes = 0;
  for (const auto& stored : blocks_) {
    const StoredBlock& block = *stored.block;
    const int64_t rows = block.piece_offset(b1) - block.piece_offset(b0);
    if (rows > 0) bytes += static_cast<int64_t>(static_cast<double>(block.bytes()) * rows / block.num_rows());
  }
  return bytes;
}

arrow::Status BucketExchange::ReducePieces(int64_t p, const std::function<arrow::Status(Block)>& each,
                                           ExchangeContext& ctx) {
  if (p < 0 || p >= n_) {
    return arrow::Status::IndexError("no ", name(), " partition ", p, " of ", n_);
  }
  const int64_t b0 = p * num_buckets_ / n_, b1 = (p + 1) * num_buckets_ / n_;
  for (auto& stored : blocks_) {
    StoredBlock& block = *stored.block;
    if (block.piece_offset(b1) == block.piece_offset(b0)) continue;
    auto status = [&]() -> arrow::Status {
      ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
      // In memory, the partition's buckets are one range of the block: one slice.
      if (Block range = block.InMemoryRange(b0, b1)) {
        ARROW_ASSIGN_OR_RAISE(auto cast, CastBlockToSchema(range, schema_));
        return each(std::move(cast));
      }
      ARROW_ASSIGN_OR_RAISE(auto got, block.Pieces(b0, b1, ctx, nullptr, /*with_empty=*/false));
      for (auto& piece : got) {
        if (piece->num_rows() == 0) continue;
        ARROW_ASSIGN_OR_RAISE(auto cast, CastBlockToSchema(piece, schema_));
        piece.reset();
        ARROW_RETURN_NOT_OK(each(std::move(cast)));
      }
      return arrow::Status::OK();
    }();
    block.Done(ctx);
    ARROW_RETURN_NOT_OK(status);
  }
  return arrow::Status::OK();
}

arrow::Status BucketExchange::ReduceBucketGroups(int64_t p, int64_t max_bytes,
                                                 const std::function<arrow::Status(BucketGroup)>& each,
                                                 ExchangeContext& ctx) {
  if (p < 0 || p >= n_) {
    return arrow::Status::IndexError("no ", name(), " partition ", p, " of ", n_);
  }
  const int64_t b0 = p * num_buckets_ / n_, b1 = (p + 1) * num_buckets_ / n_;
  // Each bucket's bytes, prorated by rows from the stored blocks (nothing is read).
  std::vector<double> bucket_bytes(b1 - b0, 0.0);
  std::vector<StoredBlock*> read;
  for (auto& stored : blocks_) {
    const StoredBlock& block = *stored.block;
    if (block.piece_offset(b1) == block.piece_offset(b0)) continue;
    read.push_back(stored.block.get());
    const double per_row = static_cast<double>(block.bytes()) / block.num_rows();
    for (int64_t b = b0; b < b1; ++b) bucket_bytes[b - b0] += per_row * block.piece_rows(b);
  }
  ReduceHold hold(ledger_, ctx, [this, &ctx](int64_t bytes) { return ReclaimUnread(bytes, ctx); });
  auto status = [&]() -> arrow::Status {
    for (int64_t g0 = b0; g0 < b1;) {
      int64_t g1 = g0 + 1;
      double bytes = bucket_bytes[g0 - b0];
      while (g1 < b1 && bytes + bucket_bytes[g1 - b0] <= static_cast<double>(max_bytes)) {
        bytes += bucket_bytes[g1 - b0];
        ++g1;
      }
      ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
      // Room for the group's pieces and their concatenation, before it holds any.
      ARROW_RETURN_NOT_OK(hold.Reserve(2 * static_cast<int64_t>(bytes + 1)));
      int64_t loaded = 0;
      BucketGroup group;
      group.first_bucket = g0;
      group.segments.resize(g1 - g0);
      std::vector<Block> pieces;
      int64_t base = 0;
      for (auto* block : read) {
        if (block->piece_offset(g1) == block->piece_offset(g0)) continue;
        if (Block range = block->InMemoryRange(g0, g1)) {
          for (int64_t b = g0; b < g1; ++b) {
            if (block->piece_rows(b) == 0) continue;
            group.segments[b - g0].emplace_back(base + block->piece_offset(b) - block->piece_offset(g0),
                                                block->piece_rows(b));
          }
          base += range->num_rows();
          ARROW_ASSIGN_OR_RAISE(auto cast, CastBlockToSchema(range, schema_));
          pieces.push_back(std::move(cast));
          continue;
        }
        bool from_disk = false;
        ARROW_ASSIGN_OR_RAISE(auto got, block->Pieces(g0, g1, ctx, &from_disk));
        for (size_t k = 0; k < got.size(); ++k) {
          const int64_t rows = got[k]->num_rows();
          if (rows == 0) continue;
          if (from_disk) {
            const int64_t piece_bytes = BlockBytes(*got[k]);
            ARROW_RETURN_NOT_OK(hold.Hold(piece_bytes));
            loaded += piece_bytes;
          }
          group.segments[k].emplace_back(base, rows);
          base += rows;
          ARROW_ASSIGN_OR_RAISE(auto cast, CastBlockToSchema(got[k], schema_));
          got[k].reset();
          pieces.push_back(std::move(cast));
        }
      }
      if (pieces.empty()) {
        ARROW_ASSIGN_OR_RAISE(group.rows, arrow::RecordBatch::MakeEmpty(schema_, ctx.pool));
      } else if (pieces.size() == 1) {
        group.rows = std::move(pieces[0]);
      } else {
        ARROW_ASSIGN_OR_RAISE(group.rows, arrow::ConcatenateRecordBatches(pieces, ctx.pool));
        pieces.clear();
        // The pieces read back are gone; the concatenation is what the group holds now.
        hold.Release(loaded);
        ARROW_RETURN_NOT_OK(hold.Hold(BlockBytes(*group.rows)));
      }
      pieces.clear();
      ARROW_RETURN_NOT_OK(each(std::move(group)));
      hold.ReleaseAll();
      g0 = g1;
    }
    return arrow::Status::OK();
  }();
  hold.ReleaseAll();
  for (auto* block : read) block->Done(ctx);
  return status;
}

}  // namespace millstream
