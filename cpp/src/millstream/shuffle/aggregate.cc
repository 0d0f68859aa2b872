#include "shuffle/aggregate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <set>

#include <arrow/acero/exec_plan.h>
#include <arrow/acero/options.h>
#include <arrow/compute/api.h>
#include <arrow/compute/row/grouper.h>

#include "shuffle/bucket_exchange.h"
#include "shuffle/direct_aggregate.h"
#include "shuffle/key_hash.h"

namespace millstream {

namespace {

namespace cp = arrow::compute;
using Kind = AggregateSpec::Kind;

/// The key column of a whole-dataset aggregation (every row in one group).
constexpr const char* kAllKey = "__millstream_all";
/// Partial-state columns are named `__millstream_p<i>_<part>`, value columns
/// `__millstream_v<i>`.
std::string Partial(size_t i, const char* part) {
  return "__millstream_p" + std::to_string(i) + "_" + part;
}
std::string Value(size_t i) { return "__millstream_v" + std::to_string(i); }

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kCount: return "Count";
    case Kind::kSum: return "Sum";
    case Kind::kMin: return "Min";
    case Kind::kMax: return "Max";
    case Kind::kMean: return "Mean";
    case Kind::kStd: return "Std";
    case Kind::kAbsMax: return "AbsMax";
    case Kind::kQuantile: return "Quantile";
    case Kind::kUnique: return "Unique";
    case Kind::kCountDistinct: return "CountDistinct";
  }
  return "?";
}

/// The parts of an aggregate's partial state.
std::vector<const char*> Parts(const AggregateSpec& agg) {
  switch (agg.kind) {
    case Kind::kCount: return {"c"};
    case Kind::kSum: return {"s"};
    case Kind::kMin: return {"mn"};
    case Kind::kMax: return {"mx"};
    case Kind::kAbsMax: return {"mn", "mx"};
    case Kind::kMean: return {"s", "c"};
    case Kind::kStd: return {"n", "m", "v", "z"};
    case Kind::kQuantile: return {"l"};
    case Kind::kUnique:
    case Kind::kCountDistinct: return {"u"};
  }
  return {};
}

std::shared_ptr<cp::FunctionOptions> Skip(bool skip_nulls, uint32_t min_count) {
  return std::make_shared<cp::ScalarAggregateOptions>(skip_nulls, min_count);
}
std::shared_ptr<cp::FunctionOptions> CountMode(cp::CountOptions::CountMode mode) {
  return std::make_shared<cp::CountOptions>(mode);
}

/// Aggregates whose partial state is a list of values per group (merged outside Arrow's
/// hash kernels).
bool Collects(Kind kind) {
  return kind == Kind::kQuantile || kind == Kind::kUnique || kind == Kind::kCountDistinct;
}

/// `x` rounded to 5 decimals as Python's `round(x, 5)` does (correctly rounded, ties to
/// even), which is what Ray's Quantile returns when it interpolates.
double Round5(double x) {
  if (!std::isfinite(x)) return x;
  char buffer[400];
  std::snprintf(buffer, sizeof(buffer), "%.5f", x);
  return std::strtod(buffer, nullptr);
}

/// For the flattened values of a list column (one list per partial row): the row
/// indices, ordered by group (each group's values in input order) and each group's
/// [begin, end) in that order.
struct ByGroup {
  std::vector<int64_t> order;
  std::vector<int64_t> begin;  // size groups + 1
};

arrow::Result<ByGroup> GroupValues(const arrow::UInt32Array& parent_groups, uint32_t groups) {
  ByGroup out;
  out.begin.assign(static_cast<size_t>(groups) + 1, 0);
  const int64_t n = parent_groups.length();
  for (int64_t r = 0; r < n; ++r) out.begin[parent_groups.Value(r) + 1] += 1;
  for (uint32_t g = 0; g < groups; ++g) out.begin[g + 1] += out.begin[g];
  std::vector<int64_t> next(out.begin.begin(), out.begin.end() - 1);
  out.order.resize(n);
  for (int64_t r = 0; r < n; ++r) out.order[next[parent_groups.Value(r)]++] = r;
  return out;
}

/// `floats` with every NaN the same NaN and -0.0 as 0.0, so that distinct values are
/// those Python's set sees (Ray's Unique), not distinct bit patterns.
arrow::Result<std::shared_ptr<arrow::Array>> CanonicalFloats(const std::shared_ptr<arrow::Array>& floats,
                                                             cp::ExecContext* exec) {
  ARROW_ASSIGN_OR_RAISE(auto zero, arrow::MakeScalar(floats->type(), 0));
  ARROW_ASSIGN_OR_RAISE(auto nan, arrow::MakeScalar(floats->type(), std::numeric_limits<double>::quiet_NaN()));
  ARROW_ASSIGN_OR_RAISE(auto plus_zero, cp::CallFunction("add", {floats, zero}, exec));  // -0.0 + 0.0 = 0.0
  ARROW_ASSIGN_OR_RAISE(auto is_nan, cp::CallFunction("is_nan", {floats}, exec));
  ARROW_ASSIGN_OR_RAISE(auto out, cp::CallFunction("if_else", {is_nan, nan, plus_zero}, exec));
  return out.make_array();
}

/// Runs Arrow's hash aggregation of `batch` by `keys` on this thread.
arrow::Result<Block> HashAggregate(const Block& batch, const std::vector<std::string>& keys,
                                   std::vector<cp::Aggregate> aggregates, arrow::MemoryPool* pool) {
  ARROW_ASSIGN_OR_RAISE(auto table, arrow::Table::FromRecordBatches(batch->schema(), {batch}));
  std::vector<arrow::FieldRef> key_refs(keys.begin(), keys.end());
  arrow::acero::Declaration plan = arrow::acero::Declaration::Sequence(
      {{"table_source", arrow::acero::TableSourceNodeOptions(std::move(table))},
       {"aggregate", arrow::acero::AggregateNodeOptions(std::move(aggregates), std::move(key_refs))}});
  ARROW_ASSIGN_OR_RAISE(auto out, arrow::acero::DeclarationToTable(std::move(plan), /*use_threads=*/false, pool));
  return out->CombineChunksToBatch(pool);
}

/// `array` with a dictionary decoded to its values (other types unchanged).
arrow::Result<std::shared_ptr<arrow::Array>> Decoded(const std::shared_ptr<arrow::Array>& array,
                                                     cp::ExecContext* exec) {
  if (array->type_id() != arrow::Type::DICTIONARY) return array;
  const auto& type = static_cast<const arrow::DictionaryType&>(*array->type());
  ARROW_ASSIGN_OR_RAISE(auto datum, cp::Cast(array, type.value_type(), cp::CastOptions::Safe(), exec));
  return datum.make_array();
}

arrow::Result<std::shared_ptr<arrow::Array>> Column(const arrow::RecordBatch& batch, const std::string& name,
                                                    const char* role) {
  auto column = batch.GetColumnByName(name);
  if (!column) {
    return arrow::Status::KeyError("groupby: the ", role, " column '", name,
                                   "' is not in the data; its columns are ",
                                   batch.schema()->ToString());
  }
  return column;
}

/// The map side of a hash aggregation: a block into one partial row per group.
class PartialAggregator : public PartialAggregation {
 public:
  PartialAggregator(std::vector<std::string> keys, std::vector<AggregateSpec> aggs,
                    std::optional<cp::Expression> filter)
      : user_keys_(keys),
        keys_(keys.empty() ? std::vector<std::string>{kAllKey} : std::move(keys)),
        aggs_(std::move(aggs)),
        filter_(std::move(filter)) {}

  arrow::Result<Block> Apply(Block block, arrow::MemoryPool* pool) const override {
    std::shared_ptr<arrow::Array> keep;
    if (filter_) {
      ARROW_ASSIGN_OR_RAISE(keep, Selection(*block, pool));
      if (NeedsFilteredRows()) {
        // Their values are converted before they are grouped (a uint64 Quantile to int64
        // may fail): only the kept rows are.
        cp::ExecContext exec(pool);
        ARROW_ASSIGN_OR_RAISE(auto kept, cp::Filter(block, keep, cp::FilterOptions::Defaults(), &exec));
        block = kept.record_batch();
        keep.reset();
      }
    }
    return PartialRows(block, keep, pool);
  }

 private:
  /// Whether an aggregate is grouped by Arrow's hash kernels on converted values (lists,
  /// distinct values), so the filter is applied to the block first.
  bool NeedsFilteredRows() const {
    return std::any_of(aggs_.begin(), aggs_.end(), [](const AggregateSpec& agg) {
      return agg.kind == Kind::kQuantile || agg.kind == Kind::kUnique || agg.kind == Kind::kCountDistinct;
    });
  }

  /// The filter's value per row of `block`, as a boolean array.
  arrow::Result<std::shared_ptr<arrow::Array>> Selection(const arrow::RecordBatch& block,
                                                         arrow::MemoryPool* pool) const {
    cp::Expression bound;
    {
      std::lock_guard<std::mutex> lock(filter_mutex_);
      if (!bound_schema_ || !bound_schema_->Equals(*block.schema())) {
        auto bind = filter_->Bind(*block.schema());
        if (!bind.ok()) {
          return arrow::Status::Invalid("groupby filter ", filter_->ToString(), ": ", bind.status().message());
        }
        if (bind->type()->id() != arrow::Type::BOOL) {
          return arrow::Status::TypeError("groupby filter ", filter_->ToString(), " is of type ",
                                          bind->type()->ToString(), ", not boolean");
        }
        bound_ = *std::move(bind);
        bound_schema_ = block.schema();
      }
      bound = bound_;
    }
    cp::ExecContext exec(pool);
    ARROW_ASSIGN_OR_RAISE(auto mask, cp::ExecuteScalarExpression(bound, cp::ExecBatch(block), &exec));
    if (mask.is_scalar()) return arrow::MakeArrayFromScalar(*mask.scalar(), block.num_rows(), pool);
    return mask.make_array();
  }

  /// One row per group of `block` (of its rows where `keep` is true, if given): the keys
  /// (dictionaries decoded), then each aggregate's partial state.
  arrow::Result<Block> PartialRows(const Block& block, const std::shared_ptr<arrow::Array>& keep,
                                   arrow::MemoryPool* pool) const {
    cp::ExecContext exec(pool);
    arrow::FieldVector fields;
    arrow::ArrayVector columns;
    if (user_keys_.empty()) {
      ARROW_ASSIGN_OR_RAISE(auto zeros, arrow::MakeArrayFromScalar(arrow::Int8Scalar(0), block->num_rows(), pool));
      fields.push_back(arrow::field(kAllKey, arrow::int8()));
      columns.push_back(std::move(zeros));
    }
    // A dictionary key is grouped by its indices (one dictionary per block) and decoded
    // in the partial rows: a dictionary holding a value twice makes two partial rows of
    // one group, which the final aggregation merges.
    std::vector<std::shared_ptr<arrow::Array>> dictionaries;
    for (const auto& key : user_keys_) {
      ARROW_ASSIGN_OR_RAISE(auto column, Column(*block, key, "key"));
      std::shared_ptr<arrow::Array> dictionary;
      if (column->type_id() == arrow::Type::DICTIONARY) {
        const auto& encoded = static_cast<const arrow::DictionaryArray&>(*column);
        dictionary = encoded.dictionary();
        column = encoded.indices();
      }
      dictionaries.push_back(std::move(dictionary));
      fields.push_back(arrow::field(key, column->type()));
      columns.push_back(std::move(column));
    }
    std::vector<cp::Aggregate> aggregates;
    for (size_t i = 0; i < aggs_.size(); ++i) {
      const AggregateSpec& agg = aggs_[i];
      const bool skip = agg.ignore_nulls;
      if (agg.column.empty()) {
        aggregates.emplace_back("hash_count_all", nullptr, std::vector<arrow::FieldRef>{}, Partial(i, "c"));
        continue;
      }
      ARROW_ASSIGN_OR_RAISE(auto column, Column(*block, agg.column, KindName(agg.kind)));
      ARROW_ASSIGN_OR_RAISE(column, Decoded(column, &exec));
      if (agg.kind == Kind::kMean || agg.kind == Kind::kStd || agg.kind == Kind::kQuantile) {
        if (!arrow::is_numeric(column->type_id()) && !arrow::is_decimal(column->type_id()) &&
            column->type_id() != arrow::Type::BOOL && column->type_id() != arrow::Type::NA) {
          return arrow::Status::TypeError("groupby: ", KindName(agg.kind), " of column '", agg.column,
                                          "' needs numbers, but it is ", column->type()->ToString());
        }
        // Quantile keeps integers exact, as int64, and booleans as they are: Ray returns
        // the value at a whole rank as it is.
        const bool exact = agg.kind == Kind::kQuantile && arrow::is_integer(column->type_id());
        if (agg.kind != Kind::kQuantile || column->type_id() != arrow::Type::BOOL) {
          // To float64 as numpy converts (an int64 past 2^53 rounds to the nearest double);
          // to int64 exactly.
          ARROW_ASSIGN_OR_RAISE(auto cast, cp::Cast(column, exact ? arrow::int64() : arrow::float64(),
                                                    exact ? cp::CastOptions::Safe() : cp::CastOptions::Unsafe(),
                                                    &exec));
          column = cast.make_array();
        }
      }
      if ((agg.kind == Kind::kUnique || agg.kind == Kind::kCountDistinct) &&
          (arrow::is_nested(column->type_id()) || column->type_id() == arrow::Type::EXTENSION)) {
        return arrow::Status::TypeError("groupby: ", KindName(agg.kind), " of column '", agg.column, "' (",
                                        column->type()->ToString(),
                                        ") is not supported natively (nested values have no hash kernel); "
                                        "it runs in Python when the column's type is known before execution");
      }
      if ((agg.kind == Kind::kUnique || agg.kind == Kind::kCountDistinct) &&
          (column->type_id() == arrow::Type::FLOAT || column->type_id() == arrow::Type::DOUBLE)) {
        ARROW_ASSIGN_OR_RAISE(column, CanonicalFloats(column, &exec));
      }
      const std::string value = Value(i);
      fields.push_back(arrow::field(value, column->type()));
      columns.push_back(std::move(column));
      switch (agg.kind) {
        case Kind::kCount:
          aggregates.emplace_back("hash_count", CountMode(skip ? cp::CountOptions::ONLY_VALID : cp::CountOptions::ALL),
                                  value, Partial(i, "c"));
          break;
        case Kind::kSum:
          aggregates.emplace_back("hash_sum", Skip(skip, 1), value, Partial(i, "s"));
          break;
        case Kind::kMin:
          aggregates.emplace_back("hash_min", Skip(skip, 1), value, Partial(i, "mn"));
          break;
        case Kind::kMax:
          aggregates.emplace_back("hash_max", Skip(skip, 1), value, Partial(i, "mx"));
          break;
        case Kind::kAbsMax:
          aggregates.emplace_back("hash_min", Skip(skip, 1), value, Partial(i, "mn"));
          aggregates.emplace_back("hash_max", Skip(skip, 1), value, Partial(i, "mx"));
          break;
        case Kind::kMean:
          aggregates.emplace_back("hash_sum", Skip(skip, 1), value, Partial(i, "s"));
          aggregates.emplace_back("hash_count", CountMode(cp::CountOptions::ONLY_VALID), value, Partial(i, "c"));
          break;
        case Kind::kStd:
          aggregates.emplace_back("hash_count", CountMode(cp::CountOptions::ONLY_VALID), value, Partial(i, "n"));
          aggregates.emplace_back("hash_mean", Skip(true, 1), value, Partial(i, "m"));
          aggregates.emplace_back("hash_variance", std::make_shared<cp::VarianceOptions>(0, true, 1), value,
                                  Partial(i, "v"));
          aggregates.emplace_back("hash_count", CountMode(cp::CountOptions::ONLY_NULL), value, Partial(i, "z"));
          break;
        case Kind::kQuantile:
          // Every value (nulls too: finalize decides); an exact quantile needs them all.
          aggregates.emplace_back("hash_list", nullptr, value, Partial(i, "l"));
          break;
        case Kind::kUnique:
        case Kind::kCountDistinct:
          aggregates.emplace_back("hash_distinct",
                                  CountMode(skip ? cp::CountOptions::ONLY_VALID : cp::CountOptions::ALL), value,
                                  Partial(i, "u"));
          break;
      }
    }
    auto input = arrow::RecordBatch::Make(arrow::schema(fields), block->num_rows(), std::move(columns));
    // Few distinct integer keys (dictionary indices, the whole dataset's constant key)
    // group without hashing.
    ARROW_ASSIGN_OR_RAISE(auto direct, DirectAggregate(*input, keys_, aggregates, pool, keep.get()));
    Block grouped;
    if (direct) {
      grouped = *std::move(direct);
    } else {
      if (keep) {
        ARROW_ASSIGN_OR_RAISE(auto kept, cp::Filter(input, keep, cp::FilterOptions::Defaults(), &exec));
        input = kept.record_batch();
      }
      ARROW_ASSIGN_OR_RAISE(grouped, HashAggregate(input, keys_, std::move(aggregates), pool));
    }
    for (size_t k = 0; k < user_keys_.size(); ++k) {
      if (!dictionaries[k]) continue;
      int index = grouped->schema()->GetFieldIndex(user_keys_[k]);
      ARROW_ASSIGN_OR_RAISE(auto values, cp::Take(dictionaries[k], grouped->column(index),
                                                  cp::TakeOptions::Defaults(), &exec));
      ARROW_ASSIGN_OR_RAISE(grouped, grouped->SetColumn(index, arrow::field(user_keys_[k], values.type()),
                                                        values.make_array()));
    }
    // Keys first, then the partial columns in a fixed order.
    std::vector<std::string> names = keys_;
    for (size_t i = 0; i < aggs_.size(); ++i) {
      for (const char* part : Parts(aggs_[i])) names.push_back(Partial(i, part));
    }
    return Select(*grouped, names);
  }

  static arrow::Result<Block> Select(const arrow::RecordBatch& batch, const std::vector<std::string>& names) {
    arrow::FieldVector fields;
    arrow::ArrayVector columns;
    for (const auto& name : names) {
      int i = batch.schema()->GetFieldIndex(name);
      if (i < 0) return arrow::Status::UnknownError("groupby: no column ", name, " in ", batch.schema()->ToString());
      fields.push_back(batch.schema()->field(i));
      columns.push_back(batch.column(i));
    }
    return arrow::RecordBatch::Make(arrow::schema(fields), batch.num_rows(), std::move(columns));
  }

  std::vector<std::string> user_keys_;  // as given (empty: whole dataset)
  std::vector<std::string> keys_;       // the grouping columns of the partial rows
  std::vector<AggregateSpec> aggs_;
  std::optional<cp::Expression> filter_;  // rows to aggregate (a filter folded in)
  mutable std::mutex filter_mutex_;
  mutable std::shared_ptr<arrow::Schema> bound_schema_;  // the schema filter_ is bound to
  mutable cp::Expression bound_;
};

class AggregateExchange : public BucketExchange {
 public:
  AggregateExchange(std::vector<std::string> keys, std::vector<AggregateSpec> aggs,
                    ExchangeOptions options, std::optional<cp::Expression> filter, bool input_is_partial)
      : BucketExchange(options, keys.empty() ? 1 : kBuckets),
        user_keys_(keys),
        keys_(keys.empty() ? std::vector<std::string>{kAllKey} : keys),
        aggs_(aggs) {
    if (!input_is_partial) {
      partial_ = std::make_unique<PartialAggregator>(std::move(keys), std::move(aggs), std::move(filter));
    }
  }

  std::string name() const override { return "Aggregate"; }

  arrow::Status Map(int64_t index, Block block, ExchangeContext& ctx) override {
    ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
    if (partial_) {
      ARROW_ASSIGN_OR_RAISE(block, partial_->Apply(std::move(block), ctx.pool));
    }
    return BucketExchange::Map(index, std::move(block), ctx);
  }


 protected:
  arrow::Result<std::vector<uint32_t>> Buckets(int64_t, const Block& block,
                                               ExchangeContext&) override {
    std::vector<uint32_t> out(block->num_rows(), 0);
    if (user_keys_.empty()) return out;
    ARROW_ASSIGN_OR_RAISE(auto hashes, HashKeyColumns(*block, keys_));
    for (size_t i = 0; i < out.size(); ++i) {
      out[i] = static_cast<uint32_t>((static_cast<unsigned __int128>(hashes[i]) * kBuckets) >> 64);
    }
    return out;
  }

  int64_t Partitions(int64_t total_bytes, int64_t total_rows) const override {
    if (user_keys_.empty()) return 1;
    // The final aggregation's working memory (a Grouper over the keys, a second hash
    // aggregation by group id, the taken outputs) is several times its partition,
    // unlike a sort's: smaller partitions keep it, unaccounted, small.
    return ChoosePartitions(kReduceExpansion * total_bytes, total_rows, options());
  }

  arrow::Status Output(int64_t, Block rows, const Emit& emit, ExchangeContext& ctx) override {
    if (rows->num_rows() == 0) return arrow::Status::OK();
    ARROW_ASSIGN_OR_RAISE(auto out, FinalAggregate(rows, ctx));
    return EmitSliced(out, options().target_max_block_size, emit);
  }

 private:
  static constexpr int64_t kBuckets = 256;
  static constexpr int64_t kReduceExpansion = 4;

  /// Merges the partial rows of one partition into one row per group.
  arrow::Result<Block> FinalAggregate(const Block& rows, ExchangeContext& ctx) const {
    cp::ExecContext exec(ctx.pool);
    // Group ids of the partial rows.
    std::vector<arrow::TypeHolder> key_types;
    std::vector<arrow::Datum> key_values;
    for (const auto& key : keys_) {
      auto column = rows->GetColumnByName(key);
      key_types.emplace_back(column->type());
      key_values.emplace_back(column);
    }
    ARROW_ASSIGN_OR_RAISE(auto grouper, cp::Grouper::Make(key_types, &exec));
    cp::ExecBatch key_batch(std::move(key_values), rows->num_rows());
    ARROW_ASSIGN_OR_RAISE(auto ids_datum, grouper->Consume(cp::ExecSpan(key_batch)));
    auto ids = std::static_pointer_cast<arrow::UInt32Array>(ids_datum.make_array());
    const uint32_t groups = grouper->num_groups();
    ARROW_ASSIGN_OR_RAISE(auto uniques, grouper->GetUniques());

    // The merges Arrow's kernels do, keyed by group id.
    constexpr const char* kGid = "__millstream_gid";
    arrow::FieldVector fields{arrow::field(kGid, arrow::uint32())};
    arrow::ArrayVector columns{ids};
    std::vector<cp::Aggregate> merges;
    for (size_t i = 0; i < aggs_.size(); ++i) {
      const AggregateSpec& agg = aggs_[i];
      if (agg.kind == Kind::kStd || Collects(agg.kind)) continue;
      for (const char* part : Parts(agg)) {
        std::string name = Partial(i, part);
        auto column = rows->GetColumnByName(name);
        fields.push_back(arrow::field(name, column->type()));
        columns.push_back(column);
        std::string part_name = part;
        if (part_name == "c") {
          merges.emplace_back("hash_sum", Skip(true, 0), name, name);
        } else if (part_name == "s") {
          merges.emplace_back("hash_sum", Skip(agg.ignore_nulls, 1), name, name);
        } else if (part_name == "mn") {
          merges.emplace_back("hash_min", Skip(agg.ignore_nulls, 1), name, name);
        } else {
          merges.emplace_back("hash_max", Skip(agg.ignore_nulls, 1), name, name);
        }
      }
    }
    Block merged;
    std::shared_ptr<arrow::Array> order;  // order[g]: merged's row of group g
    if (!merges.empty()) {
      auto input = arrow::RecordBatch::Make(arrow::schema(fields), rows->num_rows(), std::move(columns));
      ARROW_ASSIGN_OR_RAISE(merged, HashAggregate(input, {kGid}, std::move(merges), ctx.pool));
      auto gids = std::static_pointer_cast<arrow::UInt32Array>(merged->GetColumnByName(kGid));
      std::vector<uint32_t> inverse(groups);
      for (int64_t r = 0; r < gids->length(); ++r) inverse[gids->Value(r)] = static_cast<uint32_t>(r);
      arrow::UInt32Builder builder(ctx.pool);
      ARROW_RETURN_NOT_OK(builder.AppendValues(inverse));
      ARROW_ASSIGN_OR_RAISE(order, builder.Finish());
    }
    auto by_group = [&](const std::string& name) -> arrow::Result<std::shared_ptr<arrow::Array>> {
      ARROW_ASSIGN_OR_RAISE(auto taken, cp::Take(merged->GetColumnByName(name), order,
                                                 cp::TakeOptions::NoBoundsCheck(), &exec));
      return taken.make_array();
    };

    arrow::FieldVector out_fields;
    arrow::ArrayVector out_columns;
    for (size_t k = 0; k < user_keys_.size(); ++k) {
      auto column = uniques.values[k].make_array();
      out_fields.push_back(arrow::field(user_keys_[k], column->type()));
      out_columns.push_back(std::move(column));
    }
    for (size_t i = 0; i < aggs_.size(); ++i) {
      const AggregateSpec& agg = aggs_[i];
      std::shared_ptr<arrow::Array> result;
      switch (agg.kind) {
        case Kind::kCount: {
          ARROW_ASSIGN_OR_RAISE(result, by_group(Partial(i, "c")));
          break;
        }
        case Kind::kSum: {
          ARROW_ASSIGN_OR_RAISE(result, by_group(Partial(i, "s")));
          break;
        }
        case Kind::kMin: {
          ARROW_ASSIGN_OR_RAISE(result, by_group(Partial(i, "mn")));
          break;
        }
        case Kind::kMax: {
          ARROW_ASSIGN_OR_RAISE(result, by_group(Partial(i, "mx")));
          break;
        }
        case Kind::kAbsMax: {
          ARROW_ASSIGN_OR_RAISE(auto mn, by_group(Partial(i, "mn")));
          ARROW_ASSIGN_OR_RAISE(auto mx, by_group(Partial(i, "mx")));
          ARROW_ASSIGN_OR_RAISE(auto abs_mn, cp::CallFunction("abs", {mn}, &exec));
          ARROW_ASSIGN_OR_RAISE(auto abs_mx, cp::CallFunction("abs", {mx}, &exec));
          cp::ElementWiseAggregateOptions options(/*skip_nulls=*/true);
          ARROW_ASSIGN_OR_RAISE(auto larger, cp::CallFunction("max_element_wise", {abs_mn, abs_mx}, &options, &exec));
          result = larger.make_array();
          break;
        }
        case Kind::kMean: {
          ARROW_ASSIGN_OR_RAISE(auto sum, by_group(Partial(i, "s")));
          ARROW_ASSIGN_OR_RAISE(auto count, by_group(Partial(i, "c")));
          ARROW_ASSIGN_OR_RAISE(auto count_f, cp::Cast(count, arrow::float64(), cp::CastOptions::Safe(), &exec));
          ARROW_ASSIGN_OR_RAISE(auto mean, cp::CallFunction("divide", {sum, count_f}, &exec));
          result = mean.make_array();
          break;
        }
        case Kind::kStd: {
          ARROW_ASSIGN_OR_RAISE(result, MergeStd(*rows, i, *ids, groups, ctx.pool));
          break;
        }
        case Kind::kQuantile: {
          ARROW_ASSIGN_OR_RAISE(result, MergeQuantile(*rows, i, ids, groups, &exec));
          break;
        }
        case Kind::kUnique:
        case Kind::kCountDistinct: {
          ARROW_ASSIGN_OR_RAISE(result, MergeDistinct(*rows, i, ids, groups, &exec));
          break;
        }
      }
      out_fields.push_back(arrow::field(agg.name, result->type()));
      out_columns.push_back(std::move(result));
    }
    return arrow::RecordBatch::Make(arrow::schema(out_fields), groups, std::move(out_columns));
  }

  /// The values of the list partial column `part` of aggregate `i`, flattened, with the
  /// group of each value.
  struct Flat {
    std::shared_ptr<arrow::Array> values;
    std::shared_ptr<arrow::UInt32Array> groups;
  };
  static arrow::Result<Flat> Flatten(const arrow::RecordBatch& rows, size_t i, const char* part,
                                     const std::shared_ptr<arrow::UInt32Array>& ids, cp::ExecContext* exec) {
    auto lists = rows.GetColumnByName(Partial(i, part));
    ARROW_ASSIGN_OR_RAISE(auto values, cp::CallFunction("list_flatten", {lists}, exec));
    ARROW_ASSIGN_OR_RAISE(auto parents, cp::CallFunction("list_parent_indices", {lists}, exec));
    ARROW_ASSIGN_OR_RAISE(auto groups, cp::Take(ids, parents, cp::TakeOptions::NoBoundsCheck(), exec));
    return Flat{values.make_array(), std::static_pointer_cast<arrow::UInt32Array>(groups.make_array())};
  }

  /// Unique: each group's distinct values (a list, in order of first appearance);
  /// CountDistinct: their number. Nulls were dropped by the map when ignore_nulls.
  arrow::Result<std::shared_ptr<arrow::Array>> MergeDistinct(const arrow::RecordBatch& rows, size_t i,
                                                             const std::shared_ptr<arrow::UInt32Array>& ids,
                                                             uint32_t groups, cp::ExecContext* exec) const {
    ARROW_ASSIGN_OR_RAISE(auto flat, Flatten(rows, i, "u", ids, exec));
    // Distinct (group, value) pairs.
    ARROW_ASSIGN_OR_RAISE(auto grouper, cp::Grouper::Make({arrow::uint32(), flat.values->type()}, exec));
    cp::ExecBatch pairs({arrow::Datum(flat.groups), arrow::Datum(flat.values)}, flat.values->length());
    ARROW_RETURN_NOT_OK(grouper->Consume(cp::ExecSpan(pairs)).status());
    ARROW_ASSIGN_OR_RAISE(auto uniques, grouper->GetUniques());
    auto pair_groups = std::static_pointer_cast<arrow::UInt32Array>(uniques.values[0].make_array());
    ARROW_ASSIGN_OR_RAISE(auto by_group, GroupValues(*pair_groups, groups));
    if (aggs_[i].kind == Kind::kCountDistinct) {
      arrow::Int64Builder builder(exec->memory_pool());
      ARROW_RETURN_NOT_OK(builder.Reserve(groups));
      for (uint32_t g = 0; g < groups; ++g) builder.UnsafeAppend(by_group.begin[g + 1] - by_group.begin[g]);
      return builder.Finish();
    }
    if (by_group.order.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
      return arrow::Status::CapacityError("groupby: Unique of '", aggs_[i].column, "' has more than 2^31 values");
    }
    arrow::Int64Builder order(exec->memory_pool());
    ARROW_RETURN_NOT_OK(order.AppendValues(by_group.order));
    ARROW_ASSIGN_OR_RAISE(auto order_array, order.Finish());
    ARROW_ASSIGN_OR_RAISE(auto values, cp::Take(uniques.values[1], order_array, cp::TakeOptions::NoBoundsCheck(), exec));
    arrow::Int32Builder offsets(exec->memory_pool());
    ARROW_RETURN_NOT_OK(offsets.Reserve(static_cast<int64_t>(groups) + 1));
    for (int64_t begin : by_group.begin) offsets.UnsafeAppend(static_cast<int32_t>(begin));
    ARROW_ASSIGN_OR_RAISE(auto offsets_array, offsets.Finish());
    return arrow::ListArray::FromArrays(*offsets_array, *values.make_array(), exec->memory_pool());
  }

  /// Quantile q of each group's values, as Ray computes it: nulls and NaN are skipped
  /// under ignore_nulls (else they make the result null, or NaN when only NaN is
  /// missing); the value at rank (n - 1) q when that is a whole number, else the linear
  /// interpolation of the two nearest ranks rounded to 5 decimals. Integer values
  /// (partials of int64) give int64 when every group's rank is whole (Ray's values are
  /// then its ints), else float64; booleans likewise give bool or float64 (True is 1);
  /// float values give float64.
  arrow::Result<std::shared_ptr<arrow::Array>> MergeQuantile(const arrow::RecordBatch& rows, size_t i,
                                                             const std::shared_ptr<arrow::UInt32Array>& ids,
                                                             uint32_t groups, cp::ExecContext* exec) const {
    const AggregateSpec& agg = aggs_[i];
    ARROW_ASSIGN_OR_RAISE(auto flat, Flatten(rows, i, "l", ids, exec));
    if (flat.values->type_id() == arrow::Type::BOOL) {
      ARROW_ASSIGN_OR_RAISE(auto ints, cp::Cast(flat.values, arrow::int64(), cp::CastOptions::Safe(), exec));
      auto int_values = ints.make_array();
      ARROW_ASSIGN_OR_RAISE(auto result,
                            QuantileOf<arrow::Int64Array>(static_cast<const arrow::Int64Array&>(*int_values),
                                                          *flat.groups, groups, agg, exec));
      if (result->type_id() != arrow::Type::INT64) return result;
      ARROW_ASSIGN_OR_RAISE(auto bools, cp::Cast(result, arrow::boolean(), cp::CastOptions::Safe(), exec));
      return bools.make_array();
    }
    if (flat.values->type_id() == arrow::Type::INT64) {
      return QuantileOf<arrow::Int64Array>(static_cast<const arrow::Int64Array&>(*flat.values), *flat.groups,
                                           groups, agg, exec);
    }
    if (flat.values->type_id() != arrow::Type::DOUBLE) {
      ARROW_ASSIGN_OR_RAISE(auto cast, cp::Cast(flat.values, arrow::float64(), cp::CastOptions::Safe(), exec));
      flat.values = cast.make_array();
    }
    return QuantileOf<arrow::DoubleArray>(static_cast<const arrow::DoubleArray&>(*flat.values), *flat.groups,
                                          groups, agg, exec);
  }

  template <typename ArrayType>
  static arrow::Result<std::shared_ptr<arrow::Array>> QuantileOf(const ArrayType& values,
                                                                 const arrow::UInt32Array& value_groups,
                                                                 uint32_t groups, const AggregateSpec& agg,
                                                                 cp::ExecContext* exec) {
    using T = typename ArrayType::value_type;
    ARROW_ASSIGN_OR_RAISE(auto by_group, GroupValues(value_groups, groups));
    // Per group: null, or the exact value at a whole rank, or an interpolated double.
    std::vector<uint8_t> valid(groups, 0), exact(groups, 0);
    std::vector<T> picked(groups, T{});
    std::vector<double> interpolated(groups, 0.0);
    bool all_exact = true;
    std::vector<T> group;
    for (uint32_t g = 0; g < groups; ++g) {
      group.clear();
      bool has_null = false, has_nan = false;
      for (int64_t k = by_group.begin[g]; k < by_group.begin[g + 1]; ++k) {
        const int64_t r = by_group.order[k];
        if (values.IsNull(r)) {
          has_null = true;
        } else if (std::isnan(static_cast<double>(values.Value(r)))) {
          has_nan = true;
        } else {
          group.push_back(values.Value(r));
        }
      }
      if (!agg.ignore_nulls && (has_null || has_nan)) {
        if (!has_null) {  // NaN (only a float column has it)
          valid[g] = 1;
          interpolated[g] = std::numeric_limits<double>::quiet_NaN();
          all_exact = false;
        }
        continue;
      }
      if (group.empty()) continue;
      valid[g] = 1;
      std::sort(group.begin(), group.end());
      const double k = static_cast<double>(group.size() - 1) * agg.q;
      const double f = std::floor(k), c = std::ceil(k);
      if (f == c) {
        exact[g] = 1;
        picked[g] = group[static_cast<size_t>(k)];
        interpolated[g] = static_cast<double>(picked[g]);
      } else {
        const double d0 = static_cast<double>(group[static_cast<size_t>(f)]) * (c - k);
        const double d1 = static_cast<double>(group[static_cast<size_t>(c)]) * (k - f);
        interpolated[g] = Round5(d0 + d1);
        all_exact = false;
      }
    }
    if constexpr (std::is_same_v<T, int64_t>) {
      if (all_exact) {
        arrow::Int64Builder builder(exec->memory_pool());
        ARROW_RETURN_NOT_OK(builder.Reserve(groups));
        for (uint32_t g = 0; g < groups; ++g) {
          if (valid[g]) builder.UnsafeAppend(picked[g]); else builder.UnsafeAppendNull();
        }
        return builder.Finish();
      }
    }
    arrow::DoubleBuilder builder(exec->memory_pool());
    ARROW_RETURN_NOT_OK(builder.Reserve(groups));
    for (uint32_t g = 0; g < groups; ++g) {
      if (valid[g]) builder.UnsafeAppend(interpolated[g]); else builder.UnsafeAppendNull();
    }
    return builder.Finish();
  }

  /// Std of each group from the partial (count, mean, variance with ddof 0, nulls) rows,
  /// merged by Chan's parallel formula.
  arrow::Result<std::shared_ptr<arrow::Array>> MergeStd(const arrow::RecordBatch& rows, size_t i,
                                                        const arrow::UInt32Array& ids, uint32_t groups,
                                                        arrow::MemoryPool* pool) const {
    const AggregateSpec& agg = aggs_[i];
    const auto& n = static_cast<const arrow::Int64Array&>(*rows.GetColumnByName(Partial(i, "n")));
    const auto& m = static_cast<const arrow::DoubleArray&>(*rows.GetColumnByName(Partial(i, "m")));
    const auto& v = static_cast<const arrow::DoubleArray&>(*rows.GetColumnByName(Partial(i, "v")));
    const auto& z = static_cast<const arrow::Int64Array&>(*rows.GetColumnByName(Partial(i, "z")));
    std::vector<int64_t> count(groups, 0), nulls(groups, 0);
    std::vector<double> mean(groups, 0.0), m2(groups, 0.0);
    for (int64_t r = 0; r < rows.num_rows(); ++r) {
      const uint32_t g = ids.Value(r);
      nulls[g] += z.Value(r);
      const int64_t nb = n.Value(r);
      if (nb == 0) continue;
      const double mb = m.Value(r), m2b = v.Value(r) * static_cast<double>(nb);
      const int64_t na = count[g];
      if (na == 0) {
        count[g] = nb, mean[g] = mb, m2[g] = m2b;
        continue;
      }
      const double total = static_cast<double>(na + nb);
      const double delta = mb - mean[g];
      mean[g] = (mean[g] * static_cast<double>(na) + mb * static_cast<double>(nb)) / total;
      m2[g] += m2b + delta * delta * static_cast<double>(na) * static_cast<double>(nb) / total;
      count[g] = na + nb;
    }
    arrow::DoubleBuilder builder(pool);
    ARROW_RETURN_NOT_OK(builder.Reserve(groups));
    for (uint32_t g = 0; g < groups; ++g) {
      if ((!agg.ignore_nulls && nulls[g] > 0) || count[g] == 0) {
        builder.UnsafeAppendNull();
      } else if (count[g] - agg.ddof <= 0) {
        builder.UnsafeAppend(std::numeric_limits<double>::quiet_NaN());
      } else {
        builder.UnsafeAppend(std::sqrt(m2[g] / static_cast<double>(count[g] - agg.ddof)));
      }
    }
    return builder.Finish();
  }

  std::vector<std::string> user_keys_;  // as given (empty: whole dataset)
  std::vector<std::string> keys_;       // the grouping columns of the partial rows
  std::vector<AggregateSpec> aggs_;
  std::unique_ptr<PartialAggregator> partial_;  // null: the input is partial rows already
};

}  // namespace

arrow::Status ValidateAggregates(const std::vector<std::string>& keys,
                                 const std::vector<AggregateSpec>& aggregates) {
  std::set<std::string> names;
  for (const auto& key : keys) {
    if (key.empty()) return arrow::Status::Invalid("groupby: a key column name is empty");
    if (!names.insert(key).second) return arrow::Status::Invalid("groupby: the key column '", key, "' is given twice");
  }
  if (aggregates.empty()) return arrow::Status::Invalid("groupby: aggregate needs at least one aggregation");
  for (const auto& agg : aggregates) {
    if (agg.column.empty() && agg.kind != Kind::kCount) {
      return arrow::Status::Invalid("groupby: ", KindName(agg.kind), " needs a column to aggregate on");
    }
    if (agg.ddof < 0) return arrow::Status::Invalid("groupby: Std's ddof must be >= 0, got ", agg.ddof);
    if (agg.kind == Kind::kQuantile && !(agg.q >= 0.0 && agg.q <= 1.0)) {
      return arrow::Status::Invalid("groupby: Quantile's q must be between 0 and 1, got ", agg.q);
    }
    if (agg.name.empty()) return arrow::Status::Invalid("groupby: an aggregation's output name is empty");
    if (!names.insert(agg.name).second) {
      return arrow::Status::Invalid("groupby: two output columns are named '", agg.name,
                                    "'; give one an alias_name");
    }
  }
  return arrow::Status::OK();
}

arrow::Result<std::unique_ptr<Exchange>> MakeAggregateExchange(std::vector<std::string> keys,
                                                               std::vector<AggregateSpec> aggregates,
                                                               ExchangeOptions options,
                                                               std::optional<cp::Expression> filter,
                                                               bool input_is_partial) {
  ARROW_RETURN_NOT_OK(ValidateAggregates(keys, aggregates));
  if (input_is_partial && filter) {
    return arrow::Status::Invalid("groupby: a filter belongs to the partial aggregation, not to its merge");
  }
  return std::make_unique<AggregateExchange>(std::move(keys), std::move(aggregates), options, std::move(filter),
                                             input_is_partial);
}

arrow::Result<std::shared_ptr<const PartialAggregation>> MakePartialAggregation(
    std::vector<std::string> keys, std::vector<AggregateSpec> aggregates, std::optional<cp::Expression> filter) {
  ARROW_RETURN_NOT_OK(ValidateAggregates(keys, aggregates));
  return std::make_shared<PartialAggregator>(std::move(keys), std::move(aggregates), std::move(filter));
}

}  // namespace millstream
