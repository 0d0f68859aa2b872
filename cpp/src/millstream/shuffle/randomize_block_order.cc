#include "shuffle/randomize_block_order.h"

#include <algorithm>
#include <mutex>

#include <arrow/api.h>

#include "exec/schema_unify.h"
#include "shuffle/random.h"
#include "shuffle/stored_block.h"

namespace millstream {

namespace {

class RandomizeBlockOrderExchange : public Exchange {
 public:
  RandomizeBlockOrderExchange(uint64_t seed, ExchangeOptions options)
      : seed_(seed), options_(options) {}

  std::string name() const override { return "RandomizeBlockOrder"; }

  arrow::Status Map(int64_t index, Block block, ExchangeContext& ctx) override {
    ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
    int64_t rows = block->num_rows();
    ARROW_ASSIGN_OR_RAISE(auto stored, StoredBlock::Make(std::move(block), {0, rows}, &ledger_, ctx));
    std::lock_guard<std::mutex> lock(mutex_);
    blocks_.push_back({index, std::move(stored)});
    return arrow::Status::OK();
  }

  arrow::Result<int64_t> FinishMap(ExchangeContext& ctx) override {
    std::lock_guard<std::mutex> lock(mutex_);
    std::sort(blocks_.begin(), blocks_.end(),
              [](const Stored& a, const Stored& b) { return a.index < b.index; });
    std::vector<std::shared_ptr<arrow::Schema>> schemas;
    for (const auto& stored : blocks_) schemas.push_back(stored.block->schema());
    if (!schemas.empty()) {
      ARROW_ASSIGN_OR_RAISE(schema_, UnifyBlockSchemas(schemas));
    }
    order_.resize(blocks_.size());
    for (size_t i = 0; i < order_.size(); ++i) order_[i] = static_cast<int64_t>(i);
    Rng rng(StreamSeed(seed_, 0, 2));
    for (int64_t i = static_cast<int64_t>(order_.size()) - 1; i > 0; --i) {
      std::swap(order_[i], order_[rng.Below(static_cast<uint64_t>(i) + 1)]);
    }
    for (auto& stored : blocks_) stored.block->SetReaders(1, ctx);
    return static_cast<int64_t>(blocks_.size());
  }

  arrow::Status Reduce(int64_t p, const Emit& emit, ExchangeContext& ctx) override {
    if (p < 0 || p >= static_cast<int64_t>(order_.size())) {
      return arrow::Status::IndexError("no RandomizeBlockOrder partition ", p, " of ",
                                       order_.size());
    }
    StoredBlock& stored = *blocks_[order_[p]].block;
    bool done = false;
    ReduceHold hold(ledger_, ctx, [this, &ctx](int64_t bytes) -> arrow::Result<int64_t> {
      std::lock_guard<std::mutex> lock(mutex_);
      std::vector<StoredBlock*> blocks;
      for (auto& other : blocks_) blocks.push_back(other.block.get());
      return ReclaimUnread(blocks, bytes, ctx);
    });
    auto status = [&]() -> arrow::Status {
      ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
      if (stored.spilled()) ARROW_RETURN_NOT_OK(hold.Reserve(stored.bytes()));
      bool from_disk = false;
      ARROW_ASSIGN_OR_RAISE(auto pieces, stored.Pieces(0, 1, ctx, &from_disk));
      if (from_disk) ARROW_RETURN_NOT_OK(hold.Hold(BlockBytes(*pieces[0])));
      ARROW_ASSIGN_OR_RAISE(auto block, CastBlockToSchema(pieces[0], schema_));
      pieces.clear();
      // Given back before the block is handed on (the operator counts it from then on).
      hold.ReleaseAll();
      stored.Done(ctx);
      done = true;
      return EmitSliced(block, options_.target_max_block_size, emit);
    }();
    hold.ReleaseAll();
    if (!done) stored.Done(ctx);
    return status;
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
    std::unique_ptr<StoredBlock> block;
  };

  uint64_t seed_;
  ExchangeOptions options_;
  ExchangeLedger ledger_;  // before blocks_: outlives the blocks it counts
  std::mutex mutex_;
  std::vector<Stored> blocks_;
  std::shared_ptr<arrow::Schema> schema_;
  std::vector<int64_t> order_;  // position p emits blocks_[order_[p]]
};

}  // namespace

arrow::Result<std::unique_ptr<Exchange>> MakeRandomizeBlockOrderExchange(
    std::optional<uint64_t> seed, ExchangeOptions options) {
  return std::make_unique<RandomizeBlockOrderExchange>(seed ? *seed : FreshSeed(), options);
}

}  // namespace millstream
