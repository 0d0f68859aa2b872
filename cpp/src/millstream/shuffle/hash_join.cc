#include "shuffle/hash_join.h"

#include <atomic>
#include <functional>
#include <limits>
#include <mutex>
#include <numeric>
#include <set>
#include <tuple>

#include <arrow/acero/exec_plan.h>
#include <arrow/acero/options.h>
#include <arrow/compute/api.h>
#include <arrow/util/byte_size.h>

#include "exec/schema_unify.h"
#include "shuffle/bucket_exchange.h"
#include "shuffle/key_hash.h"
#include "shuffle/stored_block.h"

namespace millstream {

JoinType Mirror(JoinType type) {
  switch (type) {
    case JoinType::kLeftOuter: return JoinType::kRightOuter;
    case JoinType::kRightOuter: return JoinType::kLeftOuter;
    case JoinType::kLeftSemi: return JoinType::kRightSemi;
    case JoinType::kRightSemi: return JoinType::kLeftSemi;
    case JoinType::kLeftAnti: return JoinType::kRightAnti;
    case JoinType::kRightAnti: return JoinType::kLeftAnti;
    default: return type;
  }
}

namespace {

namespace cp = arrow::compute;
namespace ac = arrow::acero;

bool IsSemiOrAnti(JoinType type) {
  return type == JoinType::kLeftSemi || type == JoinType::kRightSemi || type == JoinType::kLeftAnti ||
         type == JoinType::kRightAnti;
}

ac::JoinType AceroType(JoinType type) {
  switch (type) {
    case JoinType::kInner: return ac::JoinType::INNER;
    case JoinType::kLeftOuter: return ac::JoinType::LEFT_OUTER;
    case JoinType::kRightOuter: return ac::JoinType::RIGHT_OUTER;
    case JoinType::kFullOuter: return ac::JoinType::FULL_OUTER;
    case JoinType::kLeftSemi: return ac::JoinType::LEFT_SEMI;
    case JoinType::kRightSemi: return ac::JoinType::RIGHT_SEMI;
    case JoinType::kLeftAnti: return ac::JoinType::LEFT_ANTI;
    case JoinType::kRightAnti: return ac::JoinType::RIGHT_ANTI;
  }
  return ac::JoinType::INNER;
}

/// A dictionary type's value type; other types unchanged.
std::shared_ptr<arrow::DataType> Decoded(const std::shared_ptr<arrow::DataType>& type) {
  if (type->id() != arrow::Type::DICTIONARY) return type;
  return static_cast<const arrow::DictionaryType&>(*type).value_type();
}

arrow::Result<std::shared_ptr<arrow::Array>> DecodedArray(const std::shared_ptr<arrow::Array>& array,
                                                          cp::ExecContext* exec) {
  if (array->type_id() != arrow::Type::DICTIONARY) return array;
  ARROW_ASSIGN_OR_RAISE(auto datum, cp::Cast(array, Decoded(array->type()), cp::CastOptions::Safe(), exec));
  return datum.make_array();
}

std::string Names(const std::vector<std::string>& names) {
  std::string out = "[";
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", '" : "'") + names[i] + "'";
  return out + "]";
}

const char* SideName(int side) { return side == 0 ? "left" : "right"; }

/// The index of each key of one side in `schema`; KeyError naming a missing one.
arrow::Result<std::vector<int>> KeyIndices(const std::vector<std::string>& keys, const arrow::Schema& schema,
                                           int side) {
  std::vector<int> out;
  for (const auto& key : keys) {
    int i = schema.GetFieldIndex(key);
    if (i < 0) {
      return arrow::Status::KeyError("join: the ", SideName(side), " key column '", key, "' is not in the ",
                                     SideName(side), " dataset; its columns are ", Names(schema.field_names()));
    }
    out.push_back(i);
  }
  return out;
}

/// One output column: column `index` of side `side` (0 left, 1 right); for a full outer
/// join's key, coalesced with the right side's column `coalesce`.
struct OutputColumn {
  int side = 0;
  int index = 0;
  int coalesce = -1;
  std::string name;
  /// A key of its side (dictionaries are decoded in the exchange's map).
  bool key = false;
};

/// The columns of the join's output, as pyarrow.Table.join (coalesce_keys=True) makes
/// them; the checks of ValidateJoin on the two schemas.
arrow::Result<std::vector<OutputColumn>> Layout(const JoinSpec& spec, const arrow::Schema& left,
                                                const arrow::Schema& right) {
  ARROW_ASSIGN_OR_RAISE(auto lkeys, KeyIndices(spec.left_keys, left, 0));
  ARROW_ASSIGN_OR_RAISE(auto rkeys, KeyIndices(spec.right_keys, right, 1));
  for (size_t k = 0; k < lkeys.size(); ++k) {
    auto lt = Decoded(left.field(lkeys[k])->type()), rt = Decoded(right.field(rkeys[k])->type());
    for (const auto& [side, type, name] : {std::tuple{0, lt, spec.left_keys[k]}, std::tuple{1, rt, spec.right_keys[k]}}) {
      if (type->id() == arrow::Type::NA) {
        return arrow::Status::TypeError("join: the ", SideName(side), " key column '", name,
                                        "' has type null (only nulls, no type to join on); cast it to the other side's key type");
      }
    }
    if (!lt->Equals(*rt)) {
      return arrow::Status::TypeError("join: key column '", spec.left_keys[k], "' is ", lt->ToString(),
                                      " on the left but '", spec.right_keys[k], "' is ", rt->ToString(),
                                      " on the right; cast one of them so the key types match");
    }
  }
  const std::set<int> lkey_set(lkeys.begin(), lkeys.end()), rkey_set(rkeys.begin(), rkeys.end());
  const JoinType type = spec.type;
  if (!IsSemiOrAnti(type) && !spec.left_suffix && !spec.right_suffix) {
    std::set<std::string> right_out, collisions;
    for (int i = 0; i < right.num_fields(); ++i) {
      if (!rkey_set.count(i)) right_out.insert(right.field(i)->name());
    }
    for (const auto& name : left.field_names()) {
      if (right_out.count(name)) collisions.insert(name);
    }
    if (!collisions.empty()) {
      return arrow::Status::Invalid(
          "join: left and right columns suffixes cannot be both None (overlapping columns: ",
          Names({collisions.begin(), collisions.end()}), "); pass left_suffix or right_suffix");
    }
  }
  // Which columns of each side are output.
  std::vector<int> lcols, rcols;
  const bool left_only = type == JoinType::kLeftSemi || type == JoinType::kLeftAnti;
  const bool right_only = type == JoinType::kRightSemi || type == JoinType::kRightAnti;
  for (int i = 0; i < left.num_fields() && !right_only; ++i) {
    if (type == JoinType::kRightOuter && lkey_set.count(i)) continue;
    lcols.push_back(i);
  }
  for (int i = 0; i < right.num_fields() && !left_only; ++i) {
    if ((type == JoinType::kInner || type == JoinType::kLeftOuter) && rkey_set.count(i)) continue;
    rcols.push_back(i);
  }
  std::set<std::string> lnames, rnames;
  for (int i : lcols) lnames.insert(left.field(i)->name());
  for (int i : rcols) rnames.insert(right.field(i)->name());
  const std::string lsuffix = spec.left_suffix.value_or(""), rsuffix = spec.right_suffix.value_or("");
  std::vector<OutputColumn> out;
  for (int i : lcols) {
    const std::string& name = left.field(i)->name();
    OutputColumn column{0, i, -1, name, lkey_set.count(i) > 0};
    if (type == JoinType::kFullOuter && lkey_set.count(i)) {
      // The key once, coalesced from both sides, under its left name.
      size_t k = std::find(lkeys.begin(), lkeys.end(), i) - lkeys.begin();
      column.coalesce = rkeys[k];
    } else if (rnames.count(name)) {
      column.name += lsuffix;
    }
    out.push_back(std::move(column));
  }
  for (int i : rcols) {
    if (type == JoinType::kFullOuter && rkey_set.count(i)) continue;
    const std::string& name = right.field(i)->name();
    out.push_back({1, i, -1, lnames.count(name) ? name + rsuffix : name, rkey_set.count(i) > 0});
  }
  return out;
}

/// 0, 1, ..., n - 1 (int32 when n fits, to halve what the join carries).
arrow::Result<std::shared_ptr<arrow::Array>> RowNumbers(int64_t n, arrow::MemoryPool* pool) {
  if (n <= std::numeric_limits<int32_t>::max()) {
    ARROW_ASSIGN_OR_RAISE(auto buffer, arrow::AllocateBuffer(n * sizeof(int32_t), pool));
    auto* values = reinterpret_cast<int32_t*>(buffer->mutable_data());
    std::iota(values, values + n, int32_t{0});
    return std::make_shared<arrow::Int32Array>(n, std::shared_ptr<arrow::Buffer>(std::move(buffer)));
  }
  ARROW_ASSIGN_OR_RAISE(auto buffer, arrow::AllocateBuffer(n * sizeof(int64_t), pool));
  auto* values = reinterpret_cast<int64_t*>(buffer->mutable_data());
  std::iota(values, values + n, int64_t{0});
  return std::make_shared<arrow::Int64Array>(n, std::shared_ptr<arrow::Buffer>(std::move(buffer)));
}

/// The keys of `table` (decoded) as columns k0, k1... and its row numbers as `row`.
arrow::Result<std::shared_ptr<arrow::Table>> KeysAndRows(const arrow::Table& table, const std::vector<std::string>& keys,
                                                         const char* row, cp::ExecContext* exec) {
  arrow::FieldVector fields;
  arrow::ChunkedArrayVector columns;
  for (size_t k = 0; k < keys.size(); ++k) {
    auto column = table.GetColumnByName(keys[k]);
    if (column->type()->id() == arrow::Type::DICTIONARY) {
      ARROW_ASSIGN_OR_RAISE(auto cast, cp::Cast(column, Decoded(column->type()), cp::CastOptions::Safe(), exec));
      column = cast.chunked_array();
    }
    fields.push_back(arrow::field("k" + std::to_string(k), column->type()));
    columns.push_back(std::move(column));
  }
  ARROW_ASSIGN_OR_RAISE(auto rows, RowNumbers(table.num_rows(), exec->memory_pool()));
  fields.push_back(arrow::field(row, rows->type()));
  columns.push_back(std::make_shared<arrow::ChunkedArray>(std::move(rows)));
  return arrow::Table::Make(arrow::schema(fields), std::move(columns), table.num_rows());
}

/// `column` as one array (its chunks concatenated when there are several).
arrow::Result<std::shared_ptr<arrow::Array>> OneArray(const std::shared_ptr<arrow::ChunkedArray>& column,
                                                      arrow::MemoryPool* pool) {
  if (column->num_chunks() == 1) return column->chunk(0);
  if (column->num_chunks() == 0) return arrow::MakeEmptyArray(column->type(), pool);
  return arrow::Concatenate(column->chunks(), pool);
}

/// Row numbers of Acero's hash join of `probe` with `build` (its hash table built on
/// `build`; `type` with the probe as its left side) over the keys: `probe_rows` into
/// `probe` and `build_rows` into `build` (null when the type outputs none of that side;
/// a null entry: no row of that side).
struct JoinedRows {
  std::shared_ptr<arrow::Array> probe_rows, build_rows;
  int64_t num_rows = 0;
};
arrow::Result<JoinedRows> HashJoinRows(const arrow::Table& probe, const std::vector<std::string>& probe_keys,
                                       const arrow::Table& build, const std::vector<std::string>& build_keys,
                                       JoinType type, cp::ExecContext* exec) {
  arrow::MemoryPool* pool = exec->memory_pool();
  ARROW_ASSIGN_OR_RAISE(auto probe_table, KeysAndRows(probe, probe_keys, "__probe_row", exec));
  ARROW_ASSIGN_OR_RAISE(auto build_table, KeysAndRows(build, build_keys, "__build_row", exec));
  std::vector<arrow::FieldRef> key_refs;
  for (size_t k = 0; k < probe_keys.size(); ++k) key_refs.emplace_back("k" + std::to_string(k));
  std::vector<arrow::FieldRef> probe_out, build_out;
  const bool build_only = type == JoinType::kRightSemi || type == JoinType::kRightAnti;
  const bool probe_only = type == JoinType::kLeftSemi || type == JoinType::kLeftAnti;
  if (!build_only) probe_out.emplace_back("__probe_row");
  if (!probe_only) build_out.emplace_back("__build_row");
  ac::HashJoinNodeOptions options(AceroType(type), key_refs, key_refs, probe_out, build_out);
  ac::Declaration plan("hashjoin", {ac::Declaration("table_source", ac::TableSourceNodeOptions(probe_table)),
                                    ac::Declaration("table_source", ac::TableSourceNodeOptions(build_table))},
                       std::move(options));
  ARROW_ASSIGN_OR_RAISE(auto joined, ac::DeclarationToTable(std::move(plan), /*use_threads=*/false, pool));
  probe_table.reset();
  build_table.reset();
  JoinedRows out;
  out.num_rows = joined->num_rows();
  if (!build_only) {
    ARROW_ASSIGN_OR_RAISE(out.probe_rows, OneArray(joined->GetColumnByName("__probe_row"), pool));
  }
  if (!probe_only) {
    ARROW_ASSIGN_OR_RAISE(out.build_rows, OneArray(joined->GetColumnByName("__build_row"), pool));
  }
  return out;
}

/// The `n` output rows of `layout` taken from `left` and `right` by row number:
/// `rows[s]` into side s (a null entry: no row of that side; a null array: none of that
/// side at all); full outer keys coalesced.
arrow::Result<Block> TakeLayout(const std::vector<OutputColumn>& layout, const arrow::Table& left,
                                const arrow::Table& right, std::shared_ptr<arrow::Array> rows[2], int64_t n,
                                cp::ExecContext* exec) {
  arrow::MemoryPool* pool = exec->memory_pool();
  const arrow::Table* sides[2] = {&left, &right};
  auto take = [&](int side, int index) -> arrow::Result<std::shared_ptr<arrow::Array>> {
    if (!rows[side]) {
      ARROW_ASSIGN_OR_RAISE(rows[side], arrow::MakeArrayOfNull(arrow::int32(), n, pool));
    }
    ARROW_ASSIGN_OR_RAISE(auto taken, cp::Take(sides[side]->column(index), rows[side],
                                               cp::TakeOptions::NoBoundsCheck(), exec));
    return OneArray(taken.chunked_array(), pool);
  };
  arrow::FieldVector fields;
  arrow::ArrayVector columns;
  for (const auto& column : layout) {
    ARROW_ASSIGN_OR_RAISE(auto values, take(column.side, column.index));
    if (column.coalesce >= 0) {
      ARROW_ASSIGN_OR_RAISE(values, DecodedArray(values, exec));
      ARROW_ASSIGN_OR_RAISE(auto other, take(1, column.coalesce));
      ARROW_ASSIGN_OR_RAISE(other, DecodedArray(other, exec));
      ARROW_ASSIGN_OR_RAISE(auto merged, cp::CallFunction("coalesce", {values, other}, exec));
      values = merged.make_array();
    }
    fields.push_back(sides[column.side]->schema()->field(column.index)->WithName(column.name)->WithType(values->type()));
    columns.push_back(std::move(values));
  }
  return arrow::RecordBatch::Make(arrow::schema(std::move(fields)), n, std::move(columns));
}

/// Sets `marks[offset + r]` for each row number r in `rows` (nulls skipped).
void MarkRows(const arrow::Array& rows, int64_t offset, std::vector<uint8_t>& marks) {
  for (int64_t i = 0; i < rows.length(); ++i) {
    if (rows.IsNull(i)) continue;
    const int64_t r = rows.type_id() == arrow::Type::INT32 ? static_cast<const arrow::Int32Array&>(rows).Value(i)
                                                           : static_cast<const arrow::Int64Array&>(rows).Value(i);
    marks[offset + r] = 1;
  }
}

/// The row numbers r in [0, n) whose `marks[offset + r]` is `want`.
arrow::Result<std::shared_ptr<arrow::Array>> RowsMarked(const std::vector<uint8_t>& marks, int64_t offset, int64_t n,
                                                        bool want, arrow::MemoryPool* pool) {
  arrow::Int64Builder builder(pool);
  for (int64_t r = 0; r < n; ++r) {
    if ((marks[offset + r] != 0) == want) ARROW_RETURN_NOT_OK(builder.Append(r));
  }
  return builder.Finish();
}

/// One side of a join exchange: a hash exchange by the keys whose reduce hands on the
/// partition's rows as one block.
class JoinSide : public BucketExchange {
 public:
  JoinSide(ExchangeOptions options, int64_t num_buckets, std::vector<std::string> keys)
      : BucketExchange(options, num_buckets), num_buckets_(num_buckets), keys_(std::move(keys)) {}
  std::string name() const override { return "Join"; }
  void set_partitions(int64_t n) { partitions_ = n; }

 protected:
  arrow::Result<std::vector<uint32_t>> Buckets(int64_t, const Block& block, ExchangeContext&) override {
    ARROW_ASSIGN_OR_RAISE(auto hashes, HashKeyColumns(*block, keys_));
    std::vector<uint32_t> out(hashes.size());
    for (size_t i = 0; i < out.size(); ++i) {
      out[i] = static_cast<uint32_t>((static_cast<unsigned __int128>(hashes[i]) * num_buckets_) >> 64);
    }
    return out;
  }
  int64_t Partitions(int64_t, int64_t) const override { return partitions_; }
  arrow::Status Output(int64_t, Block rows, const Emit& emit, ExchangeContext&) override {
    return emit(std::move(rows));
  }

 private:
  int64_t num_buckets_;
  std::vector<std::string> keys_;
  int64_t partitions_ = 1;
};

class JoinExchange : public Exchange {
 public:
  JoinExchange(JoinSpec spec, ExchangeOptions options)
      : spec_(std::move(spec)), options_(options), share_(ReduceShare(options)),
        num_buckets_(std::max<int64_t>(kMinBuckets, kBucketsPerPartition * spec_.num_partitions)) {
    sides_[0] = std::make_unique<JoinSide>(options_, num_buckets_, spec_.left_keys);
    sides_[1] = std::make_unique<JoinSide>(options_, num_buckets_, spec_.right_keys);
  }

  std::string name() const override { return "Join"; }
  int num_inputs() const override { return 2; }

  arrow::Status Map(int64_t index, Block block, ExchangeContext& ctx) override {
    return MapInput(0, index, std::move(block), ctx);
  }

  arrow::Status MapInput(int input, int64_t index, Block block, ExchangeContext& ctx) override {
    ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
    if (input < 0 || input > 1) return arrow::Status::IndexError("join: no input ", input);
    const auto& keys = input == 0 ? spec_.left_keys : spec_.right_keys;
    auto found = KeyIndices(keys, *block->schema(), input);
    // An empty block without the keys (an empty dataset of no columns) adds nothing.
    if (!found.ok() && block->num_rows() == 0) return arrow::Status::OK();
    ARROW_RETURN_NOT_OK(found.status());
    // Dictionary keys are decoded: blocks with different dictionaries then meet as values.
    cp::ExecContext exec(ctx.pool);
    for (const auto& key : keys) {
      int i = block->schema()->GetFieldIndex(key);
      if (block->column(i)->type_id() != arrow::Type::DICTIONARY) continue;
      ARROW_ASSIGN_OR_RAISE(auto decoded, DecodedArray(block->column(i), &exec));
      ARROW_ASSIGN_OR_RAISE(block, block->SetColumn(i, arrow::field(key, decoded->type()), decoded));
    }
    mapped_[input].fetch_add(1);
    rows_.fetch_add(block->num_rows());
    bytes_.fetch_add(BlockBytes(*block));
    return sides_[input]->Map(index, std::move(block), ctx);
  }

  arrow::Result<int64_t> FinishMap(ExchangeContext& ctx) override {
    if (mapped_[0].load() + mapped_[1].load() == 0) return n_ = 0;
    // Enough partitions that one fits a reduce task's share of the memory limit.
    ExchangeOptions sizing = options_;
    sizing.num_partitions = 0;
    int64_t n = ChoosePartitions(bytes_.load(), rows_.load(), sizing);
    if (spec_.num_partitions > 0) n = std::max(n, spec_.num_partitions);
    n = std::clamp<int64_t>(n, 1, num_buckets_);
    for (int s = 0; s < 2; ++s) {
      if (mapped_[s].load() == 0) continue;
      sides_[s]->set_partitions(n);
      ARROW_RETURN_NOT_OK(sides_[s]->FinishMap(ctx).status());
    }
    return n_ = n;
  }

  arrow::Status Reduce(int64_t p, const Emit& emit, ExchangeContext& ctx) override {
    if (p < 0 || p >= n_) return arrow::Status::IndexError("no Join partition ", p, " of ", n_);
    if (mapped_[0].load() > 0 && mapped_[1].load() > 0) {
      const int64_t bytes[2] = {sides_[0]->PartitionBytes(p), sides_[1]->PartitionBytes(p)};
      const int probe = bytes[0] < bytes[1] ? 1 : 0;  // the larger side, as JoinLeaf
      if (std::min(bytes[0], bytes[1]) > share_ || bytes[probe] > 4 * share_) {
        // The build side does not fit the reduce task's share: grace hash join. (Or the
        // other side is many times the share, a hot key: streamed against the build.)
        // What the task holds grows within the reservation's cap, spilling what no
        // reduce has read.
        ReduceHold hold(grace_ledger_, ctx, [this, &ctx](int64_t want) { return ReclaimForGrace(want, ctx); });
        SideSource source[2];
        for (int s = 0; s < 2; ++s) {
          source[s].schema = sides_[s]->schema();
          source[s].bytes = bytes[s];
          source[s].for_each = [this, s, p, &ctx](const PieceFn& each) {
            return sides_[s]->ReducePieces(p, each, ctx);
          };
        }
        return JoinRange(source, 0, emit, ctx, hold);
      }
    }
    std::vector<Block> pieces[2];
    for (int s = 0; s < 2; ++s) {
      if (mapped_[s].load() == 0) continue;
      ARROW_RETURN_NOT_OK(sides_[s]->Reduce(
          p, [&pieces, s](Block block) { pieces[s].push_back(std::move(block)); return arrow::Status::OK(); }, ctx));
    }
    std::shared_ptr<arrow::Table> tables[2];
    for (int s = 0; s < 2; ++s) {
      if (pieces[s].empty()) continue;
      ARROW_ASSIGN_OR_RAISE(tables[s], arrow::Table::FromRecordBatches(pieces[s][0]->schema(), pieces[s]));
      pieces[s].clear();
    }
    for (int s = 0; s < 2; ++s) {
      if (tables[s]) continue;
      // A side that had no block: empty, with its keys typed as the other side's.
      const auto& other = tables[1 - s];
      const auto& keys = s == 0 ? spec_.left_keys : spec_.right_keys;
      const auto& other_keys = s == 0 ? spec_.right_keys : spec_.left_keys;
      arrow::FieldVector fields;
      for (size_t k = 0; k < keys.size(); ++k) {
        auto field = other->schema()->GetFieldByName(other_keys[k]);
        if (!field) return KeyIndices(other_keys, *other->schema(), 1 - s).status();
        fields.push_back(arrow::field(keys[k], field->type()));
      }
      ARROW_ASSIGN_OR_RAISE(tables[s], arrow::Table::MakeEmpty(arrow::schema(fields), ctx.pool));
    }
    ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
    ARROW_ASSIGN_OR_RAISE(auto out, JoinPartition(tables[0], tables[1], spec_, ctx.pool));
    tables[0].reset();
    tables[1].reset();
    return EmitSliced(out, options_.target_max_block_size, emit);
  }

  arrow::Result<int64_t> Reclaim(int64_t bytes, ExchangeContext& ctx) override {
    ARROW_ASSIGN_OR_RAISE(int64_t got, sides_[0]->Reclaim(bytes, ctx));
    if (got >= bytes) return got;
    ARROW_ASSIGN_OR_RAISE(int64_t more, sides_[1]->Reclaim(bytes - got, ctx));
    return got + more;
  }
  int64_t held_bytes() const override {
    return sides_[0]->held_bytes() + sides_[1]->held_bytes() + grace_ledger_.held.load(std::memory_order_relaxed);
  }
  int64_t spilled_bytes() const override {
    return sides_[0]->spilled_bytes() + sides_[1]->spilled_bytes() +
           grace_ledger_.spilled.load(std::memory_order_relaxed);
  }
  int64_t regrouped_partitions() const override { return regrouped_.load(); }
  int64_t streamed_partitions() const override { return streamed_.load(); }
  int64_t chunked_partitions() const override { return chunked_.load(); }

 private:
  using PieceFn = std::function<arrow::Status(Block)>;

  /// The rows of one side of a partition or sub-partition, handed piece by piece (each
  /// piece with `schema`); `bytes` estimates them in memory.
  struct SideSource {
    std::shared_ptr<arrow::Schema> schema;
    int64_t bytes = 0;
    std::function<arrow::Status(const PieceFn&)> for_each;
  };

  /// One side of a partition re-partitioned into sub-partitions: stored blocks each cut
  /// into one piece per sub-partition.
  struct SplitSide {
    std::shared_ptr<arrow::Schema> schema;
    std::vector<std::shared_ptr<StoredBlock>> blocks;
    /// Bytes of each sub-partition in memory, measured on its rows when split (rows of
    /// a hot key may be far wider than the others: prorating by rows would miss them).
    std::vector<int64_t> sub_bytes;
    int64_t Bytes(int64_t j) const { return sub_bytes[j]; }
  };

  /// A block the grace join stores (a sub-partition's rows, a chunk of a side): in memory
  /// if the reservation grows, else spilled; ReclaimForGrace may spill it while no reader
  /// holds it.
  arrow::Result<std::shared_ptr<StoredBlock>> StoreGrace(Block block, std::vector<int64_t> offsets,
                                                         ExchangeContext& ctx) {
    ARROW_ASSIGN_OR_RAISE(std::shared_ptr<StoredBlock> stored,
                          StoredBlock::Make(std::move(block), std::move(offsets), &grace_ledger_, ctx));
    std::lock_guard<std::mutex> lock(grace_mutex_);
    std::erase_if(grace_blocks_, [](const std::weak_ptr<StoredBlock>& b) { return b.expired(); });
    grace_blocks_.push_back(stored);
    return stored;
  }

  /// Room for a grace join's reduce task short of it: spills what no reader holds, the
  /// exchange's map-side blocks first, then the grace join's own stored blocks.
  arrow::Result<int64_t> ReclaimForGrace(int64_t want, ExchangeContext& ctx) {
    int64_t got = 0;
    for (int s = 0; s < 2 && got < want; ++s) {
      ARROW_ASSIGN_OR_RAISE(int64_t more, sides_[s]->ReclaimUnread(want - got, ctx));
      got += more;
    }
    if (got >= want) return got;
    std::vector<std::shared_ptr<StoredBlock>> blocks;
    {
      std::lock_guard<std::mutex> lock(grace_mutex_);
      for (const auto& weak : grace_blocks_) {
        if (auto block = weak.lock()) blocks.push_back(std::move(block));
      }
    }
    for (const auto& block : blocks) {
      if (got >= want) break;
      ARROW_ASSIGN_OR_RAISE(int64_t more, block->SpillUnread(ctx));
      got += more;
    }
    return got;
  }

  /// Whether the join can take the rows of side `probe` in chunks against the whole other
  /// side: every output row then depends on one probe row and the built side only.
  bool StreamsProbe(int probe) const {
    switch (spec_.type) {
      case JoinType::kInner: return true;
      case JoinType::kLeftOuter:
      case JoinType::kLeftSemi:
      case JoinType::kLeftAnti: return probe == 0;
      case JoinType::kRightOuter:
      case JoinType::kRightSemi:
      case JoinType::kRightAnti: return probe == 1;
      default: return false;
    }
  }

  /// Joins the rows of `source` (left and right of one partition or sub-partition): as it
  /// is when its smaller side fits the reduce share (or at the depth limit), else by
  /// re-partitioning both sides by a hash of the keys under seed `depth + 1` into stored
  /// sub-partitions (spilling past the reservation) joined one after another.
  arrow::Status JoinRange(SideSource (&source)[2], int depth, const Emit& emit, ExchangeContext& ctx,
                          ReduceHold& hold) {
    ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
    const int64_t build_bytes = std::min(source[0].bytes, source[1].bytes);
    if (build_bytes <= share_ || depth >= kMaxDepth) return JoinLeaf(source, emit, ctx, hold);
    const int64_t k = std::clamp<int64_t>(2 * ((build_bytes + share_ - 1) / share_), 2, kMaxSubPartitions);
    SplitSide split[2];
    for (int s = 0; s < 2; ++s) {
      ARROW_ASSIGN_OR_RAISE(split[s], Split(source[s], s, k, static_cast<uint64_t>(depth) + 1, ctx, hold));
    }
    regrouped_.fetch_add(1);
    for (int64_t j = 0; j < k; ++j) {
      SideSource sub[2];
      for (int s = 0; s < 2; ++s) {
        sub[s].schema = split[s].schema;
        sub[s].bytes = split[s].Bytes(j);
        sub[s].for_each = [this, &split, s, j, &ctx](const PieceFn& each) { return ReadSub(split[s], j, each, ctx); };
      }
      if (sub[0].bytes == 0 && sub[1].bytes == 0) continue;
      // A sub-partition that kept nearly all of the build side holds a key too frequent
      // to split: hashing again cannot help, it is joined as it is.
      const bool unsplit = std::min(sub[0].bytes, sub[1].bytes) * 10 >= build_bytes * 9;
      ARROW_RETURN_NOT_OK(JoinRange(sub, unsplit ? kMaxDepth : depth + 1, emit, ctx, hold));
    }
    return arrow::Status::OK();
  }

  /// The rows of `source` (side `side`) re-partitioned by HashKeyColumns under `seed`
  /// into `k` sub-partitions: pieces gathered to about half the share, grouped by
  /// sub-partition and stored (in memory if the reservation grows, else spilled).
  arrow::Result<SplitSide> Split(const SideSource& source, int side, int64_t k, uint64_t seed,
                                 ExchangeContext& ctx, ReduceHold& hold) {
    SplitSide out;
    out.schema = source.schema;
    out.sub_bytes.assign(k, 0);
    const auto& keys = side == 0 ? spec_.left_keys : spec_.right_keys;
    const int64_t chunk_bytes = std::max<int64_t>(share_ / 2, 1);
    std::vector<Block> pending;
    int64_t pending_bytes = 0;
    auto flush = [&]() -> arrow::Status {
      if (pending.empty()) return arrow::Status::OK();
      Block block;
      if (pending.size() == 1) {
        block = std::move(pending[0]);
      } else {
        ARROW_ASSIGN_OR_RAISE(block, arrow::ConcatenateRecordBatches(pending, ctx.pool));
      }
      pending.clear();
      ARROW_ASSIGN_OR_RAISE(auto hashes, HashKeyColumns(*block, keys, seed));
      std::vector<uint32_t> buckets(hashes.size());
      for (size_t i = 0; i < hashes.size(); ++i) {
        buckets[i] = static_cast<uint32_t>((static_cast<unsigned __int128>(hashes[i]) * k) >> 64);
      }
      hashes = {};
      ARROW_ASSIGN_OR_RAISE(auto grouped, GroupRowsByBucket(block, buckets, k, ctx.pool));
      block.reset();
      for (int64_t j = 0; j < k; ++j) {
        const int64_t rows = grouped.offsets[j + 1] - grouped.offsets[j];
        if (rows > 0) out.sub_bytes[j] += BlockBytes(*grouped.block->Slice(grouped.offsets[j], rows));
      }
      hold.Release(pending_bytes);
      pending_bytes = 0;
      ARROW_ASSIGN_OR_RAISE(auto stored, StoreGrace(std::move(grouped.block), std::move(grouped.offsets), ctx));
      out.blocks.push_back(std::move(stored));
      return arrow::Status::OK();
    };
    auto status = source.for_each([&](Block piece) -> arrow::Status {
      const int64_t bytes = BlockBytes(*piece);
      ARROW_RETURN_NOT_OK(hold.Hold(bytes));
      pending_bytes += bytes;
      pending.push_back(std::move(piece));
      return pending_bytes >= chunk_bytes ? flush() : arrow::Status::OK();
    });
    if (status.ok()) status = flush();
    pending.clear();
    hold.Release(pending_bytes);
    ARROW_RETURN_NOT_OK(status);
    for (auto& block : out.blocks) {
      int64_t readers = 0;
      for (int64_t j = 0; j < k; ++j) readers += block->piece_rows(j) > 0;
      block->SetReaders(readers, ctx);
    }
    return out;
  }

  /// Hands sub-partition `j` of `split` to `each`, piece by piece; each block is done
  /// with once its piece is handed on.
  arrow::Status ReadSub(SplitSide& split, int64_t j, const PieceFn& each, ExchangeContext& ctx) {
    for (auto& block : split.blocks) {
      if (block->piece_rows(j) == 0) continue;
      auto status = [&]() -> arrow::Status {
        ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
        ARROW_ASSIGN_OR_RAISE(auto got, block->Pieces(j, j + 1, ctx));
        for (auto& piece : got) {
          if (piece->num_rows() == 0) continue;
          ARROW_ASSIGN_OR_RAISE(auto cast, CastBlockToSchema(piece, split.schema));
          piece.reset();
          ARROW_RETURN_NOT_OK(each(std::move(cast)));
        }
        return arrow::Status::OK();
      }();
      block->Done(ctx);
      ARROW_RETURN_NOT_OK(status);
    }
    return arrow::Status::OK();
  }

  /// Joins `source` without splitting it: both sides whole (JoinPartition), or, when the
  /// probe side (the larger) is over the share (a hot key) and the join type allows, the
  /// build side whole and the probe side in chunks of about the share, each chunk's
  /// output handed on before the next is read.
  arrow::Status JoinLeaf(SideSource (&source)[2], const Emit& emit, ExchangeContext& ctx, ReduceHold& hold) {
    const int build = source[0].bytes < source[1].bytes ? 0 : 1, probe = 1 - build;
    if (source[build].bytes > share_ || (source[probe].bytes > share_ && !StreamsProbe(probe))) {
      return JoinChunked(source, build, emit, ctx, hold);
    }
    int64_t held = 0;
    auto hold_piece = [&](const Block& piece) -> arrow::Result<int64_t> {
      const int64_t bytes = BlockBytes(*piece);
      ARROW_RETURN_NOT_OK(hold.Hold(bytes));
      held += bytes;
      return bytes;
    };
    std::shared_ptr<arrow::Table> tables[2];
    auto load = [&](int s) -> arrow::Status {
      std::vector<Block> pieces;
      ARROW_RETURN_NOT_OK(source[s].for_each([&](Block piece) -> arrow::Status {
        ARROW_RETURN_NOT_OK(hold_piece(piece).status());
        pieces.push_back(std::move(piece));
        return arrow::Status::OK();
      }));
      ARROW_ASSIGN_OR_RAISE(tables[s], arrow::Table::FromRecordBatches(source[s].schema, std::move(pieces)));
      return arrow::Status::OK();
    };
    auto status = [&]() -> arrow::Status {
      ARROW_RETURN_NOT_OK(load(build));
      if (source[probe].bytes <= share_) {
        ARROW_RETURN_NOT_OK(load(probe));
        ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
        ARROW_ASSIGN_OR_RAISE(auto out, JoinPartition(tables[0], tables[1], spec_, ctx.pool));
        tables[0].reset();
        tables[1].reset();
        hold.Release(held);
        held = 0;
        return EmitSliced(out, options_.target_max_block_size, emit);
      }
      streamed_.fetch_add(1);
      std::vector<Block> chunk;
      int64_t chunk_held = 0;
      auto flush = [&]() -> arrow::Status {
        if (chunk.empty()) return arrow::Status::OK();
        ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
        ARROW_ASSIGN_OR_RAISE(tables[probe], arrow::Table::FromRecordBatches(source[probe].schema, std::move(chunk)));
        chunk.clear();
        ARROW_ASSIGN_OR_RAISE(auto out, JoinPartition(tables[0], tables[1], spec_, ctx.pool));
        tables[probe].reset();
        hold.Release(chunk_held);
        held -= chunk_held;
        chunk_held = 0;
        return EmitSliced(out, options_.target_max_block_size, emit);
      };
      ARROW_RETURN_NOT_OK(source[probe].for_each([&](Block piece) -> arrow::Status {
        ARROW_ASSIGN_OR_RAISE(int64_t bytes, hold_piece(piece));
        chunk_held += bytes;
        chunk.push_back(std::move(piece));
        return chunk_held >= share_ ? flush() : arrow::Status::OK();
      }));
      return flush();
    }();
    hold.Release(held);
    return status;
  }

  /// One side of a leaf stored in chunks of about half the share each (in memory if the
  /// reservation grows, else spilled), read back chunk by chunk, as often as asked.
  struct Chunks {
    std::vector<std::shared_ptr<StoredBlock>> blocks;
    std::vector<int64_t> first_row;  // of each chunk, in the side
    int64_t rows = 0;
  };

  arrow::Result<Chunks> StoreChunks(const SideSource& source, ExchangeContext& ctx, ReduceHold& hold) {
    Chunks out;
    const int64_t chunk_bytes = std::max<int64_t>(share_ / 2, 1);
    std::vector<Block> pending;
    int64_t pending_bytes = 0;
    auto flush = [&]() -> arrow::Status {
      if (pending.empty()) return arrow::Status::OK();
      Block block;
      if (pending.size() == 1) {
        block = std::move(pending[0]);
      } else {
        ARROW_ASSIGN_OR_RAISE(block, arrow::ConcatenateRecordBatches(pending, ctx.pool));
      }
      pending.clear();
      hold.Release(pending_bytes);
      pending_bytes = 0;
      const int64_t rows = block->num_rows();
      ARROW_ASSIGN_OR_RAISE(auto stored, StoreGrace(std::move(block), {0, rows}, ctx));
      out.first_row.push_back(out.rows);
      out.rows += rows;
      out.blocks.push_back(std::move(stored));
      return arrow::Status::OK();
    };
    auto status = source.for_each([&](Block piece) -> arrow::Status {
      if (piece->num_rows() == 0) return arrow::Status::OK();
      ARROW_ASSIGN_OR_RAISE(auto cast, CastBlockToSchema(piece, source.schema));
      piece.reset();
      const int64_t bytes = BlockBytes(*cast);
      ARROW_RETURN_NOT_OK(hold.Hold(bytes));
      pending_bytes += bytes;
      pending.push_back(std::move(cast));
      return pending_bytes >= chunk_bytes ? flush() : arrow::Status::OK();
    });
    if (status.ok()) status = flush();
    pending.clear();
    hold.Release(pending_bytes);
    ARROW_RETURN_NOT_OK(status);
    return out;
  }

  /// Chunk `i` of `chunks` as a table with `schema`; `*held` the bytes read back from a
  /// spill file (held in `hold` until the caller releases them).
  arrow::Result<std::shared_ptr<arrow::Table>> ReadChunk(Chunks& chunks, size_t i,
                                                         const std::shared_ptr<arrow::Schema>& schema,
                                                         ExchangeContext& ctx, ReduceHold& hold, int64_t* held) {
    ARROW_RETURN_NOT_OK(ctx.CheckCancelled());
    bool from_disk = false;
    ARROW_ASSIGN_OR_RAISE(auto pieces, chunks.blocks[i]->Pieces(0, 1, ctx, &from_disk));
    *held = from_disk ? chunks.blocks[i]->bytes() : 0;
    ARROW_RETURN_NOT_OK(hold.Hold(*held));
    for (auto& piece : pieces) {
      ARROW_ASSIGN_OR_RAISE(piece, CastBlockToSchema(piece, schema));
    }
    return arrow::Table::FromRecordBatches(schema, std::move(pieces));
  }

  /// Joins a leaf whose build side (`build`, the smaller) is over the share, or whose
  /// probe side is and the type needs all of it at once (full outer; the outer, semi or
  /// anti side being the build side's other): block nested loops. Both sides are stored
  /// in chunks of about half the share (spilled past the reservation); each build chunk
  /// is joined (Acero, its hash table on the build chunk) with every probe chunk in
  /// turn, matched rows marked on both sides. A build chunk's unmatched rows (outer) or
  /// matched/unmatched ones (semi/anti) are output after its pass over the probe side,
  /// the probe side's after the last pass, so every join type keeps its exact meaning
  /// while at most one chunk of each side is held.
  arrow::Status JoinChunked(SideSource (&source)[2], int build, const Emit& emit, ExchangeContext& ctx,
                            ReduceHold& hold) {
    const int probe = 1 - build;
    chunked_.fetch_add(1);
    ARROW_ASSIGN_OR_RAISE(auto layout, Layout(spec_, *source[0].schema, *source[1].schema));
    const JoinType type = spec_.type;
    // Per side: whether its unmatched rows are output with nulls (outer), and whether
    // the output is its matched (semi) or unmatched (anti) rows alone.
    bool keep_unmatched[2], semi[2], anti[2];
    keep_unmatched[0] = type == JoinType::kFullOuter || type == JoinType::kLeftOuter;
    keep_unmatched[1] = type == JoinType::kFullOuter || type == JoinType::kRightOuter;
    semi[0] = type == JoinType::kLeftSemi;
    semi[1] = type == JoinType::kRightSemi;
    anti[0] = type == JoinType::kLeftAnti;
    anti[1] = type == JoinType::kRightAnti;
    const bool pairs = !IsSemiOrAnti(type);
    auto marked = [&](int s) { return keep_unmatched[s] || semi[s] || anti[s]; };
    const auto& probe_keys = probe == 0 ? spec_.left_keys : spec_.right_keys;
    const auto& build_keys = build == 0 ? spec_.left_keys : spec_.right_keys;
    cp::ExecContext exec(ctx.pool);

    Chunks chunks[2];
    ARROW_ASSIGN_OR_RAISE(chunks[build], StoreChunks(source[build], ctx, hold));
    ARROW_ASSIGN_OR_RAISE(chunks[probe], StoreChunks(source[probe], ctx, hold));
    const int64_t passes = static_cast<int64_t>(chunks[build].blocks.size());
    for (auto& block : chunks[build].blocks) block->SetReaders(1, ctx);
    for (auto& block : chunks[probe].blocks) block->SetReaders(passes + (marked(probe) ? 1 : 0), ctx);
    std::vector<uint8_t> probe_marks(marked(probe) ? chunks[probe].rows : 0, 0);
    std::shared_ptr<arrow::Table> sides[2];
    auto emit_rows = [&](std::shared_ptr<arrow::Array> rows[2], int64_t n) -> arrow::Status {
      if (n == 0) return arrow::Status::OK();
      ARROW_ASSIGN_OR_RAISE(auto out, TakeLayout(layout, *sides[0], *sides[1], rows, n, &exec));
      return EmitSliced(out, options_.target_max_block_size, emit);
    };
    // An empty table of a side's schema: the side not present in an output of the other's
    // rows alone.
    ARROW_ASSIGN_OR_RAISE(auto empty_build, arrow::Table::MakeEmpty(source[build].schema, ctx.pool));
    ARROW_ASSIGN_OR_RAISE(auto empty_probe, arrow::Table::MakeEmpty(source[probe].schema, ctx.pool));

    for (int64_t i = 0; i < passes; ++i) {
      int64_t build_held = 0;
      auto status = [&]() -> arrow::Status {
        ARROW_ASSIGN_OR_RAISE(sides[build], ReadChunk(chunks[build], i, source[build].schema, ctx, hold, &build_held));
        std::vector<uint8_t> build_marks(marked(build) ? sides[build]->num_rows() : 0, 0);
        for (size_t j = 0; j < chunks[probe].blocks.size(); ++j) {
          int64_t probe_held = 0;
          auto pass = [&]() -> arrow::Status {
            ARROW_ASSIGN_OR_RAISE(sides[probe],
                                  ReadChunk(chunks[probe], j, source[probe].schema, ctx, hold, &probe_held));
            const int64_t offset = chunks[probe].first_row[j];
            if (pairs) {
              ARROW_ASSIGN_OR_RAISE(auto joined, HashJoinRows(*sides[probe], probe_keys, *sides[build], build_keys,
                                                              JoinType::kInner, &exec));
              if (marked(probe)) MarkRows(*joined.probe_rows, offset, probe_marks);
              if (marked(build)) MarkRows(*joined.build_rows, 0, build_marks);
              std::shared_ptr<arrow::Array> rows[2];
              rows[probe] = std::move(joined.probe_rows);
              rows[build] = std::move(joined.build_rows);
              return emit_rows(rows, joined.num_rows);
            }
            // Semi or anti: only the output side's matches are needed.
            if (marked(probe)) {
              ARROW_ASSIGN_OR_RAISE(auto joined, HashJoinRows(*sides[probe], probe_keys, *sides[build], build_keys,
                                                              JoinType::kLeftSemi, &exec));
              MarkRows(*joined.probe_rows, offset, probe_marks);
            } else {
              ARROW_ASSIGN_OR_RAISE(auto joined, HashJoinRows(*sides[probe], probe_keys, *sides[build], build_keys,
                                                              JoinType::kRightSemi, &exec));
              MarkRows(*joined.build_rows, 0, build_marks);
            }
            return arrow::Status::OK();
          }();
          sides[probe].reset();
          hold.Release(probe_held);
          chunks[probe].blocks[j]->Done(ctx);
          ARROW_RETURN_NOT_OK(pass);
        }
        // The build chunk's rows that no probe row matched (outer, anti) or that one did (semi).
        if (marked(build)) {
          ARROW_ASSIGN_OR_RAISE(auto picked, RowsMarked(build_marks, 0, sides[build]->num_rows(), semi[build], ctx.pool));
          sides[probe] = empty_probe;
          std::shared_ptr<arrow::Array> rows[2];
          rows[build] = picked;
          const int64_t n = picked->length();
          ARROW_RETURN_NOT_OK(emit_rows(rows, n));
          sides[probe].reset();
        }
        return arrow::Status::OK();
      }();
      sides[build].reset();
      hold.Release(build_held);
      chunks[build].blocks[i]->Done(ctx);
      ARROW_RETURN_NOT_OK(status);
    }
    // The probe side's rows that no build chunk matched (outer, anti) or that one did (semi).
    if (marked(probe)) {
      for (size_t j = 0; j < chunks[probe].blocks.size(); ++j) {
        int64_t probe_held = 0;
        auto status = [&]() -> arrow::Status {
          ARROW_ASSIGN_OR_RAISE(sides[probe], ReadChunk(chunks[probe], j, source[probe].schema, ctx, hold, &probe_held));
          ARROW_ASSIGN_OR_RAISE(auto picked, RowsMarked(probe_marks, chunks[probe].first_row[j], sides[probe]->num_rows(),
                                                        semi[probe], ctx.pool));
          sides[build] = empty_build;
          std::shared_ptr<arrow::Array> rows[2];
          rows[probe] = picked;
          const int64_t n = picked->length();
          return emit_rows(rows, n);
        }();
        sides[probe].reset();
        sides[build].reset();
        hold.Release(probe_held);
        chunks[probe].blocks[j]->Done(ctx);
        ARROW_RETURN_NOT_OK(status);
      }
    }
    return arrow::Status::OK();
  }

  // Grace hash join: at most this many levels of re-partitioning, into at most this many
  // sub-partitions each.
  static constexpr int kMaxDepth = 3;
  static constexpr int64_t kMaxSubPartitions = 64;

  // A reduce task reads one piece per bucket of its partition from every stored block,
  // and concatenating many tiny pieces costs more than the join (16 partitions of 1024
  // buckets: 0.55 s of 1.3 s CPU at 16M rows). Few buckets per partition, room for 4x
  // the partitions asked when the data needs them.
  static constexpr int64_t kMinBuckets = 64;
  static constexpr int64_t kBucketsPerPartition = 4;

  JoinSpec spec_;
  ExchangeOptions options_;
  int64_t share_;  // the bytes a reduce task's build side may take (ReduceShare)
  int64_t num_buckets_;
  ExchangeLedger grace_ledger_;  // sub-partitions and what the grace join holds
  std::mutex grace_mutex_;      // guards grace_blocks_
  std::vector<std::weak_ptr<StoredBlock>> grace_blocks_;  // what StoreGrace stored, while alive
  std::atomic<int64_t> regrouped_{0}, streamed_{0}, chunked_{0};
  std::unique_ptr<JoinSide> sides_[2];
  std::atomic<int64_t> mapped_[2] = {0, 0};  // blocks mapped per side
  std::atomic<int64_t> rows_{0}, bytes_{0};
  int64_t n_ = 0;
};

}  // namespace

arrow::Result<JoinType> ParseJoinType(const std::string& name) {
  static const std::pair<const char*, JoinType> kTypes[] = {
      {"inner", JoinType::kInner},          {"left_outer", JoinType::kLeftOuter},
      {"right_outer", JoinType::kRightOuter}, {"full_outer", JoinType::kFullOuter},
      {"left_semi", JoinType::kLeftSemi},   {"right_semi", JoinType::kRightSemi},
      {"left_anti", JoinType::kLeftAnti},   {"right_anti", JoinType::kRightAnti}};
  std::string names;
  for (const auto& [n, type] : kTypes) {
    if (name == n) return type;
    names += (names.empty() ? "" : ", ") + std::string(n);
  }
  return arrow::Status::Invalid("Invalid join type: '", name, "'. Supported join types are: ", names, ".");
}

std::string JoinTypeName(JoinType type) {
  switch (type) {
    case JoinType::kInner: return "inner";
    case JoinType::kLeftOuter: return "left_outer";
    case JoinType::kRightOuter: return "right_outer";
    case JoinType::kFullOuter: return "full_outer";
    case JoinType::kLeftSemi: return "left_semi";
    case JoinType::kRightSemi: return "right_semi";
    case JoinType::kLeftAnti: return "left_anti";
    case JoinType::kRightAnti: return "right_anti";
  }
  return "?";
}

arrow::Status ValidateJoin(JoinSpec& spec, const std::shared_ptr<arrow::Schema>& left,
                           const std::shared_ptr<arrow::Schema>& right) {
  if (spec.right_keys.empty()) spec.right_keys = spec.left_keys;
  if (spec.left_keys.empty()) {
    return arrow::Status::Invalid("join: at least 1 column name to join on has to be provided (got [])");
  }
  if (spec.left_keys.size() != spec.right_keys.size()) {
    return arrow::Status::Invalid("join: number of columns provided for left and right datasets has to match (got ",
                                  Names(spec.left_keys), " and ", Names(spec.right_keys), ")");
  }
  for (const auto* keys : {&spec.left_keys, &spec.right_keys}) {
    std::set<std::string> seen;
    for (const auto& key : *keys) {
      if (!seen.insert(key).second) return arrow::Status::Invalid("join: key column '", key, "' is named twice");
    }
  }
  if (spec.num_partitions < 0) {
    return arrow::Status::Invalid("join: num_partitions must be a positive integer, got ", spec.num_partitions);
  }
  // A schema of no columns (an empty dataset) says nothing about the keys.
  const bool left_known = left && left->num_fields() > 0, right_known = right && right->num_fields() > 0;
  if (left_known) ARROW_RETURN_NOT_OK(KeyIndices(spec.left_keys, *left, 0).status());
  if (right_known) ARROW_RETURN_NOT_OK(KeyIndices(spec.right_keys, *right, 1).status());
  if (left_known && right_known) ARROW_RETURN_NOT_OK(Layout(spec, *left, *right).status());
  return arrow::Status::OK();
}

arrow::Result<std::shared_ptr<arrow::Schema>> JoinOutputSchema(const JoinSpec& spec, const arrow::Schema& left,
                                                               const arrow::Schema& right) {
  ARROW_ASSIGN_OR_RAISE(auto layout, Layout(spec, left, right));
  arrow::FieldVector fields;
  for (const auto& column : layout) {
    const auto& field = (column.side == 0 ? left : right).field(column.index);
    auto type = column.key ? Decoded(field->type()) : field->type();
    fields.push_back(arrow::field(column.name, type));
  }
  return arrow::schema(std::move(fields));
}

arrow::Result<Block> JoinPartition(const Block& left, const Block& right, const JoinSpec& spec,
                                   arrow::MemoryPool* pool, bool* built_left) {
  ARROW_ASSIGN_OR_RAISE(auto left_table, arrow::Table::FromRecordBatches(left->schema(), {left}));
  ARROW_ASSIGN_OR_RAISE(auto right_table, arrow::Table::FromRecordBatches(right->schema(), {right}));
  return JoinPartition(left_table, right_table, spec, pool, built_left);
}

arrow::Result<Block> JoinPartition(const std::shared_ptr<arrow::Table>& left, const std::shared_ptr<arrow::Table>& right,
                                   const JoinSpec& spec, arrow::MemoryPool* pool, bool* built_left) {
  ARROW_ASSIGN_OR_RAISE(auto layout, Layout(spec, *left->schema(), *right->schema()));
  cp::ExecContext exec(pool);
  // Acero builds its hash table on its right input: the smaller side goes there.
  ARROW_ASSIGN_OR_RAISE(int64_t left_bytes, arrow::util::ReferencedBufferSize(*left));
  ARROW_ASSIGN_OR_RAISE(int64_t right_bytes, arrow::util::ReferencedBufferSize(*right));
  const bool swap = left_bytes < right_bytes;
  if (built_left) *built_left = swap;
  const JoinType type = swap ? Mirror(spec.type) : spec.type;
  const auto& probe = swap ? right : left;
  const auto& build = swap ? left : right;
  const auto& probe_keys = swap ? spec.right_keys : spec.left_keys;
  const auto& build_keys = swap ? spec.left_keys : spec.right_keys;
  ARROW_ASSIGN_OR_RAISE(auto joined, HashJoinRows(*probe, probe_keys, *build, build_keys, type, &exec));
  std::shared_ptr<arrow::Array> rows[2];
  rows[swap ? 1 : 0] = std::move(joined.probe_rows);
  rows[swap ? 0 : 1] = std::move(joined.build_rows);
  return TakeLayout(layout, *left, *right, rows, joined.num_rows, &exec);
}

arrow::Result<Block> TakeJoinedRows(const JoinSpec& spec, const arrow::Table& left, const arrow::Table& right,
                                    std::shared_ptr<arrow::Array> rows[2], int64_t n, arrow::MemoryPool* pool) {
  ARROW_ASSIGN_OR_RAISE(auto layout, Layout(spec, *left.schema(), *right.schema()));
  cp::ExecContext exec(pool);
  return TakeLayout(layout, left, right, rows, n, &exec);
}

arrow::Result<std::unique_ptr<Exchange>> MakeHashJoinExchange(JoinSpec spec, ExchangeOptions options) {
  ARROW_RETURN_NOT_OK(ValidateJoin(spec, nullptr, nullptr));
  return std::make_unique<JoinExchange>(std::move(spec), options);
}

}  // namespace millstream
