// The hash-join exchange driven directly: both inputs mapped from two threads, FinishMap,
// every partition reduced; results compared with a nested-loop join by hand.

#include <algorithm>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <tuple>

#include "runtime/reservation.h"
#include "runtime/spill_file.h"
#include "shuffle/hash_join.h"
#include "test_util.h"

namespace millstream::testing {
namespace {

namespace fs = std::filesystem;

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

/// (key or -1 for null, payload) of every row.
std::vector<std::pair<int64_t, int64_t>> Rows(const std::vector<Block>& blocks, const char* payload) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const auto& b : blocks) {
    auto k = std::static_pointer_cast<arrow::Int64Array>(b->GetColumnByName("k"));
    auto v = std::static_pointer_cast<arrow::Int64Array>(b->GetColumnByName(payload));
    for (int64_t i = 0; i < b->num_rows(); ++i) out.emplace_back(k->IsNull(i) ? -1 : k->Value(i), v->Value(i));
  }
  return out;
}

using Triple = std::tuple<int64_t, int64_t, int64_t>;  // (k, a, b); -1 for null

/// The full outer join of (k, a) and (k, b) by nested loops; nulls never match.
std::vector<Triple> FullOuterByHand(const std::vector<std::pair<int64_t, int64_t>>& l,
                                    const std::vector<std::pair<int64_t, int64_t>>& r) {
  std::vector<Triple> out;
  std::vector<bool> r_matched(r.size(), false);
  for (const auto& [lk, a] : l) {
    bool matched = false;
    for (size_t j = 0; j < r.size(); ++j) {
      if (lk >= 0 && r[j].first == lk) {
        out.emplace_back(lk, a, r[j].second);
        matched = r_matched[j] = true;
      }
    }
    if (!matched) out.emplace_back(lk, a, -1);
  }
  for (size_t j = 0; j < r.size(); ++j) {
    if (!r_matched[j]) out.emplace_back(r[j].first, -1, r[j].second);
  }
  std::sort(out.begin(), out.end());
  return out;
}

arrow::Result<std::vector<Block>> RunJoin(Exchange& exchange, const std::vector<Block>& left,
                                          const std::vector<Block>& right, ExchangeContext& ctx) {
  arrow::Status statuses[2];
  std::vector<std::thread> threads;
  for (int side = 0; side < 2; ++side) {
    threads.emplace_back([&, side] {
      const auto& input = side == 0 ? left : right;
      for (size_t i = 0; i < input.size(); ++i) {
        auto st = exchange.MapInput(side, static_cast<int64_t>(i), input[i], ctx);
        if (!st.ok()) { statuses[side] = st; return; }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (auto& st : statuses) ARROW_RETURN_NOT_OK(st);
  ARROW_ASSIGN_OR_RAISE(int64_t n, exchange.FinishMap(ctx));
  std::vector<Block> out;
  for (int64_t p = 0; p < n; ++p) {
    ARROW_RETURN_NOT_OK(exchange.Reduce(p, [&](Block b) { out.push_back(std::move(b)); return arrow::Status::OK(); }, ctx));
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

JoinSpec Spec(JoinType type, int64_t partitions) {
  JoinSpec spec;
  spec.type = type;
  spec.left_keys = {"k"};
  spec.num_partitions = partitions;
  return spec;
}

TEST(HashJoinExchange, FullOuterMatchesNestedLoops) {
  auto left = Blocks(1, 6, 300, 50, "a", 0);
  auto right = Blocks(2, 3, 100, 80, "b", 100000);
  Harness h;
  ASSIGN_OK(auto exchange, MakeHashJoinExchange(Spec(JoinType::kFullOuter, 4), {}));
  ASSIGN_OK(auto out, RunJoin(*exchange, left, right, h.ctx));
  EXPECT_GE(out.size(), 4u);
  EXPECT_EQ(Triples(out), FullOuterByHand(Rows(left, "a"), Rows(right, "b")));
  EXPECT_EQ(h.reservation.size(), 0);
}

TEST(HashJoinExchange, SpillsUnderATinyReservationWithTheSameResult) {
  auto left = Blocks(3, 8, 2000, 300, "a", 0);
  auto right = Blocks(4, 4, 500, 400, "b", 100000);
  Harness h(/*cap=*/4096);
  ASSIGN_OK(auto exchange, MakeHashJoinExchange(Spec(JoinType::kFullOuter, 3), {}));
  ASSIGN_OK(auto out, RunJoin(*exchange, left, right, h.ctx));
  EXPECT_GT(exchange->spilled_bytes(), 0);
  EXPECT_EQ(Triples(out), FullOuterByHand(Rows(left, "a"), Rows(right, "b")));
  EXPECT_EQ(h.reservation.size(), 0);
}

/// The rows of `all` (a full outer join by hand) that a join of `type` outputs, as
/// (k, a, b) triples (inner, left/right/full outer).
std::vector<Triple> OfType(const std::vector<Triple>& all, JoinType type) {
  std::vector<Triple> want;
  for (const auto& t : all) {
    const bool has_l = std::get<1>(t) >= 0, has_r = std::get<2>(t) >= 0;
    if (type == JoinType::kInner && !(has_l && has_r)) continue;
    if (type == JoinType::kLeftOuter && !has_l) continue;
    if (type == JoinType::kRightOuter && !has_r) continue;
    want.push_back(t);
  }
  return want;
}

/// Output triples with right outer's column order (a, k, b) put back as (k, a, b).
std::vector<Triple> TriplesOf(const std::vector<Block>& blocks, JoinType type) {
  if (type != JoinType::kRightOuter) return Triples(blocks);
  std::vector<Block> reordered;
  for (const auto& b : blocks) reordered.push_back(b->SelectColumns({1, 0, 2}).ValueOrDie());
  return Triples(reordered);
}

/// Like Blocks, with a fraction `hot` of the rows on key `hot_key`.
std::vector<Block> SkewedBlocks(uint64_t seed, int blocks, int64_t rows, int64_t keys, double hot,
                                int64_t hot_key, const char* payload, int64_t base) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unit(0, 1);
  auto schema = arrow::schema({arrow::field("k", arrow::int64()), arrow::field(payload, arrow::int64())});
  std::vector<Block> out;
  int64_t id = base;
  for (int b = 0; b < blocks; ++b) {
    arrow::Int64Builder k, v;
    for (int64_t i = 0; i < rows; ++i) {
      const double u = unit(rng);
      if (u < hot) (void)k.Append(hot_key);
      else if (u < hot + 0.05) (void)k.AppendNull();
      else (void)k.Append(static_cast<int64_t>(rng() % keys));
      (void)v.Append(id++);
    }
    out.push_back(arrow::RecordBatch::Make(schema, rows, {k.Finish().ValueOrDie(), v.Finish().ValueOrDie()}));
  }
  return out;
}

// A reduce share of 8 KiB (a 64 KiB memory limit, one reduce at a time) against
// partitions of tens of KiB: every partition is re-partitioned (grace), under a
// reservation so small that the sub-partitions spill too.
ExchangeOptions TinyShare() {
  ExchangeOptions options;
  options.memory_limit = 64 << 10;
  options.parallelism = 1;
  return options;
}

TEST(HashJoinExchange, GraceSubPartitionsUniformKeysWithTheSameResult) {
  auto left = Blocks(11, 8, 2000, 3000, "a", 0);
  auto right = Blocks(12, 4, 1000, 4000, "b", 100000);
  const auto all = FullOuterByHand(Rows(left, "a"), Rows(right, "b"));
  for (auto type : {JoinType::kInner, JoinType::kLeftOuter, JoinType::kRightOuter, JoinType::kFullOuter}) {
    Harness h(/*cap=*/16 << 10);
    ASSIGN_OK(auto exchange, MakeHashJoinExchange(Spec(type, 2), TinyShare()));
    ASSIGN_OK(auto out, RunJoin(*exchange, left, right, h.ctx));
    EXPECT_GT(exchange->regrouped_partitions(), 0) << JoinTypeName(type);
    EXPECT_GT(exchange->spilled_bytes(), 0) << JoinTypeName(type);
    EXPECT_EQ(TriplesOf(out, type), OfType(all, type)) << JoinTypeName(type);
    EXPECT_EQ(h.reservation.size(), 0) << JoinTypeName(type);
  }
}

TEST(HashJoinExchange, GraceHotKeyStreamsTheProbeSideWithTheSameResult) {
  // Key 7 is 60% of the right side and a few rows of the left: no hash splits it, so
  // its sub-partition is joined with the right side streamed in chunks against the left
  // rows (inner, right outer, right semi/anti) or by block nested loops (left and full
  // outer, which need to know every left row's matches: the right side in chunks, the
  // left rows' matches marked across them).
  auto left = SkewedBlocks(13, 6, 1500, 2000, 0.002, 7, "a", 0);
  auto right = SkewedBlocks(14, 4, 2000, 2000, 0.6, 7, "b", 100000);
  const auto all = FullOuterByHand(Rows(left, "a"), Rows(right, "b"));
  for (auto type : {JoinType::kInner, JoinType::kRightOuter, JoinType::kLeftOuter, JoinType::kFullOuter}) {
    Harness h(/*cap=*/16 << 10);
    ASSIGN_OK(auto exchange, MakeHashJoinExchange(Spec(type, 2), TinyShare()));
    ASSIGN_OK(auto out, RunJoin(*exchange, left, right, h.ctx));
    EXPECT_GT(exchange->regrouped_partitions(), 0) << JoinTypeName(type);
    // The hot key's right rows are streamed where the type allows; full outer never is.
    if (type == JoinType::kInner || type == JoinType::kRightOuter) {
      EXPECT_GT(exchange->streamed_partitions(), 0) << JoinTypeName(type);
    } else {
      EXPECT_GT(exchange->chunked_partitions(), 0) << JoinTypeName(type);
    }
    EXPECT_EQ(TriplesOf(out, type), OfType(all, type)) << JoinTypeName(type);
    EXPECT_EQ(h.reservation.size(), 0) << JoinTypeName(type);
  }
  // Semi and anti joins on the hot side: the right rows, each once.
  for (auto type : {JoinType::kRightSemi, JoinType::kRightAnti}) {
    Harness h(/*cap=*/16 << 10);
    ASSIGN_OK(auto exchange, MakeHashJoinExchange(Spec(type, 2), TinyShare()));
    ASSIGN_OK(auto out, RunJoin(*exchange, left, right, h.ctx));
    EXPECT_GT(exchange->streamed_partitions(), 0) << JoinTypeName(type);
    std::set<int64_t> left_keys;
    for (const auto& [k, a] : Rows(left, "a")) if (k >= 0) left_keys.insert(k);
    std::vector<std::pair<int64_t, int64_t>> want;
    for (const auto& row : Rows(right, "b")) {
      const bool matched = row.first >= 0 && left_keys.count(row.first) > 0;
      if (matched == (type == JoinType::kRightSemi)) want.push_back(row);
    }
    std::sort(want.begin(), want.end());
    std::vector<std::pair<int64_t, int64_t>> got;
    for (const auto& b : out) for (const auto& row : Rows({b}, "b")) got.push_back(row);
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, want) << JoinTypeName(type);
    EXPECT_EQ(h.reservation.size(), 0) << JoinTypeName(type);
  }
}

/// The rows (k, payload) of `side` that a semi (`semi`) or anti join with `other` outputs.
std::vector<std::pair<int64_t, int64_t>> SemiOrAntiByHand(const std::vector<std::pair<int64_t, int64_t>>& side,
                                                          const std::vector<std::pair<int64_t, int64_t>>& other,
                                                          bool semi) {
  std::set<int64_t> keys;
  for (const auto& [k, v] : other) if (k >= 0) keys.insert(k);
  std::vector<std::pair<int64_t, int64_t>> want;
  for (const auto& row : side) {
    const bool matched = row.first >= 0 && keys.count(row.first) > 0;
    if (matched == semi) want.push_back(row);
  }
  std::sort(want.begin(), want.end());
  return want;
}

TEST(HashJoinExchange, KeyHotOnBothSidesJoinsInChunksWithinTheCap) {
  // Key 7 is 40% of both sides (about 25 KiB a side, three times the 8 KiB share): no
  // hash splits it and neither side fits, so its sub-partition is joined by block nested
  // loops over chunks of both sides, every join type exact, the reservation never past
  // the cap (the memory limit).
  auto left = SkewedBlocks(15, 4, 1000, 500, 0.4, 7, "a", 0);
  auto right = SkewedBlocks(16, 4, 1000, 500, 0.4, 7, "b", 100000);
  const auto all = FullOuterByHand(Rows(left, "a"), Rows(right, "b"));
  const ExchangeOptions options = TinyShare();
  for (auto type : {JoinType::kInner, JoinType::kLeftOuter, JoinType::kRightOuter, JoinType::kFullOuter,
                    JoinType::kLeftSemi, JoinType::kLeftAnti, JoinType::kRightSemi, JoinType::kRightAnti}) {
    Harness h(/*cap=*/options.memory_limit);
    ASSIGN_OK(auto exchange, MakeHashJoinExchange(Spec(type, 2), options));
    ASSIGN_OK(auto out, RunJoin(*exchange, left, right, h.ctx));
    EXPECT_GT(exchange->regrouped_partitions(), 0) << JoinTypeName(type);
    EXPECT_GT(exchange->chunked_partitions(), 0) << JoinTypeName(type);
    EXPECT_GT(exchange->spilled_bytes(), 0) << JoinTypeName(type);
    if (type == JoinType::kLeftSemi || type == JoinType::kLeftAnti) {
      std::vector<std::pair<int64_t, int64_t>> got;
      for (const auto& b : out) for (const auto& row : Rows({b}, "a")) got.push_back(row);
      std::sort(got.begin(), got.end());
      EXPECT_EQ(got, SemiOrAntiByHand(Rows(left, "a"), Rows(right, "b"), type == JoinType::kLeftSemi))
          << JoinTypeName(type);
    } else if (type == JoinType::kRightSemi || type == JoinType::kRightAnti) {
      std::vector<std::pair<int64_t, int64_t>> got;
      for (const auto& b : out) for (const auto& row : Rows({b}, "b")) got.push_back(row);
      std::sort(got.begin(), got.end());
      EXPECT_EQ(got, SemiOrAntiByHand(Rows(right, "b"), Rows(left, "a"), type == JoinType::kRightSemi))
          << JoinTypeName(type);
    } else {
      EXPECT_EQ(TriplesOf(out, type), OfType(all, type)) << JoinTypeName(type);
    }
    EXPECT_LE(h.reservation.peak(), options.memory_limit) << JoinTypeName(type);
    EXPECT_EQ(h.reservation.size(), 0) << JoinTypeName(type);
    EXPECT_TRUE(fs::is_empty(h.spill->path())) << JoinTypeName(type);
  }
}

TEST(HashJoinExchange, EitherSideBuildsWithTheSameOutput) {
  // Inner and semi/anti from both build sides: a small left builds, a small right builds.
  auto small = Blocks(5, 1, 40, 20, "a", 0);
  auto large = Blocks(6, 1, 400, 20, "b", 1000);
  auto l = small[0], r = large[0];
  for (auto type : {JoinType::kInner, JoinType::kLeftOuter, JoinType::kRightOuter, JoinType::kFullOuter}) {
    JoinSpec spec = Spec(type, 1);
    ASSERT_TRUE(ValidateJoin(spec, l->schema(), r->schema()).ok());
    bool built_left = false;
    ASSIGN_OK(auto out, JoinPartition(l, r, spec, arrow::default_memory_pool(), &built_left));
    EXPECT_TRUE(built_left);
    auto all = FullOuterByHand(Rows(small, "a"), Rows(large, "b"));
    std::vector<Triple> want;
    for (const auto& t : all) {
      const bool has_l = std::get<1>(t) >= 0, has_r = std::get<2>(t) >= 0;
      if (type == JoinType::kInner && !(has_l && has_r)) continue;
      if (type == JoinType::kLeftOuter && !has_l) continue;
      if (type == JoinType::kRightOuter && !has_r) continue;
      want.push_back(t);
    }
    if (type == JoinType::kRightOuter) {
      // Right outer outputs the left non-key columns, then the right columns.
      ASSERT_EQ(out->schema()->field_names(), (std::vector<std::string>{"a", "k", "b"}));
      ASSIGN_OK(out, out->SelectColumns({1, 0, 2}));
    }
    EXPECT_EQ(Triples({out}), want) << JoinTypeName(type);
  }
  for (auto type : {JoinType::kLeftSemi, JoinType::kLeftAnti, JoinType::kRightSemi, JoinType::kRightAnti}) {
    JoinSpec spec = Spec(type, 1);
    ASSERT_TRUE(ValidateJoin(spec, l->schema(), r->schema()).ok());
    ASSIGN_OK(auto swapped, JoinPartition(l, r, spec, arrow::default_memory_pool()));
    // The same join with the large side on the left (no swap), sides exchanged back.
    JoinSpec mirrored = spec;
    mirrored.type = type == JoinType::kLeftSemi ? JoinType::kRightSemi
                    : type == JoinType::kRightSemi ? JoinType::kLeftSemi
                    : type == JoinType::kLeftAnti ? JoinType::kRightAnti : JoinType::kLeftAnti;
    bool built_left = true;
    ASSIGN_OK(auto direct, JoinPartition(r, l, mirrored, arrow::default_memory_pool(), &built_left));
    EXPECT_FALSE(built_left);
    auto sorted_rows = [](const Block& b) {
      auto rows = Rows({b}, b->schema()->field(1)->name().c_str());
      std::sort(rows.begin(), rows.end());
      return rows;
    };
    EXPECT_EQ(sorted_rows(swapped), sorted_rows(direct)) << JoinTypeName(type);
    EXPECT_GT(swapped->num_rows(), 0) << JoinTypeName(type);
  }
}

TEST(HashJoinExchange, MissingKeyAndMismatchedTypesNameTheColumn) {
  auto left = Blocks(7, 1, 10, 5, "a", 0);
  JoinSpec spec = Spec(JoinType::kInner, 2);
  spec.right_keys = {"j"};
  auto right = arrow::RecordBatch::Make(arrow::schema({arrow::field("j", arrow::int32())}), 0,
                                        {arrow::MakeEmptyArray(arrow::int32()).ValueOrDie()});
  auto st = ValidateJoin(spec, left[0]->schema(), right->schema());
  EXPECT_TRUE(st.IsTypeError()) << st.ToString();
  EXPECT_NE(st.message().find("'k' is int64 on the left but 'j' is int32"), std::string::npos) << st.ToString();
  Harness h;
  ASSIGN_OK(auto exchange, MakeHashJoinExchange(Spec(JoinType::kInner, 2), {}));
  // An empty block without the key adds nothing; one with rows is an error naming it.
  EXPECT_TRUE(exchange->MapInput(1, 0, right, h.ctx).ok());
  arrow::Int32Builder values;
  ASSERT_TRUE(values.AppendValues({1, 2}).ok());
  auto rows = arrow::RecordBatch::Make(right->schema(), 2, {values.Finish().ValueOrDie()});
  auto missing = exchange->MapInput(1, 1, rows, h.ctx);
  EXPECT_TRUE(missing.IsKeyError()) << missing.ToString();
  EXPECT_NE(missing.message().find("right key column 'k'"), std::string::npos) << missing.ToString();
}

TEST(HashJoinExchange, ParsesRayJoinTypes) {
  for (const char* name : {"inner", "left_outer", "right_outer", "full_outer", "left_semi", "right_semi",
                           "left_anti", "right_anti"}) {
    ASSIGN_OK(auto type, ParseJoinType(name));
    EXPECT_EQ(JoinTypeName(type), name);
  }
  auto bad = ParseJoinType("outer");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'outer'"), std::string::npos);
}

}  // namespace
}  // namespace millstream::testing
