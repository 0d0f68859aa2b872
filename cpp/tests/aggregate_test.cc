// The hash-aggregation exchange driven directly: Map every block from two threads,
// FinishMap, Reduce every partition, and the result compared with aggregates computed
// by hand over the rows.

#include <cmath>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <algorithm>
#include <thread>

#include "runtime/reservation.h"
#include "runtime/spill_file.h"
#include "shuffle/aggregate.h"
#include "test_util.h"

#include <arrow/compute/api.h>
#include <arrow/json/from_string.h>

namespace millstream::testing {
namespace {

using Kind = AggregateSpec::Kind;

/// Maps blocks from two threads, reduces every partition; all output blocks in order.
arrow::Result<std::vector<Block>> RunAggregate(Exchange& exchange, const std::vector<Block>& input, ExchangeContext& ctx) {
  arrow::Status statuses[2];
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = t; i < input.size(); i += 2) {
        auto st = exchange.Map(static_cast<int64_t>(i), input[i], ctx);
        if (!st.ok()) { statuses[t] = st; return; }
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

/// Blocks of k (int64 0..groups-1, 5% null), v (int64 -50..50, 10% null), d (double).
std::vector<Block> Blocks(uint64_t seed, int blocks, int64_t rows, int64_t groups) {
  std::mt19937_64 rng(seed);
  auto schema = arrow::schema({arrow::field("k", arrow::int64()), arrow::field("v", arrow::int64()),
                               arrow::field("d", arrow::float64())});
  std::vector<Block> out;
  for (int b = 0; b < blocks; ++b) {
    arrow::Int64Builder k, v;
    arrow::DoubleBuilder d;
    for (int64_t i = 0; i < rows; ++i) {
      if (rng() % 20 == 0) (void)k.AppendNull(); else (void)k.Append(static_cast<int64_t>(rng() % groups));
      if (rng() % 10 == 0) (void)v.AppendNull(); else (void)v.Append(static_cast<int64_t>(rng() % 101) - 50);
      (void)d.Append(static_cast<double>(rng() % 1000) / 7.0 + 1e6);
    }
    out.push_back(arrow::RecordBatch::Make(schema, rows, {k.Finish().ValueOrDie(), v.Finish().ValueOrDie(),
                                                          d.Finish().ValueOrDie()}));
  }
  return out;
}

struct Expected {
  int64_t rows = 0, values = 0, sum = 0;
  std::optional<int64_t> min, max;
  std::vector<double> d;
};

/// By hand: per key (nullopt: the null key).
std::map<std::optional<int64_t>, Expected> ByHand(const std::vector<Block>& blocks, bool keyed) {
  std::map<std::optional<int64_t>, Expected> out;
  for (const auto& block : blocks) {
    auto k = std::static_pointer_cast<arrow::Int64Array>(block->GetColumnByName("k"));
    auto v = std::static_pointer_cast<arrow::Int64Array>(block->GetColumnByName("v"));
    auto d = std::static_pointer_cast<arrow::DoubleArray>(block->GetColumnByName("d"));
    for (int64_t i = 0; i < block->num_rows(); ++i) {
      std::optional<int64_t> key;
      if (keyed && k->IsValid(i)) key = k->Value(i);
      auto& e = out[key];
      e.rows += 1;
      e.d.push_back(d->Value(i));
      if (v->IsNull(i)) continue;
      int64_t x = v->Value(i);
      e.values += 1;
      e.sum += x;
      e.min = e.min ? std::min(*e.min, x) : x;
      e.max = e.max ? std::max(*e.max, x) : x;
    }
  }
  return out;
}

double Std(const std::vector<double>& xs, int64_t ddof) {
  double mean = 0;
  for (double x : xs) mean += x;
  mean /= static_cast<double>(xs.size());
  double m2 = 0;
  for (double x : xs) m2 += (x - mean) * (x - mean);
  return std::sqrt(m2 / static_cast<double>(static_cast<int64_t>(xs.size()) - ddof));
}

std::vector<AggregateSpec> AllAggregates() {
  return {{Kind::kCount, "", true, 1, "count()"},   {Kind::kCount, "v", true, 1, "count(v)"},
          {Kind::kSum, "v", true, 1, "sum(v)"},     {Kind::kMin, "v", true, 1, "min(v)"},
          {Kind::kMax, "v", true, 1, "max(v)"},     {Kind::kMean, "v", true, 1, "mean(v)"},
          {Kind::kStd, "d", true, 1, "std(d)"},     {Kind::kStd, "d", true, 0, "std0(d)"},
          {Kind::kAbsMax, "v", true, 1, "abs_max(v)"}};
}

void CheckAgainstHand(const std::vector<Block>& input, const std::vector<Block>& output, bool keyed) {
  auto expected = ByHand(input, keyed);
  int64_t rows = 0;
  for (const auto& block : output) {
    rows += block->num_rows();
    auto col = [&](const char* name) { return block->GetColumnByName(name); };
    ASSERT_EQ(keyed, col("k") != nullptr) << block->schema()->ToString();
    for (int64_t i = 0; i < block->num_rows(); ++i) {
      std::optional<int64_t> key;
      if (keyed && col("k")->IsValid(i)) key = std::static_pointer_cast<arrow::Int64Array>(col("k"))->Value(i);
      ASSERT_TRUE(expected.count(key)) << "unexpected group";
      const Expected& e = expected[key];
      auto i64 = [&](const char* name) { return std::static_pointer_cast<arrow::Int64Array>(col(name))->Value(i); };
      auto f64 = [&](const char* name) { return std::static_pointer_cast<arrow::DoubleArray>(col(name))->Value(i); };
      EXPECT_EQ(i64("count()"), e.rows);
      EXPECT_EQ(i64("count(v)"), e.values);
      if (e.values == 0) {
        EXPECT_TRUE(col("sum(v)")->IsNull(i));
        EXPECT_TRUE(col("mean(v)")->IsNull(i));
      } else {
        EXPECT_EQ(i64("sum(v)"), e.sum);
        EXPECT_EQ(i64("min(v)"), *e.min);
        EXPECT_EQ(i64("max(v)"), *e.max);
        EXPECT_EQ(i64("abs_max(v)"), std::max(std::abs(*e.min), std::abs(*e.max)));
        EXPECT_NEAR(f64("mean(v)"), static_cast<double>(e.sum) / static_cast<double>(e.values), 1e-9);
      }
      if (e.d.size() > 1) EXPECT_NEAR(f64("std(d)"), Std(e.d, 1), 1e-6);
      EXPECT_NEAR(f64("std0(d)"), Std(e.d, 0), 1e-6);
    }
  }
  EXPECT_EQ(rows, static_cast<int64_t>(expected.size()));
}

TEST(AggregateExchange, GroupedMatchesByHand) {
  Harness h;
  auto input = Blocks(1, 12, 400, 37);
  ASSIGN_OK(auto exchange, MakeAggregateExchange({"k"}, AllAggregates(), {}));
  EXPECT_EQ(exchange->name(), "Aggregate");
  auto output = RunAggregate(*exchange, input, h.ctx);
  ASSERT_TRUE(output.ok()) << output.status().ToString();
  CheckAgainstHand(input, *output, true);
  EXPECT_EQ(exchange->held_bytes(), 0);
  EXPECT_EQ(h.reservation.size(), 0);
}

TEST(AggregateExchange, PartialRowsMadeUpstreamMergeAsTheExchangeWouldMakeThem) {
  // The partial aggregation run on its own (as a read task runs it), and the exchange
  // only merging its rows: the same answers by hand, keyed and whole-dataset, with a
  // filter on the partial side (the rows with v >= 0 or a null v dropped).
  for (bool keyed : {true, false}) {
    Harness h;
    auto input = Blocks(7, 10, 500, 23);
    std::vector<std::string> keys = keyed ? std::vector<std::string>{"k"} : std::vector<std::string>{};
    auto filter = arrow::compute::less(arrow::compute::field_ref("v"), arrow::compute::literal(int64_t{0}));
    ASSIGN_OK(auto partial, MakePartialAggregation(keys, AllAggregates(), filter));
    std::vector<Block> partials, kept;
    for (const auto& block : input) {
      ASSIGN_OK(auto rows, partial->Apply(block, arrow::default_memory_pool()));
      EXPECT_LE(rows->num_rows(), keyed ? 24 : 1);
      partials.push_back(rows);
      ASSIGN_OK(auto mask, arrow::compute::CallFunction("less", {block->GetColumnByName("v"),
                                                                 arrow::Datum(int64_t{0})}));
      ASSIGN_OK(auto filtered, arrow::compute::Filter(block, mask));
      kept.push_back(filtered.record_batch());
    }
    ASSIGN_OK(auto exchange, MakeAggregateExchange(keys, AllAggregates(), {}, std::nullopt,
                                                   /*input_is_partial=*/true));
    auto output = RunAggregate(*exchange, partials, h.ctx);
    ASSERT_TRUE(output.ok()) << output.status().ToString();
    CheckAgainstHand(kept, *output, keyed);
  }
  // The filter is the partial side's: a merge given one refuses it.
  auto filter = arrow::compute::less(arrow::compute::field_ref("v"), arrow::compute::literal(int64_t{0}));
  EXPECT_TRUE(MakeAggregateExchange({"k"}, AllAggregates(), {}, filter, true).status().IsInvalid());
  // A missing column is named by the partial step too.
  ASSIGN_OK(auto partial, MakePartialAggregation({"nope"}, AllAggregates()));
  auto missing = partial->Apply(Blocks(1, 1, 10, 3)[0], arrow::default_memory_pool());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("'nope'"), std::string::npos) << missing.status().ToString();
}

TEST(AggregateExchange, ManyGroupsSpillUnderATinyReservation) {
  Harness h(/*cap=*/0);
  auto input = Blocks(2, 8, 5000, 20000);
  ExchangeOptions options;
  options.num_partitions = 4;
  ASSIGN_OK(auto exchange, MakeAggregateExchange({"k"}, AllAggregates(), options));
  auto output = RunAggregate(*exchange, input, h.ctx);
  ASSERT_TRUE(output.ok()) << output.status().ToString();
  EXPECT_GT(exchange->spilled_bytes(), 0);
  CheckAgainstHand(input, *output, true);
  EXPECT_EQ(exchange->held_bytes(), 0);
}

TEST(AggregateExchange, WholeDatasetIsOneRowAndEmptyInputNone) {
  Harness h;
  auto input = Blocks(3, 5, 300, 4);
  ASSIGN_OK(auto exchange, MakeAggregateExchange({}, AllAggregates(), {}));
  auto output = RunAggregate(*exchange, input, h.ctx);
  ASSERT_TRUE(output.ok()) << output.status().ToString();
  ASSERT_EQ(output->size(), 1u);
  EXPECT_EQ((*output)[0]->num_rows(), 1);
  CheckAgainstHand(input, *output, false);

  ASSIGN_OK(auto empty, MakeAggregateExchange({}, AllAggregates(), {}));
  auto none = RunAggregate(*empty, {}, h.ctx);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST(AggregateExchange, IgnoreNullsFalseMakesAGroupWithANullNull) {
  Harness h;
  auto schema = arrow::schema({arrow::field("k", arrow::utf8()), arrow::field("v", arrow::int64())});
  auto block = arrow::RecordBatch::FromStructArray(
                   arrow::json::ArrayFromJSONString(arrow::struct_(schema->fields()),
                                                    R"([{"k":"a","v":1},{"k":"a","v":null},{"k":"b","v":2}])")
                       .ValueOrDie())
                   .ValueOrDie();
  std::vector<AggregateSpec> aggs = {{Kind::kSum, "v", false, 1, "sum(v)"}, {Kind::kCount, "v", false, 1, "count(v)"},
                                     {Kind::kStd, "v", false, 1, "std(v)"}};
  ASSIGN_OK(auto exchange, MakeAggregateExchange({"k"}, aggs, {}));
  auto output = RunAggregate(*exchange, {block, block->Slice(2)}, h.ctx);
  ASSERT_TRUE(output.ok()) << output.status().ToString();
  std::map<std::string, std::pair<std::optional<int64_t>, int64_t>> got;
  for (const auto& b : *output) {
    auto k = std::static_pointer_cast<arrow::StringArray>(b->GetColumnByName("k"));
    auto s = std::static_pointer_cast<arrow::Int64Array>(b->GetColumnByName("sum(v)"));
    auto c = std::static_pointer_cast<arrow::Int64Array>(b->GetColumnByName("count(v)"));
    for (int64_t i = 0; i < b->num_rows(); ++i) {
      got[k->GetString(i)] = {s->IsNull(i) ? std::nullopt : std::optional<int64_t>(s->Value(i)), c->Value(i)};
      if (k->GetString(i) == "a") EXPECT_TRUE(b->GetColumnByName("std(v)")->IsNull(i));
    }
  }
  EXPECT_EQ(got["a"].first, std::nullopt);
  EXPECT_EQ(got["a"].second, 2);
  EXPECT_EQ(got["b"].first, std::optional<int64_t>(4));
  EXPECT_EQ(got["b"].second, 2);
}

TEST(AggregateExchange, QuantileUniqueCountDistinctMergeAcrossBlocks) {
  Harness h;
  auto input = Blocks(11, 6, 400, 5);
  AggregateSpec median{Kind::kQuantile, "v", true, 1, "quantile(v)"};
  AggregateSpec q90{Kind::kQuantile, "v", true, 1, "q90", 0.9};
  std::vector<AggregateSpec> aggs = {median, q90, {Kind::kUnique, "v", true, 1, "unique(v)"},
                                     {Kind::kCountDistinct, "v", true, 1, "count_distinct(v)"},
                                     {Kind::kCountDistinct, "v", false, 1, "with_null"}};
  ASSIGN_OK(auto exchange, MakeAggregateExchange({"k"}, aggs, {}));
  auto output = RunAggregate(*exchange, input, h.ctx);
  ASSERT_TRUE(output.ok()) << output.status().ToString();
  // By hand: every value of each group (nullopt: null).
  std::map<std::optional<int64_t>, std::vector<std::optional<int64_t>>> values;
  for (const auto& block : input) {
    auto k = std::static_pointer_cast<arrow::Int64Array>(block->GetColumnByName("k"));
    auto v = std::static_pointer_cast<arrow::Int64Array>(block->GetColumnByName("v"));
    for (int64_t i = 0; i < block->num_rows(); ++i) {
      values[k->IsValid(i) ? std::optional<int64_t>(k->Value(i)) : std::nullopt].push_back(
          v->IsValid(i) ? std::optional<int64_t>(v->Value(i)) : std::nullopt);
    }
  }
  auto quantile = [](std::vector<double> xs, double q) {
    std::sort(xs.begin(), xs.end());
    double k = static_cast<double>(xs.size() - 1) * q, f = std::floor(k), c = std::ceil(k);
    if (f == c) return xs[static_cast<size_t>(k)];
    return std::round((xs[static_cast<size_t>(f)] * (c - k) + xs[static_cast<size_t>(c)] * (k - f)) * 1e5) / 1e5;
  };
  size_t groups = 0;
  for (const auto& b : *output) {
    auto k = std::static_pointer_cast<arrow::Int64Array>(b->GetColumnByName("k"));
    auto med = std::static_pointer_cast<arrow::DoubleArray>(b->GetColumnByName("quantile(v)"));
    auto p90 = std::static_pointer_cast<arrow::DoubleArray>(b->GetColumnByName("q90"));
    auto uniq = std::static_pointer_cast<arrow::ListArray>(b->GetColumnByName("unique(v)"));
    auto cd = std::static_pointer_cast<arrow::Int64Array>(b->GetColumnByName("count_distinct(v)"));
    auto cdn = std::static_pointer_cast<arrow::Int64Array>(b->GetColumnByName("with_null"));
    for (int64_t i = 0; i < b->num_rows(); ++i, ++groups) {
      const auto& vs = values.at(k->IsValid(i) ? std::optional<int64_t>(k->Value(i)) : std::nullopt);
      std::vector<double> xs;
      std::set<int64_t> distinct;
      bool has_null = false;
      for (const auto& v : vs) {
        if (!v) { has_null = true; continue; }
        xs.push_back(static_cast<double>(*v));
        distinct.insert(*v);
      }
      EXPECT_NEAR(med->Value(i), quantile(xs, 0.5), 1e-9);
      EXPECT_NEAR(p90->Value(i), quantile(xs, 0.9), 1e-9);
      EXPECT_EQ(cd->Value(i), static_cast<int64_t>(distinct.size()));
      EXPECT_EQ(cdn->Value(i), static_cast<int64_t>(distinct.size()) + (has_null ? 1 : 0));
      auto list = std::static_pointer_cast<arrow::Int64Array>(uniq->value_slice(i));
      std::set<int64_t> got;
      for (int64_t j = 0; j < list->length(); ++j) got.insert(list->Value(j));
      EXPECT_EQ(list->length(), static_cast<int64_t>(distinct.size()));
      EXPECT_EQ(got, distinct);
    }
  }
  EXPECT_EQ(groups, values.size());
  AggregateSpec bad{Kind::kQuantile, "v", true, 1, "q", 1.5};
  auto status = MakeAggregateExchange({"k"}, {bad}, {}).status();
  EXPECT_TRUE(status.IsInvalid());
  EXPECT_NE(status.message().find("q must be"), std::string::npos) << status.ToString();
}

TEST(AggregateExchange, MissingColumnsAndBadSpecsAreErrorsNamingThem) {
  Harness h;
  auto input = Blocks(4, 1, 10, 3);
  ASSIGN_OK(auto exchange, MakeAggregateExchange({"nope"}, {{Kind::kCount, "", true, 1, "count()"}}, {}));
  auto status = exchange->Map(0, input[0], h.ctx);
  EXPECT_TRUE(status.IsKeyError());
  EXPECT_NE(status.message().find("'nope'"), std::string::npos) << status.ToString();

  ASSIGN_OK(auto on_missing, MakeAggregateExchange({"k"}, {{Kind::kSum, "w", true, 1, "sum(w)"}}, {}));
  status = on_missing->Map(0, input[0], h.ctx);
  EXPECT_NE(status.message().find("'w'"), std::string::npos) << status.ToString();

  EXPECT_FALSE(MakeAggregateExchange({"k"}, {}, {}).ok());
  EXPECT_FALSE(MakeAggregateExchange({"k"}, {{Kind::kSum, "", true, 1, "sum()"}}, {}).ok());
  EXPECT_FALSE(MakeAggregateExchange({"k"}, {{Kind::kSum, "v", true, 1, "k"}}, {}).ok());
}

}  // namespace
}  // namespace millstream::testing
