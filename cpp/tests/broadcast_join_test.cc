// The broadcast join operator driven by hand (inputs, tasks, outputs as the executor
// drives them, on one thread); results compared with a nested-loop join by hand.

#include <algorithm>
#include <atomic>
#include <random>
#include <set>
#include <tuple>

#include "exec/operators/operators.h"
#include "shuffle/hash_join.h"
#include "test_util.h"

namespace millstream::testing {
namespace {

/// Blocks of (k: int64 0..keys-1 with 10% nulls, `payload`: int64 row id + base).
std::vector<Block> Blocks(uint64_t seed, int blocks, int64_t rows, int64_t keys, const char* payload, int64_t base) {
  std::mt19937_64 rng(seed);
  auto schema = arrow::schema({arrow::field("k", arrow::int64()), arrow::field(payload, arrow::int64())});
  std::vector<Block> out;
  int64_t id = base;
  for (int b = 0; b < blocks; ++b) {
    arrow::Int64Builder k, v;
    for (int64_t i = 0; i < rows; ++i) {
      if (rng() % 10 == 0) (void)k.AppendNull(); else (void)k.Append(static_cast<int64_t>(rng() % keys));
      (void)v.Append(id++);
    }
    out.push_back(arrow::RecordBatch::Make(schema, rows, {k.Finish().ValueOrDie(), v.Finish().ValueOrDie()}));
  }
  return out;
}

using Triple = std::tuple<int64_t, int64_t, int64_t>;  // (k, a, b); -1 for null or absent

/// The join of (k, a) blocks with (k, b) blocks by nested loops: inner pairs, plus the
/// unmatched left rows for a left outer join; nulls never match.
std::vector<Triple> ByHand(const std::vector<Block>& left, const std::vector<Block>& right, bool left_outer) {
  std::vector<Triple> out;
  for (const auto& lb : left) {
    auto lk = std::static_pointer_cast<arrow::Int64Array>(lb->column(0));
    auto a = std::static_pointer_cast<arrow::Int64Array>(lb->column(1));
    for (int64_t i = 0; i < lb->num_rows(); ++i) {
      bool matched = false;
      for (const auto& rb : right) {
        auto rk = std::static_pointer_cast<arrow::Int64Array>(rb->column(0));
        auto b = std::static_pointer_cast<arrow::Int64Array>(rb->column(1));
        for (int64_t j = 0; j < rb->num_rows(); ++j) {
          if (lk->IsValid(i) && rk->IsValid(j) && lk->Value(i) == rk->Value(j)) {
            out.emplace_back(lk->Value(i), a->Value(i), b->Value(j));
            matched = true;
          }
        }
      }
      if (!matched && left_outer) out.emplace_back(lk->IsNull(i) ? -1 : lk->Value(i), a->Value(i), -1);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

/// The distinct non-null keys (column 0) of `blocks`.
std::set<int64_t> NonNullKeys(const std::vector<Block>& blocks) {
  std::set<int64_t> out;
  for (const auto& block : blocks) {
    auto k = std::static_pointer_cast<arrow::Int64Array>(block->column(0));
    for (int64_t i = 0; i < k->length(); ++i) {
      if (k->IsValid(i)) out.insert(k->Value(i));
    }
  }
  return out;
}

std::vector<Triple> Triples(const std::vector<Block>& blocks) {
  std::vector<Triple> out;
  for (const auto& b : blocks) {
    EXPECT_EQ(b->schema()->field_names(), (std::vector<std::string>{"k", "a", "b"}));
    auto k = std::static_pointer_cast<arrow::Int64Array>(b->column(0));
    auto a = std::static_pointer_cast<arrow::Int64Array>(b->column(1));
    auto v = std::static_pointer_cast<arrow::Int64Array>(b->column(2));
    for (int64_t i = 0; i < b->num_rows(); ++i) {
      out.emplace_back(k->IsNull(i) ? -1 : k->Value(i), a->IsNull(i) ? -1 : a->Value(i), v->IsNull(i) ? -1 : v->Value(i));
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

/// Feeds both inputs (the probe side's first, so they queue while the build side is
/// collected), then runs every task the operator offers until it completes.
arrow::Result<std::vector<Block>> Drive(PhysicalOperator& op, const std::vector<Block>& left,
                                        const std::vector<Block>& right) {
  for (const auto& block : left) op.AddInput(0, RefBundle::Of(block));
  for (const auto& block : right) op.AddInput(1, RefBundle::Of(block));
  op.InputDone(0);
  op.InputDone(1);
  std::vector<Block> out;
  std::atomic<bool> cancelled{false};
  for (int guard = 0; guard < 100000 && !op.Completed(); ++guard) {
    ARROW_RETURN_NOT_OK(op.status());
    op.SetMemoryBudget(int64_t{1} << 30);
    while (op.HasNext()) {
      for (const auto& ref : op.TakeNext().blocks) {
        ARROW_ASSIGN_OR_RAISE(auto block, ref.Get());
        out.push_back(std::move(block));
      }
    }
    if (!op.HasTaskReady()) continue;
    TaskSpec spec = op.LaunchTask();
    std::vector<Block> emitted;
    TaskRunContext run;
    run.stopped = [] { return false; };
    run.emit = [&](Block b) { emitted.push_back(std::move(b)); return arrow::Status::OK(); };
    run.cancelled = &cancelled;
    TaskResult result;
    result.status = op.RunTask(spec, run);
    result.read_rows = run.read_rows;  // as the executor hands it on (an exchange's partitions)
    for (auto& b : emitted) op.OnTaskOutput(spec.task_index, std::move(b));
    op.OnTaskDone(spec.task_index, result);
    ARROW_RETURN_NOT_OK(result.status);
  }
  while (op.HasNext()) {
    for (const auto& ref : op.TakeNext().blocks) {
      ARROW_ASSIGN_OR_RAISE(auto block, ref.Get());
      out.push_back(std::move(block));
    }
  }
  if (!op.Completed()) return arrow::Status::Invalid("the operator did not complete");
  return out;
}

JoinSpec Spec(JoinType type) {
  JoinSpec spec;
  spec.type = type;
  spec.left_keys = {"k"};
  spec.right_keys = {"k"};
  return spec;
}

FallbackFactory Exchange(const JoinSpec& spec, bool* made) {
  return [spec, made]() -> arrow::Result<std::unique_ptr<PhysicalOperator>> {
    *made = true;
    ARROW_ASSIGN_OR_RAISE(auto exchange, MakeHashJoinExchange(spec, {}));
    return MakeAllToAllOperator("Join", std::move(exchange), DataContext{});
  };
}

TEST(BroadcastJoinOperator, InnerAndProbeSideOuterMatchNestedLoops) {
  auto left = Blocks(1, 6, 300, 50, "a", 0);
  auto right = Blocks(2, 3, 100, 80, "b", 100000);
  for (JoinType type : {JoinType::kInner, JoinType::kLeftOuter}) {
    bool fell_back = false;
    auto op = MakeBroadcastJoinOperator("Join", Spec(type), /*build=*/1, /*cap=*/1 << 20, Exchange(Spec(type), &fell_back));
    ASSIGN_OK(auto out, Drive(*op, left, right));
    EXPECT_FALSE(fell_back);
    EXPECT_EQ(Triples(out), ByHand(left, right, type == JoinType::kLeftOuter)) << JoinTypeName(type);
    EXPECT_LE(out.size(), left.size());  // one output per probe block at most
  }
}

TEST(BroadcastJoinOperator, BuildSideOverTheCapFallsBackWithTheSameResult) {
  auto left = Blocks(3, 5, 200, 40, "a", 0);
  auto right = Blocks(4, 4, 200, 60, "b", 100000);
  for (JoinType type : {JoinType::kInner, JoinType::kLeftOuter}) {
    bool fell_back = false;
    // The cap is below the build side's bytes: the exchange joins them.
    auto op = MakeBroadcastJoinOperator("Join", Spec(type), 1, /*cap=*/4096, Exchange(Spec(type), &fell_back));
    ASSIGN_OK(auto out, Drive(*op, left, right));
    EXPECT_TRUE(fell_back);
    EXPECT_NE(op->Describe().find("fell back to the exchange"), std::string::npos);
    EXPECT_EQ(Triples(out), ByHand(left, right, type == JoinType::kLeftOuter)) << JoinTypeName(type);
  }
}

TEST(BroadcastJoinOperator, FullOuterJoinAddsTheBuildRowsNoProbeRowMatchedByHand) {
  // The right side builds: the left rows as a left outer join gives them, then each
  // right row whose key no left row has (null keys among them) once, its left side null.
  auto left = Blocks(7, 5, 200, 50, "a", 0);
  auto right = Blocks(8, 3, 150, 90, "b", 100000);
  const std::set<int64_t> left_keys = NonNullKeys(left);
  auto want = ByHand(left, right, /*left_outer=*/true);
  for (const auto& block : right) {
    auto k = std::static_pointer_cast<arrow::Int64Array>(block->column(0));
    auto b = std::static_pointer_cast<arrow::Int64Array>(block->column(1));
    for (int64_t i = 0; i < k->length(); ++i) {
      if (k->IsNull(i)) {
        want.emplace_back(-1, -1, b->Value(i));
      } else if (!left_keys.count(k->Value(i))) {
        want.emplace_back(k->Value(i), -1, b->Value(i));
      }
    }
  }
  std::sort(want.begin(), want.end());
  bool fell_back = false;
  auto spec = Spec(JoinType::kFullOuter);
  auto op = MakeBroadcastJoinOperator("Join", spec, /*build=*/1, 1 << 20, Exchange(spec, &fell_back));
  ASSIGN_OK(auto out, Drive(*op, left, right));
  EXPECT_FALSE(fell_back);
  EXPECT_EQ(Triples(out), want);
}

TEST(BroadcastJoinOperator, BuildSideSemiAndAntiJoinsOutputTheBuildRowsByHand) {
  // The left side builds; the right side's keys choose which left rows come out, each
  // once, in the left side's order (an anti join keeps the null keys, which never match).
  auto left = Blocks(5, 3, 200, 60, "a", 0);
  auto right = Blocks(6, 6, 300, 40, "b", 100000);
  const std::set<int64_t> right_keys = NonNullKeys(right);
  for (JoinType type : {JoinType::kLeftSemi, JoinType::kLeftAnti}) {
    std::vector<int64_t> want;
    for (const auto& block : left) {
      auto k = std::static_pointer_cast<arrow::Int64Array>(block->column(0));
      auto a = std::static_pointer_cast<arrow::Int64Array>(block->column(1));
      for (int64_t i = 0; i < k->length(); ++i) {
        const bool found = k->IsValid(i) && right_keys.count(k->Value(i)) > 0;
        if (found == (type == JoinType::kLeftSemi)) want.push_back(a->Value(i));
      }
    }
    bool fell_back = false;
    auto op = MakeBroadcastJoinOperator("Join", Spec(type), /*build=*/0, 1 << 20, Exchange(Spec(type), &fell_back));
    ASSIGN_OK(auto out, Drive(*op, left, right));
    EXPECT_FALSE(fell_back);
    std::vector<int64_t> got;
    for (const auto& block : out) {
      EXPECT_EQ(block->schema()->field_names(), (std::vector<std::string>{"k", "a"}));
      auto a = std::static_pointer_cast<arrow::Int64Array>(block->column(1));
      for (int64_t i = 0; i < a->length(); ++i) got.push_back(a->Value(i));
    }
    EXPECT_EQ(got, want) << JoinTypeName(type);
  }
}

TEST(BroadcastJoinOperator, SupportsEveryJoinTypeWithEitherSideBuilding) {
  for (JoinType type : {JoinType::kInner, JoinType::kLeftOuter, JoinType::kRightOuter, JoinType::kFullOuter,
                        JoinType::kLeftSemi, JoinType::kRightSemi, JoinType::kLeftAnti, JoinType::kRightAnti}) {
    EXPECT_TRUE(BroadcastJoinSupports(type, 0)) << JoinTypeName(type);
    EXPECT_TRUE(BroadcastJoinSupports(type, 1)) << JoinTypeName(type);
  }
  EXPECT_EQ(BroadcastJoinCap(int64_t{1} << 30), kBroadcastJoinMaxBytes);
  EXPECT_EQ(BroadcastJoinCap(int64_t{8} << 20), int64_t{1} << 20);
}

}  // namespace
}  // namespace millstream::testing
