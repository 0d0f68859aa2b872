#include "shuffle/random_shuffle.h"

#include <algorithm>

#include <arrow/api.h>
#include <arrow/compute/api.h>

#include "shuffle/bucket_exchange.h"
#include "shuffle/random.h"

namespace millstream {

namespace {

constexpr int64_t kDefaultBuckets = 128;
// Partitions of about this much (at most one per bucket) when the memory limit allows
// larger ones: the first output comes early and the reduce tasks spread over the threads.
constexpr int64_t kPartitionBytes = 8LL << 20;
// A reduce permutes this much at a time (a bucket larger than this alone): the
// random-access gather stays within the caches.
constexpr int64_t kGroupBytes = 2LL << 20;

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
    // The order depends only on the buckets, never on how many partitions there are:
    // many small partitions let the output stream early and spread over the threads.
    const int64_t small = (total_bytes + kPartitionBytes - 1) / kPartitionBytes;
    return std::min(buckets_, std::max(small, ChoosePartitions(total_bytes, total_rows, options())));
  }

  /// Partition p's buckets, a few at a time: each bucket's rows permuted on their own
  /// (Fisher-Yates over the bucket's rows in input order, seeded by (seed, bucket)), the
  /// buckets in order, so the output depends on the seed and the input only.
  arrow::Status Reduce(int64_t p, const Emit& emit, ExchangeContext& ctx) override {
    if (total_rows() == 0) {
      // The schema survives an input of no rows: partition 0 emits one empty block.
      return ReduceBucketGroups(p, kGroupBytes, [&](BucketGroup group) -> arrow::Status {
        if (p == 0 && group.first_bucket == 0) return emit(std::move(group.rows));
        return arrow::Status::OK();
      }, ctx);
    }
    return ReduceBucketGroups(p, kGroupBytes, [&](BucketGroup group) -> arrow::Status {
      const int64_t n = group.rows->num_rows();
      if (n == 0) return arrow::Status::OK();
      ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
      ARROW_ASSIGN_OR_RAISE(auto buffer, arrow::AllocateBuffer(n * sizeof(int64_t), ctx.pool));
      auto* order = reinterpret_cast<int64_t*>(buffer->mutable_data());
      int64_t filled = 0;
      for (size_t k = 0; k < group.segments.size(); ++k) {
        int64_t* bucket = order + filled;
        for (const auto& [start, length] : group.segments[k]) {
          for (int64_t i = 0; i < length; ++i) order[filled++] = start + i;
        }
        const int64_t rows = order + filled - bucket;
        Rng rng(StreamSeed(seed_, static_cast<uint64_t>(group.first_bucket) + k, 1));
        for (int64_t i = rows - 1; i > 0; --i) {
          std::swap(bucket[i], bucket[rng.Below(static_cast<uint64_t>(i) + 1)]);
        }
      }
      if (filled != n) {
        return arrow::Status::UnknownError("random_shuffle: a bucket group of ", n, " rows lists ",
                                           filled, " of them");
      }
      auto indices = std::make_shared<arrow::Int64Array>(n, std::shared_ptr<arrow::Buffer>(std::move(buffer)));
      arrow::compute::ExecContext exec(ctx.pool);
      ARROW_ASSIGN_OR_RAISE(auto taken,
                            arrow::compute::Take(arrow::Datum(group.rows), arrow::Datum(indices),
                                                 arrow::compute::TakeOptions::NoBoundsCheck(), &exec));
      group.rows.reset();
      return EmitSliced(taken.record_batch(), options().target_max_block_size, emit);
    }, ctx);
  }

  arrow::Status Output(int64_t, Block, const Emit&, ExchangeContext&) override {
    return arrow::Status::NotImplemented("random_shuffle reduces bucket by bucket");
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
