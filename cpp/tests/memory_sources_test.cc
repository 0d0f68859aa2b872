#include <limits>

#include "io/sources.h"
#include "test_util.h"

namespace millstream {
namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

TEST(RangeSource, TargetMaxBlockSizeNearInt64MaxGivesOneTask) {
  ReadTaskOptions options;
  options.target_max_block_size = kMax;  // "never split", as some users write it
  ASSERT_OK_AND_ASSIGN(auto tasks, MakeRangeSource(10)->GetReadTasks(options));
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0]->estimated_rows(), 10);
  EXPECT_EQ(tasks[0]->estimated_bytes(), 80);
}

TEST(RangeSource, HugeRangesSplitIntoContiguousTasksWithoutOverflow) {
  ReadTaskOptions options;
  options.parallelism = 4;
  options.target_max_block_size = kMax;  // a few tasks, not one per 128 MiB
  const int64_t n = kMax / 2;
  ASSERT_OK_AND_ASSIGN(auto tasks, MakeRangeSource(n)->GetReadTasks(options));
  // At least the parallelism asked for, and no task past target_max_block_size (8 bytes a
  // row): 4 tasks of n / 4 rows would each be 2**63 bytes, so there are 5.
  ASSERT_EQ(tasks.size(), 5u);
  int64_t rows = 0;
  for (const auto& task : tasks) {
    EXPECT_GT(task->estimated_rows(), 0);
    EXPECT_LE(task->estimated_rows(), kMax / 8);
    EXPECT_GT(task->estimated_bytes(), 0);  // saturates at INT64_MAX rather than wrapping
    rows += task->estimated_rows();
  }
  EXPECT_EQ(rows, n);
}

}  // namespace
}  // namespace millstream
