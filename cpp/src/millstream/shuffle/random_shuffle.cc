#include "shuffle/random_shuffle.h"

#include <algorithm>

#include <arrow/api.h>
#include <arrow/compute/api.h>

#include "shuffle/bucket_exchange.h"
#include "shuffle/random.h"

namespace millstream {

namespace {

constexpr int64_t kDefaultBuckets = 128;

class RandomShuffleExchange : public BucketExchange {
 public:
  RandomShuffleExchange(uint64_t seed, ExchangeOptions options)
      : BucketExchange(options, options.num_partitions > 0 ? options.num_partitions
                                                           : kDefaultBuckets),
        seed_(seed),
        buckets_(options.num_partitions > 0 ? options.num_partitions : kDefaultBuckets) {}

  std::string name() const override { return "RandomShuffle"; }

 protected:
  arrow::Result<std::vector<uint32_t>> Buckets(int64_t index, const Block& block,
                                               ExchangeContext&) override {
    Rng rng(StreamSeed(seed_, static_cast<uint64_t>(index), 0));
    std::vector<uint32_t> out(block->num_rows());
    for (auto& b : out) b = static_cast<uint32_t>(rng.Below(buckets_));
    return out;
  }

  int64_t Partitions(int64_t total_bytes, int64_t total_rows) const override {
    if (options().num_partitions > 0) return options().num_partitions;
    return std::min(buckets_, ChoosePartitions(total_bytes, total_rows, options()));
  }

  arrow::Status Output(int64_t p, Block rows, const Emit& emit, ExchangeContext& ctx) override {
    int64_t n = rows->num_rows();
    if (n == 0) {
      // The schema survives an input of no rows: partition 0 emits one empty block.
      if (p == 0 && total_rows() == 0) return emit(std::move(rows));
      return arrow::Status::OK();
    }
    ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
    ARROW_ASSIGN_OR_RAISE(auto buffer, arrow::AllocateBuffer(n * sizeof(int64_t), ctx.pool));
    auto* order = reinterpret_cast<int64_t*>(buffer->mutable_data());
    for (int64_t i = 0; i < n; ++i) order[i] = i;
    Rng rng(StreamSeed(seed_, static_cast<uint64_t>(p), 1));
    for (int64_t i = n - 1; i > 0; --i) {
      std::swap(order[i], order[rng.Below(static_cast<uint64_t>(i) + 1)]);
    }
    auto indices = std::make_shared<arrow::Int64Array>(n, std::shared_ptr<arrow::Buffer>(std::move(buffer)));
    arrow::compute::ExecContext exec(ctx.pool);
    ARROW_ASSIGN_OR_RAISE(auto taken,
                          arrow::compute::Take(arrow::Datum(rows), arrow::Datum(indices),
                                               arrow::compute::TakeOptions::NoBoundsCheck(), &exec));
    rows.reset();
    return EmitSliced(taken.record_batch(), options().target_max_block_size, emit);
  }

 private:
  uint64_t seed_;
  int64_t buckets_;
};

}  // namespace

arrow::Result<std::unique_ptr<Exchange>> MakeRandomShuffleExchange(std::optional<uint64_t> seed,
                                                                   ExchangeOptions options) {
  if (options.num_partitions < 0 || options.num_partitions > (int64_t{1} << 31)) {
    return arrow::Status::Invalid("random_shuffle: num_partitions must be in [0, 2^31], got ",
                                  options.num_partitions);
  }
  return std::make_unique<RandomShuffleExchange>(seed ? *seed : FreshSeed(), options);
}

}  // namespace millstream
