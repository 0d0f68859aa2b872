#include "runtime/reservation.h"

#include "runtime/counting_memory_pool.h"

namespace millstream {

namespace {
// What a task grows in a reservation is counted there, not as the task's own bytes.
void NoteReserved(int64_t bytes) {
  if (TaskMemoryMeter* meter = CurrentTaskMeter()) {
    meter->reserved.fetch_add(bytes, std::memory_order_relaxed);
  }
}
}  // namespace

void MemoryReservation::Shrink(int64_t bytes) {
  size_.fetch_sub(bytes, std::memory_order_acq_rel);
  NoteReserved(-bytes);
}

bool MemoryReservation::TryGrow(int64_t bytes) {
  int64_t now = size_.load(std::memory_order_acquire);
  do {
    if (now + bytes > cap()) return false;
  } while (!size_.compare_exchange_weak(now, now + bytes, std::memory_order_acq_rel));
  UpdatePeak(now + bytes);
  NoteReserved(bytes);
  return true;
}

void MemoryReservation::Grow(int64_t bytes) {
  UpdatePeak(size_.fetch_add(bytes, std::memory_order_acq_rel) + bytes);
  NoteReserved(bytes);
}

void MemoryReservation::UpdatePeak(int64_t now) {
  int64_t peak = peak_.load(std::memory_order_relaxed);
  while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

}  // namespace millstream
