#include "shuffle/sort.h"

#include <algorithm>
#include <functional>
#include <mutex>

#include <arrow/api.h>
#include <arrow/compute/api.h>

#include "exec/schema_unify.h"
#include "shuffle/sort_boundaries.h"
#include "shuffle/sort_keys.h"
#include "shuffle/stored_block.h"

namespace millstream {

namespace cp = arrow::compute;
using ArrayVector = std::vector<std::shared_ptr<arrow::Array>>;

namespace {

constexpr int64_t kSamplesPerRun = 128;
// A run is stored as chunks of about kChunkBytes (at least kMinChunkRows rows): a reduce
// task reads back whole chunks, so each of the P partitions reads up to one chunk more
// than its slice of every run. Chunks small against a partition's slice of a run keep
// that extra reading small (with 1/16 of a run per chunk, 160 partitions read the data
// ten times over).
constexpr int64_t kChunkBytes = 64LL << 10;
constexpr int64_t kChunksPerRun = 16;  // and never fewer chunks than this
constexpr int64_t kMinChunkRows = 4096;
// See FinishMap: partitions of about this much, at most kMaxStreamPartitions of them
// (beyond it, partitions grow; ChoosePartitions may still ask for more under a small
// memory limit).
constexpr int64_t kStreamPartitionBytes = 16LL << 20;
constexpr int64_t kMaxStreamPartitions = 256;

arrow::Result<Block> TakeRows(const Block& block, const std::shared_ptr<arrow::Array>& indices,
                              arrow::MemoryPool* pool) {
  cp::ExecContext exec(pool);
  ARROW_ASSIGN_OR_RAISE(auto taken, cp::Take(arrow::Datum(block), arrow::Datum(indices),
                                             cp::TakeOptions::NoBoundsCheck(), &exec));
  return taken.record_batch();
}

/// The key columns at `rows` (positions in the sorted run, mapped through `order`) as a
/// batch with fields k0, k1...
arrow::Result<Block> KeyRows(const ArrayVector& keys, const arrow::UInt64Array& order,
                             const std::vector<int64_t>& rows, arrow::MemoryPool* pool) {
  arrow::UInt64Builder builder(pool);
  ARROW_RETURN_NOT_OK(builder.Reserve(rows.size()));
  for (int64_t r : rows) builder.UnsafeAppend(order.Value(r));
  ARROW_ASSIGN_OR_RAISE(auto indices, builder.Finish());
  cp::ExecContext exec(pool);
  arrow::FieldVector fields;
  ArrayVector columns;
  for (size_t i = 0; i < keys.size(); ++i) {
    fields.push_back(arrow::field(KeyName(i), keys[i]->type()));
    ARROW_ASSIGN_OR_RAISE(auto taken, cp::Take(arrow::Datum(keys[i]), arrow::Datum(indices),
                                               cp::TakeOptions::NoBoundsCheck(), &exec));
    columns.push_back(taken.make_array());
  }
  return arrow::RecordBatch::Make(arrow::schema(fields), static_cast<int64_t>(rows.size()),
                                  std::move(columns));
}

/// The first index in [lo, hi) where `before(index)` is false (`before` is monotone).
template <typename Before>
int64_t Partition(int64_t lo, int64_t hi, Before before) {
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    if (before(mid)) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

class SortExchange : public Exchange {
 public:
  SortExchange(std::vector<SortKey> keys, std::vector<SortBoundary> given, ExchangeOptions options)
      : keys_(std::move(keys)), given_(std::move(given)), options_(options) {}

  std::string name() const override { return "Sort"; }

  arrow::Status Map(int64_t index, Block block, ExchangeContext& ctx) override {
    ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
    int64_t rows = block->num_rows();
    if (rows == 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      empty_schemas_.emplace_back(index, block->schema());
      return arrow::Status::OK();
    }
    int64_t bytes = BlockBytes(*block);
    bool has_keys = std::all_of(keys_.begin(), keys_.end(), [&](const SortKey& key) {
      return block->schema()->GetFieldIndex(key.column) >= 0;
    });
    Run run;
    if (has_keys) {
      ARROW_ASSIGN_OR_RAISE(run, MakeRun(index, std::move(block), ctx));
    } else {
      // A block without a key column another block has (its keys are null once the
      // schemas meet): kept as it is and sorted by FinishMap, which knows the key's type.
      run.index = index;
      ARROW_ASSIGN_OR_RAISE(run.stored, StoredBlock::Make(std::move(block), {0, rows}, &ledger_, ctx));
    }
    std::lock_guard<std::mutex> lock(mutex_);
    total_rows_ += rows;
    total_bytes_ += bytes;
    (has_keys ? runs_ : keyless_).push_back(std::move(run));
    return arrow::Status::OK();
  }

  arrow::Result<int64_t> FinishMap(ExchangeContext& ctx) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (runs_.empty() && keyless_.empty() && empty_schemas_.empty()) return n_ = 0;
    // Unified in input order, so columns come in the order the input first has them.
    auto indexed = empty_schemas_;
    for (const auto& run : runs_) indexed.emplace_back(run.index, run.stored->schema());
    for (const auto& run : keyless_) indexed.emplace_back(run.index, run.stored->schema());
    ARROW_ASSIGN_OR_RAISE(schema_, UnifyInOrder(std::move(indexed)));
    ARROW_ASSIGN_OR_RAISE(key_schema_, SortKeySchema(*schema_, keys_));
    if (!given_.empty()) ARROW_RETURN_NOT_OK(GivenBoundaries::CheckType(*key_schema_->field(0)->type(), keys_[0]));
    for (auto& run : keyless_) {
      ARROW_ASSIGN_OR_RAISE(auto pieces, run.stored->Pieces(0, 1, ctx));
      run.stored.reset();
      ARROW_ASSIGN_OR_RAISE(Block block, CastBlockToSchema(pieces[0], schema_));
      pieces.clear();
      ARROW_ASSIGN_OR_RAISE(auto sorted, MakeRun(run.index, std::move(block), ctx));
      runs_.push_back(std::move(sorted));
    }
    keyless_.clear();
    std::sort(runs_.begin(), runs_.end(),
              [](const Run& a, const Run& b) { return a.index < b.index; });
    if (!given_.empty()) {
      n_ = static_cast<int64_t>(given_.size()) + 1;
    } else {
      n_ = runs_.empty() ? 1 : ChoosePartitions(total_bytes_, total_rows_, options_);
      if (options_.num_partitions <= 0 && !runs_.empty()) {
        // Partitions of at most about kStreamPartitionBytes even when the limit allows
        // larger ones: the reduce tasks spread over the threads, the first output comes
        // early and the steps after the sort (a write) get blocks to overlap with.
        const int64_t small = (total_bytes_ + kStreamPartitionBytes - 1) / kStreamPartitionBytes;
        n_ = std::clamp<int64_t>(std::max(n_, small), 1, std::min(total_rows_, kMaxStreamPartitions));
        n_ = std::max(n_, ChoosePartitions(total_bytes_, total_rows_, options_));
      }
    }

    if (n_ > 1 && given_.empty()) {
      // Concatenated in input order, each run's samples in run order: the stable sort of
      // their keys orders them by (key, input index, place in run), as the output is.
      std::vector<Block> samples;
      std::vector<int64_t> sample_runs, sample_positions;
      for (const auto& run : runs_) {
        ARROW_ASSIGN_OR_RAISE(auto cast, CastBlockToSchema(run.samples, key_schema_));
        samples.push_back(std::move(cast));
        sample_runs.insert(sample_runs.end(), run.sample_positions.size(), run.index);
        sample_positions.insert(sample_positions.end(), run.sample_positions.begin(),
                                run.sample_positions.end());
      }
      ARROW_ASSIGN_OR_RAISE(Block all, arrow::ConcatenateRecordBatches(samples, ctx.pool));
      ARROW_ASSIGN_OR_RAISE(auto order_array, SortOrder(all->columns(), keys_, ctx.pool));
      const auto& order = static_cast<const arrow::UInt64Array&>(*order_array);
      std::vector<int64_t> picks;
      for (int64_t k = 1; k < n_; ++k) picks.push_back(k * all->num_rows() / n_);
      ARROW_ASSIGN_OR_RAISE(Block bounds, KeyRows(all->columns(), order, picks, ctx.pool));
      boundaries_ = bounds->columns();
      for (int64_t pick : picks) {
        boundary_runs_.push_back(sample_runs[order.Value(pick)]);
        boundary_positions_.push_back(sample_positions[order.Value(pick)]);
      }
    }

    for (auto& run : runs_) {
      ARROW_ASSIGN_OR_RAISE(Block bounds, CastBlockToSchema(run.bounds, key_schema_));
      run.samples.reset();
      run.sample_positions = {};
      run.bounds.reset();
      int64_t chunks = run.stored->num_pieces();
      run.ranges.assign(n_, {0, chunks});
      if (n_ > 1) {
        ARROW_ASSIGN_OR_RAISE(auto before, BoundaryTest(bounds->columns()));
        for (int64_t p = 0; p < n_; ++p) {
          int64_t lo = 0, hi = chunks;
          if (p > 0) {
            // The first chunk whose last row is not before boundary p-1.
            lo = Partition(0, chunks, [&](int64_t c) {
              return before(2 * c + 1, run.index, run.stored->piece_offset(c + 1) - 1, p - 1);
            });
          }
          if (p < n_ - 1) {
            // The first chunk whose first row is not before boundary p.
            hi = Partition(0, chunks, [&](int64_t c) {
              return before(2 * c, run.index, run.stored->piece_offset(c), p);
            });
          }
          run.ranges[p] = {lo, std::max(lo, hi)};
        }
      }
      int64_t readers = 0;
      for (const auto& [lo, hi] : run.ranges) readers += hi > lo;
      run.stored->SetReaders(readers, ctx);
    }
    return n_;
  }

  arrow::Status Reduce(int64_t p, const Emit& emit, ExchangeContext& ctx) override {
    if (p < 0 || p >= n_) return arrow::Status::IndexError("no sort partition ", p, " of ", n_);
    std::vector<Block> slices;
    std::vector<StoredBlock*> read;
    ReduceHold hold(ledger_, ctx, [this, &ctx](int64_t bytes) { return ReclaimUnread(bytes, ctx); });
    // Given back before the merged rows are handed on (the operator counts them then).
    auto release = [&]() {
      hold.ReleaseAll();
      for (auto* stored : read) stored->Done(ctx);
      read.clear();
    };
    // Room for the chunks it reads and their merge (about an even share of the input,
    // at most the chunks), reserved before it holds any: while it holds none, runs it
    // will slice can still be spilled to make room. What the merge needs beyond it is
    // grown once known, waiting for room like this.
    int64_t estimate = 0, runs_read = 0;
    for (const auto& run : runs_) {
      auto [c0, c1] = run.ranges[p];
      if (c0 >= c1) continue;
      estimate += run.stored->RangeBytes(c0, c1);
      runs_read += 1;
    }
    const int64_t merge = runs_read > 1 ? std::min(estimate, 2 * total_bytes_ / std::max<int64_t>(1, n_)) : 0;
    auto status = hold.Reserve(estimate + merge);
    if (status.ok()) status = Collect(p, ctx, &slices, &read, &hold);
    if (status.ok()) status = MergeAndEmit(std::move(slices), emit, ctx, p, &hold, release);
    release();
    return status;
  }

  arrow::Result<int64_t> Reclaim(int64_t bytes, ExchangeContext& ctx) override {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<StoredBlock*> blocks;
    for (auto* runs : {&keyless_, &runs_}) {
      for (auto& run : *runs) blocks.push_back(run.stored.get());
    }
    return ReclaimFrom(blocks, bytes, ctx);
  }

  /// Reclaim for a reduce task short of room: spills only runs no reduce task has read.
  arrow::Result<int64_t> ReclaimUnread(int64_t bytes, ExchangeContext& ctx) {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<StoredBlock*> blocks;
    for (auto* runs : {&keyless_, &runs_}) {
      for (auto& run : *runs) blocks.push_back(run.stored.get());
    }
    return millstream::ReclaimUnread(blocks, bytes, ctx);
  }

  int64_t held_bytes() const override { return ledger_.held.load(std::memory_order_relaxed); }
  int64_t spilled_bytes() const override {
    return ledger_.spilled.load(std::memory_order_relaxed);
  }

 private:
  struct Run {
    int64_t index = 0;
    std::unique_ptr<StoredBlock> stored;  // the sorted block, its chunks as pieces
    Block samples;                        // key columns at evenly spaced rows
    std::vector<int64_t> sample_positions;  // those rows' places in the run
    Block bounds;                         // key columns at each chunk's first and last row
    std::vector<std::pair<int64_t, int64_t>> ranges;  // per partition: its chunks
  };

  /// `block` (with every key column) sorted into a run, sampled and stored.
  arrow::Result<Run> MakeRun(int64_t index, Block block, ExchangeContext& ctx) {
    int64_t rows = block->num_rows();
    ARROW_ASSIGN_OR_RAISE(auto key_arrays, SortKeyArrays(*block, keys_, ctx.pool));
    ARROW_ASSIGN_OR_RAISE(auto order_array, SortOrder(key_arrays, keys_, ctx.pool));
    const auto& order = static_cast<const arrow::UInt64Array&>(*order_array);
    ARROW_ASSIGN_OR_RAISE(Block sorted, TakeRows(block, order_array, ctx.pool));
    block.reset();

    Run run;
    run.index = index;
    const int64_t run_bytes = std::max<int64_t>(1, BlockBytes(*sorted));
    int64_t chunk_rows = std::max(
        kMinChunkRows, std::min((rows + kChunksPerRun - 1) / kChunksPerRun, rows * kChunkBytes / run_bytes));
    std::vector<int64_t> offsets{0}, bound_rows;
    for (int64_t begin = 0; begin < rows; begin += chunk_rows) {
      int64_t end = std::min(rows, begin + chunk_rows);
      offsets.push_back(end);
      bound_rows.push_back(begin);
      bound_rows.push_back(end - 1);
    }
    int64_t samples = std::min(rows, kSamplesPerRun);
    std::vector<int64_t> sample_rows;
    for (int64_t k = 0; k < samples; ++k) sample_rows.push_back((2 * k + 1) * rows / (2 * samples));
    ARROW_ASSIGN_OR_RAISE(run.samples, KeyRows(key_arrays, order, sample_rows, ctx.pool));
    run.sample_positions = std::move(sample_rows);
    ARROW_ASSIGN_OR_RAISE(run.bounds, KeyRows(key_arrays, order, bound_rows, ctx.pool));
    key_arrays.clear();
    order_array.reset();
    ARROW_ASSIGN_OR_RAISE(run.stored,
                          StoredBlock::Make(std::move(sorted), std::move(offsets), &ledger_, ctx));
    return run;
  }

  /// Whether row `i` of `cmp`'s left side, at place `position` in the run of input index
  /// `run`, comes before boundary `j` in the stable order: by key, then input index, then
  /// place. The tie-break spreads rows of one key over partitions, so a key most rows
  /// share does not land in one partition.
  bool Before(const RowComparator& cmp, int64_t i, int64_t run, int64_t position, int64_t j) const {
    int c = cmp.Compare(i, j);
    if (c != 0) return c < 0;
    if (run != boundary_runs_[j]) return run < boundary_runs_[j];
    return position < boundary_positions_[j];
  }

  /// (row i of `keys`, its run's input index, its place in the run, boundary j) -> whether
  /// the row belongs to a partition before boundary j.
  using BeforeFn = std::function<bool(int64_t, int64_t, int64_t, int64_t)>;

  /// The boundary test for rows of `keys` (the key columns, cast to the key schema):
  /// Before against the sampled boundaries, or the first key against the given ones.
  arrow::Result<BeforeFn> BoundaryTest(const ArrayVector& keys) const {
    if (!given_.empty()) {
      ARROW_ASSIGN_OR_RAISE(auto given, GivenBoundaries::Make(keys[0], given_, keys_[0]));
      return BeforeFn([given = std::move(given)](int64_t i, int64_t, int64_t, int64_t j) {
        return given.Before(i, j);
      });
    }
    ARROW_ASSIGN_OR_RAISE(auto cmp, RowComparator::Make(keys, boundaries_, keys_));
    return BeforeFn([this, cmp = std::move(cmp)](int64_t i, int64_t run, int64_t position, int64_t j) {
      return Before(cmp, i, run, position, j);
    });
  }

  /// The rows of partition `p` from every run, in input order (each sorted).
  arrow::Status Collect(int64_t p, ExchangeContext& ctx, std::vector<Block>* slices,
                        std::vector<StoredBlock*>* read, ReduceHold* hold) {
    for (auto& run : runs_) {
      auto [c0, c1] = run.ranges[p];
      if (c0 >= c1) continue;
      ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
      read->push_back(run.stored.get());
      bool from_disk = false;
      ARROW_ASSIGN_OR_RAISE(auto pieces, run.stored->Pieces(c0, c1, ctx, &from_disk));
      if (from_disk) {
        int64_t bytes = 0;
        for (const auto& piece : pieces) bytes += BlockBytes(*piece);
        ARROW_RETURN_NOT_OK(hold->Hold(bytes));
      }
      for (size_t k = 0; k < pieces.size(); ++k) {
        ARROW_ASSIGN_OR_RAISE(Block piece, CastBlockToSchema(pieces[k], schema_));
        int64_t begin = 0, end = piece->num_rows();
        bool first = k == 0 && p > 0, last = k + 1 == pieces.size() && p < n_ - 1;
        if (first || last) {
          ARROW_ASSIGN_OR_RAISE(auto keys, SortKeyArrays(*piece, keys_, ctx.pool));
          ARROW_ASSIGN_OR_RAISE(auto before, BoundaryTest(keys));
          int64_t offset = run.stored->piece_offset(c0 + static_cast<int64_t>(k));
          auto lower_bound = [&](int64_t lo, int64_t hi, int64_t j) {
            return Partition(lo, hi, [&](int64_t r) { return before(r, run.index, offset + r, j); });
          };
          if (first) begin = lower_bound(0, end, p - 1);
          if (last) end = lower_bound(begin, end, p);
        }
        if (end > begin) slices->push_back(piece->Slice(begin, end - begin));
      }
    }
    return arrow::Status::OK();
  }

  arrow::Status MergeAndEmit(std::vector<Block> slices, const Emit& emit, ExchangeContext& ctx,
                             int64_t p, ReduceHold* hold, const std::function<void()>& release) {
    if (slices.empty()) {
      // The schema survives an input of no rows: partition 0 emits one empty block. With
      // given boundaries, every partition is a block, empty or not (as in Ray Data).
      if (given_.empty() && (p != 0 || total_rows_ != 0)) return arrow::Status::OK();
      ARROW_ASSIGN_OR_RAISE(Block empty, arrow::RecordBatch::MakeEmpty(schema_, ctx.pool));
      return emit(std::move(empty));
    }
    ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
    Block merged;
    if (slices.size() == 1) {
      merged = std::move(slices[0]);  // one sorted run's rows: already in order
    } else {
      ARROW_ASSIGN_OR_RAISE(Block all, arrow::ConcatenateRecordBatches(slices, ctx.pool));
      int64_t all_bytes = BlockBytes(*all);
      ARROW_RETURN_NOT_OK(hold->Hold(all_bytes));
      auto sorted = [&]() -> arrow::Result<Block> {
        std::shared_ptr<arrow::Array> order;
        if (keys_.size() == 1) {
          // One fixed-width key: merge the sorted slices rather than sort them again.
          ArrayVector runs;
          for (const auto& slice : slices) {
            ARROW_ASSIGN_OR_RAISE(auto keys, SortKeyArrays(*slice, keys_, ctx.pool));
            runs.push_back(std::move(keys[0]));
          }
          ARROW_ASSIGN_OR_RAISE(order, MergeSortedRuns(runs, keys_[0], ctx.pool));
        }
        if (order == nullptr) {
          ARROW_ASSIGN_OR_RAISE(auto keys, SortKeyArrays(*all, keys_, ctx.pool));
          ARROW_ASSIGN_OR_RAISE(order, SortOrder(keys, keys_, ctx.pool));
        }
        return TakeRows(all, order, ctx.pool);
      }();
      all.reset();
      slices.clear();
      hold->Release(all_bytes);
      ARROW_ASSIGN_OR_RAISE(merged, std::move(sorted));
    }
    ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
    slices.clear();
    release();
    return EmitSliced(merged, options_.target_max_block_size, emit);
  }

  std::vector<SortKey> keys_;
  std::vector<SortBoundary> given_;  // of the first key, ascending; empty: sampled
  ExchangeOptions options_;
  ExchangeLedger ledger_;  // before runs_: outlives the blocks it counts
  std::mutex mutex_;
  std::vector<Run> runs_;
  std::vector<Run> keyless_;  // blocks missing a key column, sorted by FinishMap
  std::vector<std::pair<int64_t, std::shared_ptr<arrow::Schema>>> empty_schemas_;  // by index
  int64_t total_rows_ = 0, total_bytes_ = 0;
  // Set by FinishMap.
  int64_t n_ = 0;
  std::shared_ptr<arrow::Schema> schema_, key_schema_;
  ArrayVector boundaries_;  // n_ - 1 rows of the key columns
  std::vector<int64_t> boundary_runs_, boundary_positions_;  // their input index, place in run
};

}  // namespace

arrow::Result<std::unique_ptr<Exchange>> MakeSortExchange(std::vector<SortKey> keys,
                                                          ExchangeOptions options,
                                                          std::vector<SortBoundary> boundaries) {
  if (keys.empty()) return arrow::Status::Invalid("sort needs at least one key column");
  for (const auto& key : keys) {
    if (key.column.empty()) return arrow::Status::Invalid("sort key column name is empty");
  }
  ARROW_ASSIGN_OR_RAISE(boundaries, NormalizeSortBoundaries(std::move(boundaries)));
  return std::make_unique<SortExchange>(std::move(keys), std::move(boundaries), options);
}

}  // namespace millstream
