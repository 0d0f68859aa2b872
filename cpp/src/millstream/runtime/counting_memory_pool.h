#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include <arrow/memory_pool.h>

namespace millstream {

class MemoryReservation;

/// \brief What one running task holds that no block queue or reservation counts yet: the
/// bytes it allocated through a CountingMemoryPool on its thread (decode buffers, compute
/// scratch, the output being built), less what it grew in reservations there (stored by
/// an exchange) and the bytes of the blocks it handed on. The executor adds it to the
/// task's operator's usage while the task runs. Thread-safe (atomics).
struct TaskMemoryMeter {
  std::atomic<int64_t> allocated{0};  ///< net, through counting pools on the task's thread
  std::atomic<int64_t> reserved{0};   ///< net, grown in reservations on the task's thread
  std::atomic<int64_t> emitted{0};    ///< bytes of the blocks the task handed on
  std::atomic<int64_t> peak{0};       ///< the most Unaccounted() seen at an allocation

  /// Bytes held now that nothing else counts (never negative).
  int64_t Unaccounted() const {
    const int64_t held = allocated.load(std::memory_order_relaxed) -
                         reserved.load(std::memory_order_relaxed) -
                         emitted.load(std::memory_order_relaxed);
    return held > 0 ? held : 0;
  }
};

/// The meter of the task running on this thread (null: none).
TaskMemoryMeter* CurrentTaskMeter();

/// \brief Installs `meter` as this thread's task meter for its lifetime (restores the one
/// before). Not copyable.
class ScopedTaskMeter {
 public:
  explicit ScopedTaskMeter(TaskMemoryMeter* meter);
  ~ScopedTaskMeter();
  ScopedTaskMeter(const ScopedTaskMeter&) = delete;
  ScopedTaskMeter& operator=(const ScopedTaskMeter&) = delete;

 private:
  TaskMemoryMeter* previous_;
};

/// \brief Bytes held for the task running on this thread that its own allocations do not
/// show: buffers other threads allocate for it, such as the file bytes Arrow's IO threads
/// read ahead. They count in the task's meter (and its peak) while charged; the charge
/// ends with this object. Made and used on the task's thread; not copyable.
class ScopedTaskCharge {
 public:
  ScopedTaskCharge();
  ~ScopedTaskCharge() { Set(0); }
  ScopedTaskCharge(const ScopedTaskCharge&) = delete;
  ScopedTaskCharge& operator=(const ScopedTaskCharge&) = delete;

  /// Charges `bytes` in place of what was charged before.
  void Set(int64_t bytes);

 private:
  TaskMemoryMeter* meter_;
  int64_t bytes_ = 0;
};

/// \brief An `arrow::MemoryPool` that forwards to another pool and counts the bytes
/// allocated through it, now and at peak, so the scratch of Arrow compute kernels and the
/// decode buffers of readers count against a memory limit, not only finished blocks.
///
/// Thread-safe (atomics only). Allocations and frees on a thread with a task meter
/// (ScopedTaskMeter) also move that meter's `allocated`. When given a reservation, every allocation grows it and
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
  /// The pool it wraps.
  arrow::MemoryPool* base() const { return base_; }

 private:
  void Add(int64_t delta);

  arrow::MemoryPool* base_;
  MemoryReservation* reservation_;
  std::atomic<int64_t> bytes_{0}, peak_{0}, total_{0}, count_{0};
};

/// \brief The pool the engine's own Arrow work allocates from: readers' decode buffers,
/// compute kernels' scratch and outputs, blocks read back from spill files. A process-wide
/// CountingMemoryPool (never destroyed: buffers may outlive every execution) over Arrow's
/// jemalloc pool where the library has one (its arenas are purged for every thread at
/// once, see JemallocControl; mimalloc gives back only the calling thread's cache), else
/// the default pool.
/// `MILLSTREAM_MEMORY_POOL=default` keeps the default pool.
CountingMemoryPool* EngineMemoryPool();

}  // namespace millstream
