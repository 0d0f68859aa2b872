#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include <arrow/result.h>

#include "shuffle/exchange.h"

namespace millstream {

/// \brief The bytes one exchange holds in memory and has spilled, shared by its blocks.
struct ExchangeLedger {
  std::atomic<int64_t> held{0};
  std::atomic<int64_t> spilled{0};

  /// Grows the reservation (unconditionally) and the held count by `bytes`.
  void Hold(int64_t bytes, ExchangeContext& ctx);
  /// Gives `bytes` back to both.
  void Release(int64_t bytes, ExchangeContext& ctx) { Release(bytes, ctx.reservation); }
  void Release(int64_t bytes, MemoryReservation* reservation);

  /// Spills what the exchange holds in memory that no reduce task has read yet, until
  /// about the given bytes are given back; returns the bytes given back.
  using Reclaimer = std::function<arrow::Result<int64_t>(int64_t)>;

  /// Grows the reservation and the held count by `bytes` for a reduce task that holds
  /// `mine` bytes already, within the cap: when refused, it spills unread blocks
  /// (`reclaim`), else waits while another reduce task that holds bytes is running (woken
  /// by ReleaseForReduce, polling the cap, which the executor may raise). It grows past
  /// the cap only when waiting cannot help: no other holder runs (one partition larger
  /// than the cap, or every other holder waits too, which would hang).
  arrow::Status HoldForReduce(int64_t bytes, int64_t mine, ExchangeContext& ctx,
                              const Reclaimer& reclaim);
  /// Gives back bytes HoldForReduce grew (the task holds `left` after it) and wakes
  /// reduce tasks waiting for room.
  void ReleaseForReduce(int64_t bytes, int64_t left, ExchangeContext& ctx);

  /// Bytes reduce tasks hold now, and how many times one grew past the cap.
  std::atomic<int64_t> reduce_held{0};
  std::atomic<int64_t> over_cap{0};

 private:
  std::mutex wait_mutex_;   // guards holders_, waiting_holders_
  int64_t holders_ = 0;          // reduce tasks holding bytes
  int64_t waiting_holders_ = 0;  // of them, waiting for room
  std::condition_variable released_;
};

/// \brief What one reduce task holds (read back, concatenated, merged), grown through
/// `ExchangeLedger::HoldForReduce` so the reservation's cap holds; everything is given
/// back at the latest when it is destroyed.
class ReduceHold {
 public:
  ReduceHold(ExchangeLedger& ledger, ExchangeContext& ctx, ExchangeLedger::Reclaimer reclaim)
      : ledger_(ledger), ctx_(ctx), reclaim_(std::move(reclaim)) {}
  ~ReduceHold() { ReleaseAll(); }
  ReduceHold(const ReduceHold&) = delete;
  ReduceHold& operator=(const ReduceHold&) = delete;

  /// Grows by `bytes` ahead of need (what the task is sure to hold); Hold takes from it
  /// first.
  arrow::Status Reserve(int64_t bytes);
  /// Counts `bytes` the task now holds: from what was reserved ahead, the rest grown.
  arrow::Status Hold(int64_t bytes);
  /// Gives back `bytes` the task no longer holds.
  void Release(int64_t bytes);
  /// Gives back everything (held and reserved ahead).
  void ReleaseAll();

 private:
  ExchangeLedger& ledger_;
  ExchangeContext& ctx_;
  ExchangeLedger::Reclaimer reclaim_;
  int64_t total_ = 0;  // grown, ahead_ included
  int64_t ahead_ = 0;  // reserved, not yet held
};

/// \brief A block of an exchange's map side cut into consecutive pieces (row ranges),
/// either in memory, counted in the reservation, or, when the reservation refused it, in
/// a spill file of one batch per piece.
///
/// Read by any number of reduce tasks at once, and spilled (`Spill`) at any time from any
/// thread: a short lock guards the switch from memory to file. The exchange sets how many
/// reduce tasks will read it (`SetReaders`); each calls `Done` once it no longer needs
/// it, and the last one frees it (the memory given back to the reservation, the spill
/// file deleted).
class StoredBlock {
 public:
  /// Stores `block` cut at `offsets` (`offsets.front() == 0`, `offsets.back() ==
  /// num_rows`, non-decreasing): in memory if the reservation grows by its bytes, else
  /// spilled.
  static arrow::Result<std::unique_ptr<StoredBlock>> Make(Block block, std::vector<int64_t> offsets,
                                                          ExchangeLedger* ledger,
                                                          ExchangeContext& ctx);
  ~StoredBlock();

  int64_t num_pieces() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  int64_t num_rows() const { return offsets_.back(); }
  /// Rows of piece `i`.
  int64_t piece_rows(int64_t i) const { return offsets_[i + 1] - offsets_[i]; }
  /// The first row of piece `i` in the block.
  int64_t piece_offset(int64_t i) const { return offsets_[i]; }
  /// Bytes of the block in memory (also when spilled: what reading it back costs).
  int64_t bytes() const { return bytes_; }
  /// In a spill file (not in memory).
  bool spilled() const { return spilled_.load(std::memory_order_acquire); }
  /// Held in memory (neither spilled nor freed).
  bool in_memory() const;
  const std::shared_ptr<arrow::Schema>& schema() const { return schema_; }

  /// Estimated bytes of pieces `begin` to `end - 1` (the block's bytes in proportion to
  /// their rows): what reading them back or copying them costs.
  int64_t RangeBytes(int64_t begin, int64_t end) const;

  /// Pieces `begin` to `end - 1`, in order: slices of the block, or read back from the
  /// spill file (then `*from_disk` is set). Bytes read back are not counted here: the
  /// caller holds them. `with_empty` false: only the pieces with rows.
  arrow::Result<std::vector<Block>> Pieces(int64_t begin, int64_t end, ExchangeContext& ctx,
                                           bool* from_disk = nullptr, bool with_empty = true) const;

  /// Pieces `begin` to `end - 1` as one zero-copy slice of the block when it is in
  /// memory; null when it is spilled (or freed).
  Block InMemoryRange(int64_t begin, int64_t end) const;

  /// Writes a block held in memory to a spill file and gives its memory back; returns
  /// the bytes given back (0 when it was not in memory).
  arrow::Result<int64_t> Spill(ExchangeContext& ctx);
  /// Spill, but only while no reader holds the block or slices of it in memory (those
  /// keep its memory alive, so spilling would give back bytes still in use); else 0.
  arrow::Result<int64_t> SpillUnread(ExchangeContext& ctx);

  /// `n` reduce tasks will read the block; 0 frees it now.
  void SetReaders(int64_t n, ExchangeContext& ctx);
  /// One reader is done with it; the last frees it.
  void Done(ExchangeContext& ctx);

 private:
  StoredBlock() = default;
  void Free();
  arrow::Result<int64_t> SpillLocked(ExchangeContext& ctx);  // mutex_ held
  /// Writes `block` to a new spill file, one batch per piece.
  arrow::Result<std::shared_ptr<SpillFile>> WriteFile(const Block& block, ExchangeContext& ctx) const;

  ExchangeLedger* ledger_ = nullptr;
  MemoryReservation* reservation_ = nullptr;  // what the in-memory block was grown in
  std::shared_ptr<arrow::Schema> schema_;
  std::vector<int64_t> offsets_;
  int64_t bytes_ = 0;
  mutable std::mutex mutex_;          // guards block_, file_, reserved_
  Block block_;                       // null when spilled or freed
  std::shared_ptr<SpillFile> file_;   // null when in memory or freed
  bool reserved_ = false;
  std::atomic<bool> spilled_{false};
  std::atomic<int64_t> readers_{0};
};

/// \brief Spills `blocks` held in memory, in order, until `bytes` are given back (or none
/// is left in memory); returns the bytes given back.
arrow::Result<int64_t> ReclaimFrom(const std::vector<StoredBlock*>& blocks, int64_t bytes,
                                   ExchangeContext& ctx);
/// \brief ReclaimFrom, spilling only blocks no reduce task has read in memory.
arrow::Result<int64_t> ReclaimUnread(const std::vector<StoredBlock*>& blocks, int64_t bytes,
                                     ExchangeContext& ctx);

/// \brief UnifyBlockSchemas of the schemas of input blocks (index, schema), taken in
/// input order, so the columns come in the order the input first has them.
arrow::Result<std::shared_ptr<arrow::Schema>> UnifyInOrder(
    std::vector<std::pair<int64_t, std::shared_ptr<arrow::Schema>>> indexed);

/// \brief `block`'s rows reordered so that the rows of each bucket are consecutive (in
/// bucket order, rows of one bucket in input order), and where each bucket starts:
/// `offsets` has `num_buckets + 1` entries. `bucket[i] < num_buckets` is row i's bucket.
struct GroupedRows {
  Block block;
  std::vector<int64_t> offsets;
};
arrow::Result<GroupedRows> GroupRowsByBucket(const Block& block, const std::vector<uint32_t>& bucket,
                                             int64_t num_buckets, arrow::MemoryPool* pool);

}  // namespace millstream
