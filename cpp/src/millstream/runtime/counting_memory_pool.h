#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include <arrow/memory_pool.h>

namespace millstream {

class MemoryReservation;

/// \brief An `arrow::MemoryPool` that forwards to another pool and counts the bytes
/// allocated through it, now and at peak, so the scratch of Arrow compute kernels and the
/// decode buffers of readers count against a memory limit, not only finished blocks.
///
/// Thread-safe (atomics only). When given a reservation, every allocation grows it and
/// every free shrinks it (unconditionally: an allocation is never refused here). The
/// wrapped pool and the reservation must outlive this pool and every buffer it allocated.
class CountingMemoryPool : public arrow::MemoryPool {
 public:
  explicit CountingMemoryPool(arrow::MemoryPool* base = arrow::default_memory_pool(),
                              MemoryReservation* reservation = nullptr)
      : base_(base), reservation_(reservation) {}

  using arrow::MemoryPool::Allocate;
  using arrow::MemoryPool::Free;
  using arrow::MemoryPool::Reallocate;

  arrow::Status Allocate(int64_t size, int64_t alignment, uint8_t** out) override;
  arrow::Status Reallocate(int64_t old_size, int64_t new_size, int64_t alignment,
                           uint8_t** ptr) override;
  void Free(uint8_t* buffer, int64_t size, int64_t alignment) override;
  void ReleaseUnused() override { base_->ReleaseUnused(); }

  /// Bytes allocated through this pool and not yet freed.
  int64_t bytes_allocated() const override { return bytes_.load(std::memory_order_relaxed); }
  /// The most bytes allocated at once through this pool.
  int64_t max_memory() const override { return peak_.load(std::memory_order_relaxed); }
  int64_t total_bytes_allocated() const override {
    return total_.load(std::memory_order_relaxed);
  }
  int64_t num_allocations() const override { return count_.load(std::memory_order_relaxed); }
  std::string backend_name() const override { return base_->backend_name(); }

 private:
  void Add(int64_t delta);

  arrow::MemoryPool* base_;
  MemoryReservation* reservation_;
  std::atomic<int64_t> bytes_{0}, peak_{0}, total_{0}, count_{0};
};

}  // namespace millstream
