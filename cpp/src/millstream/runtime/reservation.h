#pragma once

#include <atomic>
#include <cstdint>

namespace millstream {

/// \brief Bytes an operator holds outside the executor's block accounting (an exchange's
/// buffered runs and pieces, a hash table), bounded by a cap the executor sets.
///
/// Thread-safe: every method is a few atomic operations, no lock is held across calls, so
/// map and reduce tasks on several worker threads grow and shrink one reservation at once.
/// The holder grows it before it holds bytes and shrinks it when it lets them go; when
/// `TryGrow` refuses, the holder spills (or otherwise frees) and retries. Growing and
/// shrinking on a thread with a task meter moves the meter's `reserved` (so the bytes are
/// counted here, not twice).
class MemoryReservation {
 public:
  /// A reservation holding nothing, allowed to grow to `cap` bytes.
  explicit MemoryReservation(int64_t cap) : cap_(cap) {}

  /// Sets the cap (the executor updates it every scheduling pass). Lowering it under
  /// `size()` frees nothing: later `TryGrow` calls fail until the holder shrinks.
  void SetCap(int64_t cap) { cap_.store(cap, std::memory_order_relaxed); }

  /// Grows by `bytes` if `size() + bytes <= cap()`; otherwise changes nothing and returns
  /// false. Atomic against concurrent growers: two callers never both pass the cap.
  bool TryGrow(int64_t bytes);

  /// Grows by `bytes` unconditionally: for a piece that must be held to make progress
  /// (one block, one reduce partition), even past the cap.
  void Grow(int64_t bytes);

  /// Gives back `bytes` (at most what is held).
  void Shrink(int64_t bytes);

  /// Bytes held now.
  int64_t size() const { return size_.load(std::memory_order_acquire); }
  /// The cap now.
  int64_t cap() const { return cap_.load(std::memory_order_relaxed); }
  /// The most bytes held at once since construction.
  int64_t peak() const { return peak_.load(std::memory_order_relaxed); }

 private:
  void UpdatePeak(int64_t now);

  std::atomic<int64_t> cap_;
  std::atomic<int64_t> size_{0};
  std::atomic<int64_t> peak_{0};
};

}  // namespace millstream
