#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "shuffle/exchange.h"
#include "shuffle/stored_block.h"

namespace millstream {

/// \brief The shape shared by hash and random exchanges: Map puts each row of a block in
/// one of `num_buckets` buckets (the subclass says which) and stores the block grouped
/// by bucket, one piece per bucket; FinishMap splits the buckets evenly among the
/// partitions; Reduce p gathers its buckets' pieces from every block, in input order,
/// and hands them to the subclass as one block.
class BucketExchange : public Exchange {
 public:
  arrow::Status Map(int64_t index, Block block, ExchangeContext& ctx) override;
  arrow::Result<int64_t> FinishMap(ExchangeContext& ctx) override;
  arrow::Status Reduce(int64_t p, const Emit& emit, ExchangeContext& ctx) override;
  arrow::Result<int64_t> Reclaim(int64_t bytes, ExchangeContext& ctx) override;
  /// Reclaim for a reduce task short of room: spills only blocks no reduce task has read.
  arrow::Result<int64_t> ReclaimUnread(int64_t bytes, ExchangeContext& ctx);
  int64_t held_bytes() const override { return ledger_.held.load(std::memory_order_relaxed); }
  int64_t spilled_bytes() const override {
    return ledger_.spilled.load(std::memory_order_relaxed);
  }

  /// After FinishMap: the bytes partition `p` takes in memory (each stored block's bytes
  /// prorated by its rows in the partition; nothing is read).
  int64_t PartitionBytes(int64_t p) const;
  /// After FinishMap: a reduce of partition `p` that hands its rows of each stored block
  /// (one zero-copy slice for a block in memory, one piece per bucket read back for a
  /// spilled one; with the unified schema, earlier input blocks first) to `each`, one at a
  /// time, instead of concatenating them; pieces read back from spill files are not counted in the
  /// reservation (`each` holds what it keeps). Like Reduce, once per partition.
  arrow::Status ReducePieces(int64_t p, const std::function<arrow::Status(Block)>& each,
                             ExchangeContext& ctx);
  /// \brief Rows of consecutive buckets `first_bucket`.. gathered by a reduce.
  struct BucketGroup {
    int64_t first_bucket = 0;
    /// With the unified schema: each stored block's rows of the group's buckets, earlier
    /// input blocks first, each block's rows bucket by bucket.
    Block rows;
    /// Per bucket of the group: where its rows are in `rows` (start, length), in input order.
    std::vector<std::vector<std::pair<int64_t, int64_t>>> segments;
  };
  /// After FinishMap: a reduce of partition `p` that hands its buckets to `each` in
  /// groups of consecutive buckets of at most about `max_bytes` (a larger bucket is a
  /// group of its own), one group at a time, so that no more than one group is gathered
  /// at once. The group's rows are counted in the reservation while `each` runs. Like
  /// Reduce, once per partition.
  arrow::Status ReduceBucketGroups(int64_t p, int64_t max_bytes,
                                   const std::function<arrow::Status(BucketGroup)>& each,
                                   ExchangeContext& ctx);
  /// After FinishMap: the unified schema of the input blocks.
  const std::shared_ptr<arrow::Schema>& schema() const { return schema_; }

 protected:
  BucketExchange(ExchangeOptions options, int64_t num_buckets)
      : options_(options), num_buckets_(num_buckets) {}

  /// The bucket (< num_buckets) of each row of `block`, the input's block `index`.
  /// Called from several threads at once.
  virtual arrow::Result<std::vector<uint32_t>> Buckets(int64_t index, const Block& block,
                                                       ExchangeContext& ctx) = 0;
  /// The number of partitions (at most num_buckets) for the mapped input.
  virtual int64_t Partitions(int64_t total_bytes, int64_t total_rows) const = 0;
  /// Hands on partition `p`: `rows` holds its rows with the unified schema (none: an
  /// empty block), those of earlier input blocks first.
  virtual arrow::Status Output(int64_t p, Block rows, const Emit& emit, ExchangeContext& ctx) = 0;

  const ExchangeOptions& options() const { return options_; }
  int64_t num_buckets() const { return num_buckets_; }
  int64_t total_rows() const { return total_rows_; }

 private:
  struct Stored {
    int64_t index;
    std::unique_ptr<StoredBlock> block;
  };

  ExchangeOptions options_;
  int64_t num_buckets_;
  ExchangeLedger ledger_;  // before blocks_: outlives the blocks it counts
  std::mutex mutex_;
  std::vector<Stored> blocks_;
  std::vector<std::pair<int64_t, std::shared_ptr<arrow::Schema>>> empty_schemas_;  // by index
  int64_t total_rows_ = 0, total_bytes_ = 0;
  // Set by FinishMap.
  int64_t n_ = 0;
  std::shared_ptr<arrow::Schema> schema_;
};

}  // namespace millstream
