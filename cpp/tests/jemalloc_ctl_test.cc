// JemallocControl: libarrow's jemalloc found and purged, checked on jemalloc's own counters.

#include <cstring>
#include <vector>

#include <arrow/memory_pool.h>
#include <gtest/gtest.h>

#include "runtime/jemalloc_ctl.h"

namespace millstream {
namespace {

int64_t Resident() {
  auto resident = arrow::jemalloc_get_stat("stats.resident");
  return resident.ok() ? *resident : -1;
}

TEST(JemallocControl, PurgeGivesEveryFreedPageBack) {
  arrow::MemoryPool* pool = nullptr;
  if (!arrow::jemalloc_memory_pool(&pool).ok() || pool == nullptr) GTEST_SKIP() << "Arrow has no jemalloc";
  // The pinned pyarrow's libarrow has the symbol: not finding it is a failure, not a skip
  // (the engine's resident memory would run past its limit by jemalloc's decay).
  ASSERT_TRUE(JemallocControl::Available());

  constexpr int kBuffers = 64;
  constexpr int64_t kBytes = 1 << 20;
  std::vector<uint8_t*> buffers(kBuffers);
  for (auto& buffer : buffers) {
    ASSERT_TRUE(pool->Allocate(kBytes, &buffer).ok());
    std::memset(buffer, 1, kBytes);  // resident
  }
  const int64_t held = Resident();
  ASSERT_GT(held, kBuffers * kBytes);
  for (auto* buffer : buffers) pool->Free(buffer, kBytes);
  // Arrow's own call, a no-op on this Arrow (see JemallocControl); ours must do its work.
  ASSERT_TRUE(JemallocControl::PurgeAll());
  const int64_t after = Resident();
  EXPECT_LE(after, held - kBuffers * kBytes * 7 / 8)
      << "resident " << held << " bytes holding the buffers, " << after << " after freeing and purging";
}

}  // namespace
}  // namespace millstream
