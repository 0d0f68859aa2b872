#include "shuffle/stored_block.h"

#include <algorithm>
#include <chrono>

#include <arrow/api.h>
#include <arrow/compute/api.h>

#include "exec/schema_unify.h"
#include "runtime/memory.h"

namespace millstream {

void ExchangeLedger::Hold(int64_t bytes, ExchangeContext& ctx) {
  if (ctx.reservation != nullptr) ctx.reservation->Grow(bytes);
  held.fetch_add(bytes, std::memory_order_relaxed);
}

void ExchangeLedger::Release(int64_t bytes, MemoryReservation* reservation) {
  if (reservation != nullptr) reservation->Shrink(bytes);
  held.fetch_sub(bytes, std::memory_order_relaxed);
  // Under pressure (the exchange spills), what it gives back is released to the system
  // too (see MemoryReturn::AfterTask).
  if (spilled.load(std::memory_order_relaxed) > 0) MemoryReturn::FreedUnderPressure(bytes);
}

arrow::Status ExchangeLedger::HoldForReduce(int64_t bytes, int64_t mine, ExchangeContext& ctx,
                                            const Reclaimer& reclaim) {
  if (bytes <= 0) return arrow::Status::OK();
  MemoryReservation* reservation = ctx.reservation;
  while (reservation != nullptr && !reservation->TryGrow(bytes)) {
    ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
    if (reclaim) {
      const int64_t shortfall = reservation->size() + bytes - reservation->cap();
      ARROW_ASSIGN_OR_RAISE(int64_t freed, reclaim(std::max<int64_t>(shortfall, 1)));
      if (freed > 0) continue;
    }
    std::unique_lock<std::mutex> lock(wait_mutex_);
    if (reservation->TryGrow(bytes)) break;
    // Waiting helps only while some other holder runs (it will give bytes back); the
    // check and the count are under one lock, so two holders never both wait on the other.
    const int64_t running_others = holders_ - waiting_holders_ - (mine > 0 ? 1 : 0);
    if (running_others <= 0) {
      reservation->Grow(bytes);
      over_cap.fetch_add(1, std::memory_order_relaxed);
      break;
    }
    if (mine > 0) ++waiting_holders_;
    released_.wait_for(lock, std::chrono::milliseconds(10));
    if (mine > 0) --waiting_holders_;
  }
  held.fetch_add(bytes, std::memory_order_relaxed);
  reduce_held.fetch_add(bytes, std::memory_order_acq_rel);
  if (mine == 0) {
    std::lock_guard<std::mutex> lock(wait_mutex_);
    ++holders_;
  }
  return arrow::Status::OK();
}

void ExchangeLedger::ReleaseForReduce(int64_t bytes, int64_t left, ExchangeContext& ctx) {
  if (bytes <= 0) return;
  {
    std::lock_guard<std::mutex> lock(wait_mutex_);
    reduce_held.fetch_sub(bytes, std::memory_order_acq_rel);
    Release(bytes, ctx);
    if (left == 0) --holders_;
  }
  released_.notify_all();
}

arrow::Status ReduceHold::Reserve(int64_t bytes) {
  if (bytes <= 0) return arrow::Status::OK();
  ARROW_RETURN_NOT_OK(ledger_.HoldForReduce(bytes, total_, ctx_, reclaim_));
  total_ += bytes;
  ahead_ += bytes;
  return arrow::Status::OK();
}

arrow::Status ReduceHold::Hold(int64_t bytes) {
  const int64_t from_ahead = std::min(bytes, ahead_);
  ahead_ -= from_ahead;
  const int64_t more = bytes - from_ahead;
  if (more <= 0) return arrow::Status::OK();
  ARROW_RETURN_NOT_OK(ledger_.HoldForReduce(more, total_, ctx_, reclaim_));
  total_ += more;
  return arrow::Status::OK();
}

void ReduceHold::Release(int64_t bytes) {
  bytes = std::min(bytes, total_ - ahead_);
  total_ -= bytes;
  ledger_.ReleaseForReduce(bytes, total_, ctx_);
}

void ReduceHold::ReleaseAll() {
  ledger_.ReleaseForReduce(total_, 0, ctx_);
  total_ = 0;
  ahead_ = 0;
}

arrow::Result<std::unique_ptr<StoredBlock>> StoredBlock::Make(Block block,
                                                              std::vector<int64_t> offsets,
                                                              ExchangeLedger* ledger,
                                                              ExchangeContext& ctx) {
  std::unique_ptr<StoredBlock> stored(new StoredBlock());
  stored->ledger_ = ledger;
  stored->schema_ = block->schema();
  stored->bytes_ = BlockBytes(*block);
  stored->offsets_ = std::move(offsets);
  stored->reservation_ = ctx.reservation;
  if (ctx.reservation == nullptr || ctx.reservation->TryGrow(stored->bytes_)) {
    ledger->held.fetch_add(stored->bytes_, std::memory_order_relaxed);
    stored->reserved_ = true;
    stored->block_ = std::move(block);
    return stored;
  }
  ARROW_ASSIGN_OR_RAISE(stored->file_, stored->WriteFile(block, ctx));
  stored->spilled_ = true;
  block.reset();
  MemoryReturn::FreedUnderPressure(stored->bytes_);
  return stored;
}

arrow::Result<std::shared_ptr<SpillFile>> StoredBlock::WriteFile(const Block& block,
                                                                 ExchangeContext& ctx) const {
  if (ctx.spill == nullptr) {
    return arrow::Status::OutOfMemory("an exchange needs ", bytes_,
                                      " bytes over its memory cap and has no spill directory");
  }
  ARROW_ASSIGN_OR_RAISE(std::shared_ptr<SpillFile> file, ctx.spill->NewFile());
  // Only pieces with rows: a bucket exchange's block of a few rows has mostly empty
  // buckets, and each piece written costs an IPC stream (schema, metadata).
  for (int64_t i = 0; i < num_pieces(); ++i) {
    ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
    if (piece_rows(i) == 0) continue;
    ARROW_RETURN_NOT_OK(file->Write(*block->Slice(offsets_[i], piece_rows(i))));
  }
  ARROW_RETURN_NOT_OK(file->Finish());
  ledger_->spilled.fetch_add(file->bytes(), std::memory_order_relaxed);
  return file;
}

// An exchange destroyed before every reader was done (failure, cancel) still gives its
// memory back to the reservation.
StoredBlock::~StoredBlock() { Free(); }

bool StoredBlock::in_memory() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return block_ != nullptr;
}

arrow::Result<std::vector<Block>> StoredBlock::Pieces(int64_t begin, int64_t end,
                                                      ExchangeContext& ctx, bool* from_disk,
                                                      bool with_empty) const {
  Block block;
  std::shared_ptr<SpillFile> file;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    block = block_;
    file = file_;
  }
  if (from_disk != nullptr) *from_disk = block == nullptr && file != nullptr;
  std::vector<Block> out;
  if (block == nullptr) {
    if (file == nullptr) return arrow::Status::Invalid("stored block read after it was freed");
    // The file holds the pieces with rows, in order.
    auto written_before = [&](int64_t piece) {
      int64_t n = 0;
      for (int64_t i = 0; i < piece; ++i) n += piece_rows(i) > 0;
      return n;
    };
    ARROW_ASSIGN_OR_RAISE(auto read, file->ReadRange(written_before(begin), written_before(end), ctx.pool));
    if (!with_empty) return read;
    size_t next = 0;
    for (int64_t i = begin; i < end; ++i) {
      if (piece_rows(i) > 0) {
        out.push_back(std::move(read.at(next++)));
      } else {
        ARROW_ASSIGN_OR_RAISE(auto empty, arrow::RecordBatch::MakeEmpty(schema(), ctx.pool));
        out.push_back(std::move(empty));
      }
    }
    return out;
  }
  out.reserve(end - begin);
  for (int64_t i = begin; i < end; ++i) {
    if (with_empty || piece_rows(i) > 0) out.push_back(block->Slice(offsets_[i], piece_rows(i)));
  }
  return out;
}

Block StoredBlock::InMemoryRange(int64_t begin, int64_t end) const {
  Block block;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    block = block_;
  }
  if (block == nullptr) return nullptr;
  return block->Slice(offsets_[begin], offsets_[end] - offsets_[begin]);
}

int64_t StoredBlock::RangeBytes(int64_t begin, int64_t end) const {
  const int64_t rows = offsets_[end] - offsets_[begin];
  if (rows <= 0 || num_rows() <= 0) return 0;
  return (bytes_ * rows + num_rows() - 1) / num_rows();
}

namespace {

// Whether a buffer of `data` (or of its children or dictionary) is also held elsewhere.
bool BuffersShared(const arrow::ArrayData& data) {
  for (const auto& buffer : data.buffers) {
    if (buffer != nullptr && buffer.use_count() > 1) return true;
  }
  for (const auto& child : data.child_data) {
    if (child != nullptr && BuffersShared(*child)) return true;
  }
  return data.dictionary != nullptr && BuffersShared(*data.dictionary);
}

}  // namespace

arrow::Result<int64_t> StoredBlock::SpillUnread(ExchangeContext& ctx) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (block_ == nullptr) return 0;
  // A reader holds the block or slices of it (they share its buffers): spilling would
  // give back bytes still in use. Readers copy block_ under this lock, so none is missed.
  if (block_.use_count() > 1) return 0;
  for (const auto& column : block_->column_data()) {
    if (BuffersShared(*column)) return 0;
  }
  return SpillLocked(ctx);
}

arrow::Result<int64_t> StoredBlock::Spill(ExchangeContext& ctx) {
  std::lock_guard<std::mutex> lock(mutex_);
  return SpillLocked(ctx);
}

arrow::Result<int64_t> StoredBlock::SpillLocked(ExchangeContext& ctx) {
  if (block_ == nullptr) return 0;
  ARROW_ASSIGN_OR_RAISE(file_, WriteFile(block_, ctx));
  spilled_ = true;
  block_.reset();
  if (reserved_) {
    reserved_ = false;
    ledger_->Release(bytes_, reservation_);
  }
  return bytes_;
}

void StoredBlock::SetReaders(int64_t n, ExchangeContext& ctx) {
  readers_.store(n, std::memory_order_release);
  if (n == 0) Free();
}

void StoredBlock::Done(ExchangeContext& ctx) {
  if (readers_.fetch_sub(1, std::memory_order_acq_rel) == 1) Free();
}

void StoredBlock::Free() {
  std::lock_guard<std::mutex> lock(mutex_);
  block_.reset();
  file_.reset();
  if (reserved_) {
    reserved_ = false;
    ledger_->Release(bytes_, reservation_);
  }
}

arrow::Result<int64_t> ReclaimFrom(const std::vector<StoredBlock*>& blocks, int64_t bytes,
                                   ExchangeContext& ctx) {
  int64_t freed = 0;
  for (StoredBlock* block : blocks) {
    if (freed >= bytes) break;
    ARROW_ASSIGN_OR_RAISE(int64_t got, block->Spill(ctx));
    freed += got;
  }
  return freed;
}

arrow::Result<int64_t> ReclaimUnread(const std::vector<StoredBlock*>& blocks, int64_t bytes,
                                     ExchangeContext& ctx) {
  int64_t freed = 0;
  for (StoredBlock* block : blocks) {
    if (freed >= bytes) break;
    ARROW_ASSIGN_OR_RAISE(int64_t got, block->SpillUnread(ctx));
    freed += got;
  }
  return freed;
}

arrow::Result<std::shared_ptr<arrow::Schema>> UnifyInOrder(
    std::vector<std::pair<int64_t, std::shared_ptr<arrow::Schema>>> indexed) {
  std::stable_sort(indexed.begin(), indexed.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::shared_ptr<arrow::Schema>> schemas;
  schemas.reserve(indexed.size());
  for (auto& [index, schema] : indexed) schemas.push_back(std::move(schema));
  return UnifyBlockSchemas(schemas);
}

arrow::Result<GroupedRows> GroupRowsByBucket(const Block& block, const std::vector<uint32_t>& bucket,
                                             int64_t num_buckets, arrow::MemoryPool* pool) {
  GroupedRows out;
  out.offsets.assign(num_buckets + 1, 0);
  for (uint32_t b : bucket) ++out.offsets[b + 1];
  for (int64_t b = 0; b < num_buckets; ++b) out.offsets[b + 1] += out.offsets[b];
  std::vector<int64_t> next(out.offsets.begin(), out.offsets.end() - 1);
  ARROW_ASSIGN_OR_RAISE(auto buffer, arrow::AllocateBuffer(bucket.size() * sizeof(int64_t), pool));
  auto* indices = reinterpret_cast<int64_t*>(buffer->mutable_data());
  for (size_t i = 0; i < bucket.size(); ++i) indices[next[bucket[i]]++] = static_cast<int64_t>(i);
  auto array = std::make_shared<arrow::Int64Array>(static_cast<int64_t>(bucket.size()),
                                                   std::shared_ptr<arrow::Buffer>(std::move(buffer)));
  arrow::compute::ExecContext exec(pool);
  ARROW_ASSIGN_OR_RAISE(auto taken,
                        arrow::compute::Take(arrow::Datum(block), arrow::Datum(array),
                                             arrow::compute::TakeOptions::NoBoundsCheck(), &exec));
  out.block = taken.record_batch();
  return out;
}

}  // namespace millstream
