#include "shuffle/repartition.h"

#include <algorithm>
#include <mutex>

#include <arrow/api.h>
#include <arrow/compute/api.h>

#include "exec/schema_unify.h"
#include "shuffle/bucket_exchange.h"
#include "shuffle/key_hash.h"
#include "shuffle/random.h"
#include "shuffle/sort_keys.h"
#include "shuffle/stored_block.h"

namespace millstream {

namespace {

/// Hash or random partitioning into `n` blocks (n = 0, with keys: as many as the data
/// size asks for, see ChoosePartitions).
class HashRepartitionExchange : public BucketExchange {
 public:
  HashRepartitionExchange(int64_t n, std::vector<std::string> keys, bool sort, uint64_t seed,
                          ExchangeOptions options)
      : BucketExchange(options, n > 0 ? n : kAutoBuckets), n_(n), buckets_(n > 0 ? n : kAutoBuckets),
        keys_(std::move(keys)), sort_(sort), seed_(seed) {}

  std::string name() const override { return "Repartition"; }

 protected:
  arrow::Result<std::vector<uint32_t>> Buckets(int64_t index, const Block& block,
                                               ExchangeContext&) override {
    std::vector<uint32_t> out(block->num_rows());
    uint64_t n = static_cast<uint64_t>(buckets_);
    if (keys_.empty()) {
      Rng rng(StreamSeed(seed_, static_cast<uint64_t>(index), 3));
      for (auto& b : out) b = static_cast<uint32_t>(rng.Below(n));
    } else {
      ARROW_ASSIGN_OR_RAISE(auto hashes, HashKeyColumns(*block, keys_));
      for (size_t i = 0; i < out.size(); ++i) {
        out[i] = static_cast<uint32_t>((static_cast<unsigned __int128>(hashes[i]) * n) >> 64);
      }
    }
    return out;
  }

  int64_t Partitions(int64_t total_bytes, int64_t total_rows) const override {
    return n_ > 0 ? n_ : ChoosePartitions(total_bytes, total_rows, options());
  }

  arrow::Status Output(int64_t, Block rows, const Emit& emit, ExchangeContext& ctx) override {
    if (!sort_ || rows->num_rows() < 2) return emit(std::move(rows));
    // sort=True: the block's rows by the keys, ascending, nulls last, stable.
    std::vector<SortKey> order;
    for (const auto& key : keys_) order.push_back({key, false});
    ARROW_ASSIGN_OR_RAISE(auto key_arrays, SortKeyArrays(*rows, order, ctx.pool));
    ARROW_ASSIGN_OR_RAISE(auto indices, SortOrder(key_arrays, order, ctx.pool));
    key_arrays.clear();
    arrow::compute::ExecContext exec(ctx.pool);
    ARROW_ASSIGN_OR_RAISE(auto sorted, arrow::compute::Take(arrow::Datum(rows), arrow::Datum(indices),
                                                            arrow::compute::TakeOptions::NoBoundsCheck(), &exec));
    rows.reset();
    return emit(sorted.record_batch());
  }

 private:
  static constexpr int64_t kAutoBuckets = 256;
  int64_t n_;
  int64_t buckets_;
  std::vector<std::string> keys_;
  bool sort_;
  uint64_t seed_;
};

/// Split/combine in input order into `n` blocks of equal row counts.
class SplitRepartitionExchange : public Exchange {
 public:
  SplitRepartitionExchange(int64_t n, ExchangeOptions options) : n_(n), options_(options) {}

  std::string name() const override { return "Repartition"; }

  arrow::Status Map(int64_t index, Block block, ExchangeContext& ctx) override {
    ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
    int64_t rows = block->num_rows();
    ARROW_ASSIGN_OR_RAISE(auto stored, StoredBlock::Make(std::move(block), {0, rows}, &ledger_, ctx));
    std::lock_guard<std::mutex> lock(mutex_);
    blocks_.push_back({index, 0, std::move(stored)});
    return arrow::Status::OK();
  }

  arrow::Result<int64_t> FinishMap(ExchangeContext& ctx) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (blocks_.empty()) return 0;
    mapped_ = true;
    std::sort(blocks_.begin(), blocks_.end(),
              [](const Stored& a, const Stored& b) { return a.index < b.index; });
    std::vector<std::shared_ptr<arrow::Schema>> schemas;
    for (auto& stored : blocks_) {
      stored.first_row = total_rows_;
      total_rows_ += stored.block->num_rows();
      schemas.push_back(stored.block->schema());
    }
    ARROW_ASSIGN_OR_RAISE(schema_, UnifyBlockSchemas(schemas));
    for (auto& stored : blocks_) {
      int64_t readers = 0;
      for (int64_t p = 0; p < n_; ++p) readers += !Overlap(stored, p).empty();
      stored.block->SetReaders(readers, ctx);
    }
    return n_;
  }

  arrow::Status Reduce(int64_t p, const Emit& emit, ExchangeContext& ctx) override {
    if (!mapped_ || p < 0 || p >= n_) {
      return arrow::Status::IndexError("no Repartition partition ", p, " of ", mapped_ ? n_ : 0);
    }
    std::vector<Block> slices;
    std::vector<StoredBlock*> read;
    ReduceHold hold(ledger_, ctx, [this, &ctx](int64_t bytes) { return ReclaimUnread(bytes, ctx); });
    // Given back before the output is handed on (the operator counts it from then on).
    auto release = [&]() {
      hold.ReleaseAll();
      for (auto* block : read) block->Done(ctx);
      read.clear();
    };
    auto status = [&]() -> arrow::Status {
      // Room for the blocks it reads (whole, when read back) and the output, reserved
      // before it holds any (while it holds none, blocks it will slice can still be
      // spilled to make room).
      int64_t estimate = 0, output = 0;
      for (auto& stored : blocks_) {
        Range range = Overlap(stored, p);
        if (range.empty()) continue;
        estimate += stored.block->bytes();
        output += stored.block->bytes() * (range.end - range.begin) /
                  std::max<int64_t>(1, stored.block->num_rows());
      }
      ARROW_RETURN_NOT_OK(hold.Reserve(estimate + output));
      for (auto& stored : blocks_) {
        Range range = Overlap(stored, p);
        if (range.empty()) continue;
        ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
        read.push_back(stored.block.get());
        bool from_disk = false;
        ARROW_ASSIGN_OR_RAISE(auto pieces, stored.block->Pieces(0, 1, ctx, &from_disk));
        if (from_disk) ARROW_RETURN_NOT_OK(hold.Hold(BlockBytes(*pieces[0])));
        ARROW_ASSIGN_OR_RAISE(auto cast, CastBlockToSchema(pieces[0], schema_));
        slices.push_back(cast->Slice(range.begin, range.end - range.begin));
      }
      Block out;
      if (slices.empty()) {
        ARROW_ASSIGN_OR_RAISE(out, arrow::RecordBatch::MakeEmpty(schema_, ctx.pool));
      } else if (slices.size() == 1) {
        out = std::move(slices[0]);
      } else {
        ARROW_ASSIGN_OR_RAISE(out, arrow::ConcatenateRecordBatches(slices, ctx.pool));
        ARROW_RETURN_NOT_OK(hold.Hold(BlockBytes(*out)));
      }
      slices.clear();
      release();
      return emit(std::move(out));
    }();
    release();
    return status;
  }

  /// Reclaim for a reduce task short of room: spills only blocks no reduce task has read.
  arrow::Result<int64_t> ReclaimUnread(int64_t bytes, ExchangeContext& ctx) {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<StoredBlock*> blocks;
    for (auto& stored : blocks_) blocks.push_back(stored.block.get());
    return millstream::ReclaimUnread(blocks, bytes, ctx);
  }

  arrow::Result<int64_t> Reclaim(int64_t bytes, ExchangeContext& ctx) override {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<StoredBlock*> blocks;
    for (auto& stored : blocks_) blocks.push_back(stored.block.get());
    return ReclaimFrom(blocks, bytes, ctx);
  }

  int64_t held_bytes() const override { return ledger_.held.load(std::memory_order_relaxed); }
  int64_t spilled_bytes() const override {
    return ledger_.spilled.load(std::memory_order_relaxed);
  }

 private:
  struct Stored {
    int64_t index;
    int64_t first_row;  // in the whole input
    std::unique_ptr<StoredBlock> block;
  };
  struct Range {
    int64_t begin, end;  // rows of one block
    bool empty() const { return end <= begin; }
  };

  /// The first row of output block `p` in the whole input: total*p/n, so that row
  /// counts differ by at most one; with fewer rows than blocks, one row in each of the
  /// first blocks and the empty ones last (Ray Data's order).
  int64_t Start(int64_t p) const {
    return total_rows_ < n_ ? std::min(p, total_rows_) : total_rows_ * p / n_;
  }

  /// The rows of `stored` that output block `p` takes: rows [Start(p), Start(p+1)).
  Range Overlap(const Stored& stored, int64_t p) const {
    int64_t lo = Start(p), hi = Start(p + 1);
    int64_t begin = std::max(lo, stored.first_row) - stored.first_row;
    int64_t end = std::min(hi, stored.first_row + stored.block->num_rows()) - stored.first_row;
    return {begin, end};
  }

  int64_t n_;
  ExchangeOptions options_;
  ExchangeLedger ledger_;  // before blocks_: outlives the blocks it counts
  std::mutex mutex_;
  std::vector<Stored> blocks_;
  // Set by FinishMap.
  bool mapped_ = false;
  int64_t total_rows_ = 0;
  std::shared_ptr<arrow::Schema> schema_;
};

}  // namespace

arrow::Result<std::unique_ptr<Exchange>> MakeRepartitionExchange(int64_t num_blocks, bool shuffle,
                                                                 std::vector<std::string> keys,
                                                                 ExchangeOptions options, bool sort) {
  if ((num_blocks < 1 && !(num_blocks == 0 && !keys.empty())) || num_blocks > (int64_t{1} << 31)) {
    return arrow::Status::Invalid("repartition: num_blocks must be a positive integer (at most 2^31), got ",
                                  num_blocks);
  }
  for (const auto& key : keys) {
    if (key.empty()) return arrow::Status::Invalid("repartition: a key column name is empty");
  }
  if (sort && keys.empty()) {
    return arrow::Status::Invalid("repartition: sort=True sorts each output block by the keys; pass keys");
  }
  if (!shuffle && keys.empty()) {
    return std::make_unique<SplitRepartitionExchange>(num_blocks, options);
  }
  uint64_t seed = options.seed ? *options.seed : FreshSeed();
  return std::make_unique<HashRepartitionExchange>(num_blocks, std::move(keys), sort, seed, options);
}

}  // namespace millstream
