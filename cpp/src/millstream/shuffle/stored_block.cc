#include "shuffle/stored_block.h"

#include <algorithm>

#include <arrow/compute/api.h>

#include "exec/schema_unify.h"

namespace millstream {

void ExchangeLedger::Hold(int64_t bytes, ExchangeContext& ctx) {
  if (ctx.reservation != nullptr) ctx.reservation->Grow(bytes);
  held.fetch_add(bytes, std::memory_order_relaxed);
}

void ExchangeLedger::Release(int64_t bytes, MemoryReservation* reservation) {
  if (reservation != nullptr) reservation->Shrink(bytes);
  held.fetch_sub(bytes, std::memory_order_relaxed);
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
  if (ctx.spill == nullptr) {
    return arrow::Status::OutOfMemory("an exchange needs ", stored->bytes_,
                                      " bytes over its memory cap and has no spill directory");
  }
  ARROW_ASSIGN_OR_RAISE(stored->file_, ctx.spill->NewFile());
  for (int64_t i = 0; i < stored->num_pieces(); ++i) {
    ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
    ARROW_RETURN_NOT_OK(
        stored->file_->Write(*block->Slice(stored->offsets_[i], stored->piece_rows(i))));
  }
  ARROW_RETURN_NOT_OK(stored->file_->Finish());
  ledger->spilled.fetch_add(stored->file_->bytes(), std::memory_order_relaxed);
  return stored;
}

// An exchange destroyed before every reader was done (failure, cancel) still gives its
// memory back to the reservation.
StoredBlock::~StoredBlock() { Free(); }

arrow::Result<std::vector<Block>> StoredBlock::Pieces(int64_t begin, int64_t end,
                                                      ExchangeContext& ctx) const {
  if (file_ != nullptr) return file_->ReadRange(begin, end, ctx.pool);
  if (block_ == nullptr) return arrow::Status::Invalid("stored block read after it was freed");
  std::vector<Block> out;
  out.reserve(end - begin);
  for (int64_t i = begin; i < end; ++i) out.push_back(block_->Slice(offsets_[i], piece_rows(i)));
  return out;
}

void StoredBlock::SetReaders(int64_t n, ExchangeContext& ctx) {
  readers_.store(n, std::memory_order_release);
  if (n == 0) Free();
}

void StoredBlock::Done(ExchangeContext& ctx) {
  if (readers_.fetch_sub(1, std::memory_order_acq_rel) == 1) Free();
}

void StoredBlock::Free() {
  block_.reset();
  file_.reset();
  if (reserved_) {
    reserved_ = false;
    ledger_->Release(bytes_, reservation_);
  }
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
