#include <gtest/gtest.h>

#include "runtime/gpu_ids.h"

namespace millstream {
namespace {

using Ids = std::vector<int>;

TEST(GpuAllocator, WholeDevicesTakeTheLowestFreeIds) {
  GpuAllocator gpus(3);
  EXPECT_EQ(gpus.Acquire(1), Ids({0}));
  EXPECT_EQ(gpus.Acquire(2), Ids({1, 2}));
  gpus.Release({0}, 1);
  EXPECT_EQ(gpus.Acquire(1), Ids({0}));
}

TEST(GpuAllocator, FractionsShareADeviceUpToOne) {
  GpuAllocator gpus(2);
  EXPECT_EQ(gpus.Acquire(0.5), Ids({0}));
  EXPECT_EQ(gpus.Acquire(0.5), Ids({0}));
  EXPECT_EQ(gpus.Acquire(0.5), Ids({1}));
  EXPECT_EQ(gpus.Acquire(0.25), Ids({1}));
}

TEST(GpuAllocator, MoreRequestsThanDevicesShareTheLeastUsed) {
  GpuAllocator gpus(2);
  EXPECT_EQ(gpus.Acquire(1), Ids({0}));
  EXPECT_EQ(gpus.Acquire(1), Ids({1}));
  EXPECT_EQ(gpus.Acquire(1).size(), 1u);
  EXPECT_EQ(gpus.Acquire(3), Ids({0, 1}));  // never more ids than devices
}

TEST(GpuAllocator, NoDevicesOrNoRequestGiveNoIds) {
  GpuAllocator none(0);
  EXPECT_TRUE(none.Acquire(1).empty());
  GpuAllocator gpus(1);
  EXPECT_TRUE(gpus.Acquire(0).empty());
}

TEST(ScopedGpuIds, SetsTheThreadsIdsWhileItLives) {
  EXPECT_TRUE(CurrentGpuIds().empty());
  Ids outer{1}, inner{2, 3};
  {
    ScopedGpuIds a(&outer);
    EXPECT_EQ(CurrentGpuIds(), outer);
    {
      ScopedGpuIds b(&inner);
      EXPECT_EQ(CurrentGpuIds(), inner);
    }
    EXPECT_EQ(CurrentGpuIds(), outer);
  }
  EXPECT_TRUE(CurrentGpuIds().empty());
}

}  // namespace
}  // namespace millstream
