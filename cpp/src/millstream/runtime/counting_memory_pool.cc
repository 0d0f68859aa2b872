#include "runtime/counting_memory_pool.h"

#include <cstdlib>
#include <cstring>

#include "runtime/memory.h"
#include "runtime/reservation.h"

namespace millstream {

namespace {
thread_local TaskMemoryMeter* t_meter = nullptr;

/// Whether the environment chose Arrow's default pool: MILLSTREAM_MEMORY_POOL=default.
bool DefaultPoolChosen() {
  const char* choice = std::getenv("MILLSTREAM_MEMORY_POOL");
  return choice != nullptr && std::strcmp(choice, "default") == 0;
}

arrow::MemoryPool* EngineBasePool() {
  if (DefaultPoolChosen()) return arrow::default_memory_pool();
  arrow::MemoryPool* jemalloc = nullptr;
  if (arrow::jemalloc_memory_pool(&jemalloc).ok() && jemalloc != nullptr) {
    // Pages freed go back to the system after MemoryReturn::kJemallocDecayMs, not Arrow's
    // second: a spilling sort frees and allocates hundreds of MB a second, and with a
    // second's worth kept its RSS ran 150-200 MB past what it held (memory_bounded_sort:
    // peak RSS 720-765 MB, 597 MB with 100 ms, no slower). Arenas made from now on (the
    // engine's threads') take it.
    (void)arrow::jemalloc_set_decay_ms(MemoryReturn::kJemallocDecayMs);
    return jemalloc;
  }
  return arrow::default_memory_pool();
}
}  // namespace

TaskMemoryMeter* CurrentTaskMeter() { return t_meter; }

ScopedTaskMeter::ScopedTaskMeter(TaskMemoryMeter* meter) : previous_(t_meter) {
  t_meter = meter;
}
ScopedTaskMeter::~ScopedTaskMeter() { t_meter = previous_; }

CountingMemoryPool* EngineMemoryPool() {
  static CountingMemoryPool* pool = new CountingMemoryPool(EngineBasePool());
  return pool;
}

namespace {
/// Adds `delta` to the meter's allocated bytes and raises its peak to what it now holds.
void MeterAdd(TaskMemoryMeter* meter, int64_t delta) {
  meter->allocated.fetch_add(delta, std::memory_order_relaxed);
  const int64_t held = meter->Unaccounted();
  int64_t top = meter->peak.load(std::memory_order_relaxed);
  while (held > top && !meter->peak.compare_exchange_weak(top, held, std::memory_order_relaxed)) {
  }
}
}  // namespace

ScopedTaskCharge::ScopedTaskCharge() : meter_(t_meter) {}

void ScopedTaskCharge::Set(int64_t bytes) {
  if (meter_ != nullptr && bytes != bytes_) MeterAdd(meter_, bytes - bytes_);
  bytes_ = bytes;
}

void CountingMemoryPool::Add(int64_t delta) {
  int64_t now = bytes_.fetch_add(delta, std::memory_order_relaxed) + delta;
  int64_t peak = peak_.load(std::memory_order_relaxed);
  while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
  if (TaskMemoryMeter* meter = t_meter) MeterAdd(meter, delta);
  if (reservation_ != nullptr) {
    if (delta >= 0) {
      reservation_->Grow(delta);
    } else {
      reservation_->Shrink(-delta);
    }
  }
}

arrow::Status CountingMemoryPool::Allocate(int64_t size, int64_t alignment, uint8_t** out) {
  ARROW_RETURN_NOT_OK(base_->Allocate(size, alignment, out));
  Add(size);
  total_.fetch_add(size, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  return arrow::Status::OK();
}

arrow::Status CountingMemoryPool::Reallocate(int64_t old_size, int64_t new_size,
                                             int64_t alignment, uint8_t** ptr) {
  ARROW_RETURN_NOT_OK(base_->Reallocate(old_size, new_size, alignment, ptr));
  Add(new_size - old_size);
  if (new_size > old_size) total_.fetch_add(new_size - old_size, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  return arrow::Status::OK();
}

void CountingMemoryPool::Free(uint8_t* buffer, int64_t size, int64_t alignment) {
  base_->Free(buffer, size, alignment);
  Add(-size);
}

}  // namespace millstream
