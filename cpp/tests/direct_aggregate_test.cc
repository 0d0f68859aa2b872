#include <random>

#include <arrow/acero/exec_plan.h>
#include <arrow/acero/options.h>
#include <arrow/json/from_string.h>

#include "shuffle/direct_aggregate.h"
#include "test_util.h"

namespace millstream::testing {
namespace {

namespace cp = arrow::compute;

/// Arrow's own hash aggregation (an Acero aggregate node), the reference.
std::shared_ptr<arrow::Table> AceroAggregate(const Block& batch, const std::vector<std::string>& keys,
                                             std::vector<cp::Aggregate> aggregates) {
  auto table = arrow::Table::FromRecordBatches({batch}).ValueOrDie();
  std::vector<arrow::FieldRef> key_refs(keys.begin(), keys.end());
  auto plan = arrow::acero::Declaration::Sequence(
      {{"table_source", arrow::acero::TableSourceNodeOptions(table)},
       {"aggregate", arrow::acero::AggregateNodeOptions(std::move(aggregates), key_refs)}});
  return arrow::acero::DeclarationToTable(std::move(plan), /*use_threads=*/false).ValueOrDie();
}

/// Rows ordered by the keys (nulls last), combined into one chunk each.
std::shared_ptr<arrow::Table> ByKeys(const std::shared_ptr<arrow::Table>& table, const std::vector<std::string>& keys) {
  std::vector<cp::SortKey> sort_keys(keys.begin(), keys.end());
  auto indices = cp::SortIndices(table, cp::SortOptions(sort_keys)).ValueOrDie();
  return cp::Take(table, indices).ValueOrDie().table()->CombineChunks().ValueOrDie();
}

/// An array of `type` with `n` values drawn from [lo, lo + span) and a share of nulls.
std::shared_ptr<arrow::Array> Numbers(const std::shared_ptr<arrow::DataType>& type, int64_t n, int64_t lo,
                                      int64_t span, double null_share, std::mt19937_64& rng) {
  std::unique_ptr<arrow::ArrayBuilder> builder;
  EXPECT_TRUE(arrow::MakeBuilder(arrow::default_memory_pool(), type, &builder).ok());
  std::uniform_real_distribution<double> unit(0, 1);
  for (int64_t i = 0; i < n; ++i) {
    if (unit(rng) < null_share) {
      EXPECT_TRUE(builder->AppendNull().ok());
      continue;
    }
    int64_t v = lo + static_cast<int64_t>(rng() % static_cast<uint64_t>(span));
    std::shared_ptr<arrow::Scalar> scalar;
    if (arrow::is_floating(type->id())) {
      scalar = arrow::MakeScalar(type, static_cast<double>(v) / 4.0).ValueOrDie();
    } else {
      scalar = arrow::MakeScalar(type, v).ValueOrDie();
    }
    EXPECT_TRUE(builder->AppendScalar(*scalar).ok());
  }
  return builder->Finish().ValueOrDie();
}

std::shared_ptr<cp::FunctionOptions> Skip(bool skip_nulls, uint32_t min_count) {
  return std::make_shared<cp::ScalarAggregateOptions>(skip_nulls, min_count);
}
std::shared_ptr<cp::FunctionOptions> Mode(cp::CountOptions::CountMode mode) {
  return std::make_shared<cp::CountOptions>(mode);
}

TEST(DirectAggregate, MatchesArrowsHashAggregation) {
  std::mt19937_64 rng(7);
  struct Case {
    std::vector<std::pair<std::shared_ptr<arrow::DataType>, std::pair<int64_t, int64_t>>> keys;  // type, (lo, span)
    double key_nulls;
  };
  const std::vector<Case> cases = {
      {{{arrow::int32(), {0, 6}}}, 0.0},
      {{{arrow::int8(), {-5, 9}}}, 0.1},
      {{{arrow::uint16(), {100, 40}}, {arrow::int64(), {1'000'000'000'000, 7}}}, 0.05},
      {{{arrow::int64(), {-3, 1}}}, 0.0},
  };
  const std::vector<std::shared_ptr<arrow::DataType>> value_types = {
      arrow::int8(), arrow::int32(), arrow::uint32(), arrow::int64(), arrow::uint64(), arrow::float32(),
      arrow::float64()};
  for (const auto& c : cases) {
    for (int64_t rows : {0, 1, 3000}) {
      arrow::FieldVector fields;
      arrow::ArrayVector columns;
      std::vector<std::string> keys;
      for (size_t k = 0; k < c.keys.size(); ++k) {
        keys.push_back("k" + std::to_string(k));
        fields.push_back(arrow::field(keys.back(), c.keys[k].first));
        columns.push_back(Numbers(c.keys[k].first, rows, c.keys[k].second.first, c.keys[k].second.second,
                                  c.key_nulls, rng));
      }
      std::vector<cp::Aggregate> aggregates{{"hash_count_all", nullptr, std::vector<arrow::FieldRef>{}, "n"}};
      for (size_t v = 0; v < value_types.size(); ++v) {
        const std::string name = "v" + std::to_string(v);
        fields.push_back(arrow::field(name, value_types[v]));
        columns.push_back(Numbers(value_types[v], rows, -60, 120, v % 2 ? 0.2 : 0.0, rng));
        aggregates.emplace_back("hash_sum", Skip(true, 1), name, name + "_sum");
        aggregates.emplace_back("hash_sum", Skip(false, 1), name, name + "_sum_nulls");
        aggregates.emplace_back("hash_sum", Skip(true, 0), name, name + "_sum0");
        aggregates.emplace_back("hash_count", Mode(cp::CountOptions::ONLY_VALID), name, name + "_valid");
        aggregates.emplace_back("hash_count", Mode(cp::CountOptions::ALL), name, name + "_all");
        aggregates.emplace_back("hash_count", Mode(cp::CountOptions::ONLY_NULL), name, name + "_null");
        if (arrow::is_integer(value_types[v]->id())) {
          aggregates.emplace_back("hash_min", Skip(true, 1), name, name + "_min");
          aggregates.emplace_back("hash_max", Skip(false, 1), name, name + "_max");
        }
      }
      auto batch = arrow::RecordBatch::Make(arrow::schema(fields), rows, columns);
      // Every row, then the rows a boolean selection with nulls keeps (the reference:
      // Acero over the filtered batch).
      auto selection = Numbers(arrow::int8(), rows, 0, 2, 0.2, rng);
      selection = cp::Cast(selection, arrow::boolean()).ValueOrDie().make_array();
      for (const arrow::Array* keep : std::vector<const arrow::Array*>{nullptr, selection.get()}) {
        Block kept = batch;
        if (keep) kept = cp::Filter(batch, selection).ValueOrDie().record_batch();
        auto direct = DirectAggregate(*batch, keys, aggregates, arrow::default_memory_pool(), keep).ValueOrDie();
        ASSERT_TRUE(direct.has_value());
        auto want = ByKeys(AceroAggregate(kept, keys, aggregates), keys);
        auto got = ByKeys(arrow::Table::FromRecordBatches({*direct}).ValueOrDie(), keys);
        // Same columns in Acero's order (aggregates, then keys).
        got = got->SelectColumns([&] {
                   std::vector<int> order;
                   for (const auto& field : want->schema()->fields()) order.push_back(got->schema()->GetFieldIndex(field->name()));
                   return order;
                 }())
                  .ValueOrDie();
        ASSERT_TRUE(got->schema()->Equals(*want->schema())) << got->schema()->ToString() << "\n" << want->schema()->ToString();
        EXPECT_TRUE(got->Equals(*want)) << "rows " << rows << (keep ? " selected" : "") << "\n"
                                        << got->ToString() << "\n" << want->ToString();
      }
    }
  }
}

TEST(DirectAggregate, RejectsASelectionOfAnotherTypeOrLength) {
  std::mt19937_64 rng(5);
  auto key = Numbers(arrow::int32(), 10, 0, 3, 0.0, rng);
  auto batch = arrow::RecordBatch::Make(arrow::schema({arrow::field("k", arrow::int32())}), 10, {key});
  std::vector<cp::Aggregate> count{{"hash_count_all", nullptr, std::vector<arrow::FieldRef>{}, "n"}};
  auto pool = arrow::default_memory_pool();
  auto ints = Numbers(arrow::int8(), 10, 0, 2, 0.0, rng);
  EXPECT_TRUE(DirectAggregate(*batch, {"k"}, count, pool, ints.get()).status().IsInvalid());
  auto short_mask = cp::Cast(ints->Slice(0, 9), arrow::boolean()).ValueOrDie().make_array();
  EXPECT_TRUE(DirectAggregate(*batch, {"k"}, count, pool, short_mask.get()).status().IsInvalid());
}

TEST(DirectAggregate, LeavesWideKeysAndOtherAggregatesToArrow) {
  std::mt19937_64 rng(3);
  auto wide = Numbers(arrow::int64(), 1000, 0, 1'000'000, 0.0, rng);
  auto narrow = Numbers(arrow::int32(), 1000, 0, 10, 0.0, rng);
  auto x = Numbers(arrow::float64(), 1000, 0, 100, 0.0, rng);
  auto batch = arrow::RecordBatch::Make(
      arrow::schema({arrow::field("wide", arrow::int64()), arrow::field("narrow", arrow::int32()),
                     arrow::field("x", arrow::float64())}),
      1000, {wide, narrow, x});
  std::vector<cp::Aggregate> sum{{"hash_sum", Skip(true, 1), "x", "s"}};
  auto pool = arrow::default_memory_pool();
  EXPECT_FALSE(DirectAggregate(*batch, {"wide"}, sum, pool).ValueOrDie().has_value());
  EXPECT_TRUE(DirectAggregate(*batch, {"narrow"}, sum, pool).ValueOrDie().has_value());
  // A float minimum (NaN rules), a mean, a string key: Arrow's kernels.
  std::vector<cp::Aggregate> min{{"hash_min", Skip(true, 1), "x", "m"}};
  EXPECT_FALSE(DirectAggregate(*batch, {"narrow"}, min, pool).ValueOrDie().has_value());
  std::vector<cp::Aggregate> mean{{"hash_mean", Skip(true, 1), "x", "m"}};
  EXPECT_FALSE(DirectAggregate(*batch, {"narrow"}, mean, pool).ValueOrDie().has_value());
  auto strings = arrow::RecordBatch::Make(arrow::schema({arrow::field("s", arrow::utf8()), arrow::field("x", arrow::float64())}),
                                          3, {arrow::json::ArrayFromJSONString(arrow::utf8(), R"(["a", "b", "a"])").ValueOrDie(),
                                              x->Slice(0, 3)});
  EXPECT_FALSE(DirectAggregate(*strings, {"s"}, sum, pool).ValueOrDie().has_value());
}

}  // namespace
}  // namespace millstream::testing
