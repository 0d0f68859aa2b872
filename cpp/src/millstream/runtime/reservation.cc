#include "runtime/reservation.h"

namespace millstream {

bool MemoryReservation::TryGrow(int64_t bytes) {
  int64_t now = size_.load(std::memory_order_acquire);
  do {
    if (now + bytes > cap()) return false;
  } while (!size_.compare_exchange_weak(now, now + bytes, std::memory_order_acq_rel));
  UpdatePeak(now + bytes);
  return true;
}

void MemoryReservation::Grow(int64_t bytes) {
  UpdatePeak(size_.fetch_add(bytes, std::memory_order_acq_rel) + bytes);
}

void MemoryReservation::UpdatePeak(int64_t now) {
  int64_t peak = peak_.load(std::memory_order_relaxed);
  while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

}  // namespace millstream
