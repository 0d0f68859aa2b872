#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <mutex>

#include <arrow/api.h>
#include <arrow/compute/api.h>
#include <arrow/compute/row/grouper.h>
#include <arrow/util/byte_size.h>

#include "exec/operators/operators.h"
#include "exec/schema_unify.h"
#include "runtime/counting_memory_pool.h"
#include "shuffle/hash_join.h"

namespace millstream {

namespace {

namespace cp = arrow::compute;

/// The join type as seen from the probe side (the probe as its left side).
JoinType ProbeView(JoinType type, int build) { return build == 1 ? type : Mirror(type); }

/// A semi or anti join that outputs the build side's rows (seen from the probe side: a
/// right semi or anti join): probe tasks only mark the build keys they find, and one
/// last task outputs the build rows.
bool OutputsBuildSide(JoinType probe_view) {
  return probe_view == JoinType::kRightSemi || probe_view == JoinType::kRightAnti;
}

/// A join that keeps the build side's unmatched rows (seen from the probe side: a right
/// or full outer join): probe tasks join their rows and mark the build keys found, and
/// one last task outputs the build rows whose key no probe row had, the probe side null.
bool OutputsUnmatchedBuildRows(JoinType probe_view) {
  return probe_view == JoinType::kRightOuter || probe_view == JoinType::kFullOuter;
}

/// Whether probe tasks mark the build keys they find, for a last task.
bool MarksBuildSide(JoinType probe_view) {
  return OutputsBuildSide(probe_view) || OutputsUnmatchedBuildRows(probe_view);
}

/// `block` with its dictionary key columns decoded (as the exchange decodes them).
arrow::Result<Block> DecodeKeys(const Block& block, const std::vector<std::string>& keys, int side,
                                cp::ExecContext* exec) {
  auto columns = block->columns();
  auto fields = block->schema()->fields();
  bool changed = false;
  for (const auto& key : keys) {
    const int i = block->schema()->GetFieldIndex(key);
    if (i < 0) {
      return arrow::Status::KeyError("join: the ", side == 0 ? "left" : "right", " key column '", key,
                                     "' is not in a block of the ", side == 0 ? "left" : "right",
                                     " dataset; its columns are ", block->schema()->ToString());
    }
    if (columns[i]->type_id() != arrow::Type::DICTIONARY) continue;
    auto values = static_cast<const arrow::DictionaryType&>(*columns[i]->type()).value_type();
    ARROW_ASSIGN_OR_RAISE(auto cast, cp::Cast(columns[i], values, cp::CastOptions::Safe(), exec));
    columns[i] = cast.make_array();
    fields[i] = fields[i]->WithType(values);
    changed = true;
  }
  if (!changed) return block;
  return arrow::RecordBatch::Make(arrow::schema(fields, block->schema()->metadata()), block->num_rows(),
                                  std::move(columns));
}

/// The key columns of `block` as a batch for a Grouper, and whether each row has a null
/// key (such a row never matches).
struct Keys {
  cp::ExecBatch batch;
  std::vector<uint8_t> has_null;  // empty: no null key at all
};
Keys KeysOf(const arrow::RecordBatch& block, const std::vector<std::string>& keys) {
  Keys out;
  std::vector<arrow::Datum> values;
  for (const auto& key : keys) {
    auto column = block.GetColumnByName(key);
    if (column->null_count() > 0) {
      if (out.has_null.empty()) out.has_null.assign(block.num_rows(), 0);
      for (int64_t r = 0; r < block.num_rows(); ++r) out.has_null[r] |= column->IsNull(r) ? 1 : 0;
    }
    values.emplace_back(column);
  }
  out.batch = cp::ExecBatch(std::move(values), block.num_rows());
  return out;
}

/// Whether a key column's values are 64-bit integers as stored (int64, uint64, date64,
/// timestamp, duration): such a single key takes Int64Table, the fast path.
bool Is64BitInteger(const arrow::DataType& type) {
  switch (type.id()) {
    case arrow::Type::INT64:
    case arrow::Type::UINT64:
    case arrow::Type::DATE64:
    case arrow::Type::TIMESTAMP:
    case arrow::Type::DURATION: return true;
    default: return false;
  }
}

/// An open-addressing hash table of distinct 64-bit keys to group ids (0, 1... in order of
/// first insertion); read-only once built, so probe tasks look up without a lock.
class Int64Table {
 public:
  explicit Int64Table(int64_t expected) {
    int64_t capacity = 16;
    while (capacity < 2 * expected) capacity *= 2;
    mask_ = capacity - 1;
    shift_ = 64 - __builtin_ctzll(static_cast<uint64_t>(capacity));
    slots_.assign(capacity, Entry{0, -1});
    filter_.assign(capacity * 4 / 64, 0);
  }
  /// The group of `key`, a new one when it is new.
  int64_t Insert(int64_t key) {
    for (uint64_t slot = Slot(key);; slot = (slot + 1) & mask_) {
      Entry& entry = slots_[slot];
      if (entry.group < 0) {
        entry = Entry{key, size_};
        const uint64_t bit = Bit(key);
        filter_[bit >> 6] |= uint64_t{1} << (bit & 63);
        return size_++;
      }
      if (entry.key == key) return entry.group;
    }
  }
  /// The group of `key`; -1 when it is not in the table.
  int64_t Find(int64_t key) const {
    const uint64_t bit = Bit(key);
    if (!(filter_[bit >> 6] >> (bit & 63) & 1)) return -1;  // most keys not in the table stop here
    for (uint64_t slot = Slot(key);; slot = (slot + 1) & mask_) {
      const Entry& entry = slots_[slot];
      if (entry.group < 0 || entry.key == key) return entry.group;
    }
  }
  int64_t size() const { return size_; }

 private:
  static uint64_t Hash(int64_t key) { return static_cast<uint64_t>(key) * 0x9E3779B97F4A7C15ULL; }
  uint64_t Slot(int64_t key) const { return Hash(key) >> shift_; }
  /// The key's bit in the filter: the hash's top bits, two more than a slot's.
  uint64_t Bit(int64_t key) const { return Hash(key) >> (shift_ - 2); }
  uint64_t mask_ = 0;
  int shift_ = 0;
  struct Entry {
    int64_t key;
    int64_t group;  // -1: an empty slot
  };
  std::vector<Entry> slots_;  // key and group side by side: one cache miss a probe
  /// A bit per 4 slots' worth of hash prefixes set by the keys in the table: small enough
  /// to stay in cache, it turns away most keys that are not in the table.
  std::vector<uint64_t> filter_;
  int64_t size_ = 0;
};

/// The 64-bit values of a key column (fixed width, 64 bits; see Is64BitInteger).
const int64_t* Values64(const arrow::Array& column) { return column.data()->GetValues<int64_t>(1); }

/// The hash table of the build side, built once and shared by every probe task: the
/// build rows (keys decoded) and, per distinct key, the build rows that have it.
struct BuildTable {
  explicit BuildTable(arrow::MemoryPool* pool) : exec(pool) {}
  std::shared_ptr<arrow::Table> table;
  cp::ExecContext exec;  // the grouper's, for as long as it lives
  std::unique_ptr<Int64Table> int64;  // one 64-bit integer key: the fast path
  std::unique_ptr<cp::Grouper> grouper;  // any other keys
  std::mutex mutex;  // Grouper::Lookup keeps scratch state: one probe at a time
  std::vector<int64_t> offsets;  // group g's rows: rows[offsets[g]] .. rows[offsets[g + 1] - 1]
  std::vector<int64_t> rows;
  /// Per group: a probe row had its key (set by probe tasks of a join that outputs the
  /// build side).
  std::unique_ptr<std::atomic<uint8_t>[]> matched;
};

arrow::Result<std::shared_ptr<BuildTable>> MakeBuildTable(std::vector<Block> blocks,
                                                          const std::vector<std::string>& keys, int side,
                                                          arrow::MemoryPool* pool) {
  cp::ExecContext exec(pool);
  for (auto& block : blocks) {
    ARROW_ASSIGN_OR_RAISE(block, DecodeKeys(block, keys, side, &exec));
  }
  ARROW_ASSIGN_OR_RAISE(auto batch, ConcatenateBlocks(std::move(blocks)));
  auto out = std::make_shared<BuildTable>(pool);
  ARROW_ASSIGN_OR_RAISE(out->table, arrow::Table::FromRecordBatches(batch->schema(), {batch}));
  Keys k = KeysOf(*batch, keys);
  const int64_t n = batch->num_rows();
  std::vector<int64_t> ids(n, -1);  // each row's group; -1: a null key
  int64_t groups = 0;
  if (keys.size() == 1 && Is64BitInteger(*batch->GetColumnByName(keys[0])->type())) {
    const int64_t* values = Values64(*batch->GetColumnByName(keys[0]));
    out->int64 = std::make_unique<Int64Table>(n);
    for (int64_t r = 0; r < n; ++r) {
      if (k.has_null.empty() || !k.has_null[r]) ids[r] = out->int64->Insert(values[r]);
    }
    groups = out->int64->size();
  } else {
    std::vector<arrow::TypeHolder> types;
    for (const auto& value : k.batch.values) types.emplace_back(value.type());
    ARROW_ASSIGN_OR_RAISE(out->grouper, cp::Grouper::Make(types, &out->exec));
    ARROW_ASSIGN_OR_RAISE(auto datum, out->grouper->Consume(cp::ExecSpan(k.batch)));
    auto grouped = datum.array_as<arrow::UInt32Array>();
    for (int64_t r = 0; r < n; ++r) {
      if (k.has_null.empty() || !k.has_null[r]) ids[r] = grouped->Value(r);
    }
    groups = out->grouper->num_groups();
  }
  // Counting sort of the rows by group, null-key rows left out.
  out->offsets.assign(groups + 1, 0);
  for (int64_t r = 0; r < n; ++r) {
    if (ids[r] >= 0) out->offsets[ids[r] + 1] += 1;
  }
  for (int64_t g = 0; g < groups; ++g) out->offsets[g + 1] += out->offsets[g];
  out->rows.resize(out->offsets[groups]);
  out->matched = std::make_unique<std::atomic<uint8_t>[]>(static_cast<size_t>(groups));
  for (int64_t g = 0; g < groups; ++g) out->matched[g].store(0, std::memory_order_relaxed);
  std::vector<int64_t> next(out->offsets.begin(), out->offsets.end() - 1);
  for (int64_t r = 0; r < n; ++r) {
    if (ids[r] >= 0) out->rows[next[ids[r]]++] = r;
  }
  return out;
}

/// Broadcast hash join: collects the small (build) side, builds one hash table of it in
/// one task, then streams the other (probe) side's blocks through it, one task per
/// bundle, each block's output handed on as it is joined — the probe side is never
/// exchanged nor held whole. Every join type: those whose output a probe block decides
/// alone (inner, and the probe side's outer, semi and anti joins) as they come; for the
/// build side's semi and anti joins the probe tasks mark the build keys found, and a last
/// task outputs the build rows (in their order) whose key was found, or was not; for the
/// build side's outer and the full outer join the probe tasks also join their rows (as
/// the inner or the probe side's outer join) and the last task adds the build rows no
/// probe row matched, the probe side's columns null. When the build side turns
/// out larger than `cap` (its estimate was low), or the probe side queues past
/// `cap * 2` before the build side is done, or the build side has no block at all, it
/// falls back to the exchange `make_fallback` builds, replaying what it holds (and when
/// the build side has no row: the exchange joins an empty side of any schema).
class BroadcastJoinOperator : public PhysicalOperator {
 public:
  BroadcastJoinOperator(std::string name, JoinSpec spec, int build, int64_t cap, FallbackFactory make_fallback)
      : PhysicalOperator(std::move(name), 2), spec_(std::move(spec)), build_(build), cap_(cap),
        make_fallback_(std::move(make_fallback)) {}

  std::string Describe() const override {
    return "BroadcastJoinOperator[" + display_name() + (fell_back_ ? "; fell back to the exchange" : "") + "]";
  }

  void AddInput(int input, RefBundle bundle) override {
    if (stopped()) return;
    CountInput(bundle);
    if (fallback_) {
      fallback_->AddInput(input, std::move(bundle));
      return Drain();
    }
    if (input == build_) {
      build_bytes_ += bundle.bytes;
      build_rows_ += bundle.rows;
      build_input_.push_back(std::move(bundle));
      if (build_bytes_ > cap_) FallBack();
    } else {
      queued_bytes_ += bundle.bytes;
      pending_.push_back(std::move(bundle));
      if (!table_ready_ && queued_bytes_ > 2 * cap_ && !build_launched_) FallBack();
    }
  }
  void InputDone(int input) override {
    PhysicalOperator::InputDone(input);
    if (fallback_) {
      fallback_->InputDone(input);
      return Drain();
    }
    // No row at all: the exchange joins an empty side (of no schema, or no columns).
    if (input == build_ && build_rows_ == 0) FallBack();
  }
  bool NeedsOrderedInput() const override { return false; }
  int64_t QueuedInputBytes() const override { return fallback_ ? fallback_->QueuedInputBytes() : queued_bytes_; }
  int64_t QueuedInputBundles() const override {
    return fallback_ ? fallback_->QueuedInputBundles() : static_cast<int64_t>(pending_.size());
  }
  arrow::Status status() const override { return fallback_ ? fallback_->status() : error_; }

  bool RunsTasks() const override { return true; }
  bool HasTaskReady() const override {
    if (stopped() || !error_.ok()) return false;
    if (fallback_) return fallback_->HasTaskReady();
    if (!build_launched_) return inputs_done_[build_];
    if (table_ready_ && !pending_.empty()) return true;
    return FinishDue();
  }
  TaskResources NextTaskResources() const override {
    return fallback_ ? fallback_->NextTaskResources() : TaskResources{1, 0};
  }
  int64_t EstimateNextTaskBytes() const override {
    if (fallback_) return fallback_->EstimateNextTaskBytes();
    return build_launched_ && !pending_.empty() ? pending_.front().bytes : 0;
  }
  bool NextTaskRelievesMemory() const override { return fallback_ && fallback_->NextTaskRelievesMemory(); }

  TaskSpec LaunchTask() override {
    stats.tasks += 1;
    if (fallback_) return fallback_->LaunchTask();
    TaskSpec spec;
    spec.task_index = next_task_++;
    active_tasks_ += 1;
    if (!build_launched_) {
      build_launched_ = true;
      spec.stage = kBuild;
      for (auto& bundle : build_input_) spec.inputs.Merge(std::move(bundle));
      build_input_.clear();
      build_task_ = spec.task_index;
    } else if (pending_.empty()) {
      finish_launched_ = true;
      spec.stage = kFinish;
    } else {
      spec.stage = kProbe;
      spec.inputs = std::move(pending_.front());
      pending_.pop_front();
      queued_bytes_ -= spec.inputs.bytes;
      running_bytes_ += spec.inputs.bytes;
      running_[spec.task_index] = spec.inputs.bytes;
    }
    return spec;
  }

  arrow::Status RunTask(const TaskSpec& spec, TaskRunContext& run) const override {
    if (fallback_) return fallback_->RunTask(spec, run);
    arrow::MemoryPool* pool = EngineMemoryPool();
    if (spec.stage == kBuild) {
      std::vector<Block> blocks;
      for (const auto& ref : spec.inputs.blocks) {
        ARROW_ASSIGN_OR_RAISE(auto block, ref.Get());
        blocks.push_back(std::move(block));
      }
      ARROW_ASSIGN_OR_RAISE(auto table, MakeBuildTable(std::move(blocks), BuildKeys(), build_, pool));
      std::lock_guard<std::mutex> lock(table_mutex_);
      table_ = std::move(table);
      return arrow::Status::OK();
    }
    std::shared_ptr<BuildTable> table;
    {
      std::lock_guard<std::mutex> lock(table_mutex_);
      table = table_;
    }
    if (spec.stage == kFinish) {
      ARROW_ASSIGN_OR_RAISE(auto out, BuildSideRows(*table, pool));
      if (out->num_rows() == 0) return arrow::Status::OK();
      const int64_t max_bytes = run.context ? run.context->target_max_block_size : 0;
      return max_bytes > 0 ? EmitSliced(out, max_bytes, run.emit) : run.emit(std::move(out));
    }
    for (const auto& ref : spec.inputs.blocks) {
      if (run.stopped()) return arrow::Status::Cancelled("stopped");
      ARROW_ASSIGN_OR_RAISE(auto block, ref.Get());
      if (OutputsUnmatchedBuildRows(ProbeView(spec_.type, build_))) ARROW_RETURN_NOT_OK(SeeProbeSchema(*block, pool));
      if (block->num_rows() == 0) continue;  // joins to nothing (and may have no columns)
      ARROW_ASSIGN_OR_RAISE(auto out, Probe(*table, block, pool));
      if (!out || out->num_rows() == 0) continue;
      // Many matches per probe row (a key repeated on both sides) make a large block:
      // handed on in slices of the target block size.
      const int64_t max_bytes = run.context ? run.context->target_max_block_size : 0;
      ARROW_RETURN_NOT_OK(max_bytes > 0 ? EmitSliced(out, max_bytes, run.emit) : run.emit(std::move(out)));
    }
    return arrow::Status::OK();
  }

  void OnTaskOutput(int64_t task, Block block) override {
    if (fallback_) {
      fallback_->OnTaskOutput(task, std::move(block));
      return Drain();
    }
    if (stopped()) return;
    const int64_t bytes = BlockBytes(*block);
    CountOutput(1, block->num_rows(), bytes);
    PushOutput(RefBundle::Of(std::move(block)));
  }

  void OnTaskDone(int64_t task, const TaskResult& result) override {
    stats.task_wall_s += result.wall_s;
    stats.cpu_s += result.cpu_s;
    if (fallback_) {
      fallback_->OnTaskDone(task, result);
      stats.spilled_bytes = fallback_->stats.spilled_bytes;
      stats.regrouped_partitions = fallback_->stats.regrouped_partitions;
      stats.streamed_partitions = fallback_->stats.streamed_partitions;
      stats.chunked_partitions = fallback_->stats.chunked_partitions;
      return Drain();
    }
    active_tasks_ -= 1;
    if (task == build_task_) {
      build_bytes_ = 0;
      if (result.status.ok()) {
        std::lock_guard<std::mutex> lock(table_mutex_);
        table_ready_ = table_ != nullptr;
        if (table_ready_) table_bytes_ = arrow::util::TotalBufferSize(*table_->table) +
                                         static_cast<int64_t>(table_->rows.size() + table_->offsets.size()) * 8;
      } else {
        error_ = result.status;
      }
    } else if (auto it = running_.find(task); it != running_.end()) {
      running_bytes_ -= it->second;
      running_.erase(it);
    }
  }
  int64_t ActiveTasks() const override { return fallback_ ? fallback_->ActiveTasks() : active_tasks_; }
  void SetMemoryBudget(int64_t available) override {
    if (fallback_) fallback_->SetMemoryBudget(available - OutputQueueBytes());
  }
  int64_t CurrentUsage() const override {
    if (fallback_) return OutputQueueBytes() + fallback_->CurrentUsage();
    return OutputQueueBytes() + build_bytes_ + table_bytes_ + queued_bytes_ + running_bytes_;
  }
  bool Completed() const override {
    if (fallback_) return fallback_->Completed() && !fallback_->HasNext();
    if (stopped() || !error_.ok()) return AllInputsDone() && active_tasks_ == 0;
    return AllInputsDone() && table_ready_ && pending_.empty() && active_tasks_ == 0 &&
           (finish_launched_ || !MarksBuildSide(ProbeView(spec_.type, build_)));
  }
  void Stop() override {
    PhysicalOperator::Stop();
    if (fallback_) fallback_->Stop();
    pending_.clear();
    build_input_.clear();
    queued_bytes_ = 0;
  }

 private:
  enum Stage { kProbe = 0, kBuild = 1, kFinish = 2 };

  /// The last task of a join that outputs the build side is due: every probe row seen.
  bool FinishDue() const {
    return MarksBuildSide(ProbeView(spec_.type, build_)) && !finish_launched_ && table_ready_ &&
           inputs_done_[1 - build_] && pending_.empty() && active_tasks_ == 0;
  }

  /// The build rows of a semi join whose key a probe row had, or of an anti or outer join
  /// whose key none had (null keys among them), in the build side's order; an outer
  /// join's with the probe side's columns null.
  arrow::Result<Block> BuildSideRows(const BuildTable& table, arrow::MemoryPool* pool) const {
    const JoinType type = ProbeView(spec_.type, build_);
    const bool semi = type == JoinType::kRightSemi;
    const int64_t n = table.table->num_rows();
    std::vector<uint8_t> keep(n, semi ? 0 : 1);  // an anti join keeps null-key rows
    const int64_t groups = static_cast<int64_t>(table.offsets.size()) - 1;
    for (int64_t g = 0; g < groups; ++g) {
      const uint8_t found = table.matched[g].load(std::memory_order_relaxed);
      for (int64_t j = table.offsets[g]; j < table.offsets[g + 1]; ++j) keep[table.rows[j]] = semi ? found : !found;
    }
    arrow::Int64Builder selected(pool);
    for (int64_t r = 0; r < n; ++r) {
      if (keep[r]) ARROW_RETURN_NOT_OK(selected.Append(r));
    }
    std::shared_ptr<arrow::Array> rows[2];
    ARROW_ASSIGN_OR_RAISE(rows[build_], selected.Finish());
    const int64_t count = rows[build_]->length();
    // A semi or anti join outputs only the build side's columns; the probe side is its
    // keys, of the build keys' types (checked against every probe block). An outer join's
    // probe side is its blocks' schema (only its keys when it had no block), every row null.
    std::shared_ptr<arrow::Schema> probe_schema;
    if (OutputsUnmatchedBuildRows(type)) {
      ARROW_ASSIGN_OR_RAISE(rows[1 - build_], arrow::MakeArrayOfNull(arrow::int64(), count, pool));
      std::lock_guard<std::mutex> lock(table_mutex_);
      probe_schema = probe_schema_;
    }
    if (!probe_schema) {
      arrow::FieldVector probe_fields;
      for (size_t i = 0; i < ProbeKeys().size(); ++i) {
        probe_fields.push_back(arrow::field(ProbeKeys()[i], table.table->GetColumnByName(BuildKeys()[i])->type()));
      }
      probe_schema = arrow::schema(probe_fields);
    }
    ARROW_ASSIGN_OR_RAISE(auto probe_table, arrow::Table::MakeEmpty(probe_schema, pool));
    const arrow::Table& left = build_ == 0 ? *table.table : *probe_table;
    const arrow::Table& right = build_ == 0 ? *probe_table : *table.table;
    return TakeJoinedRows(spec_, left, right, rows, count, pool);
  }

  /// Keeps the schema of the first probe block with columns (its keys decoded), for the
  /// build side's unmatched rows of an outer join.
  arrow::Status SeeProbeSchema(const arrow::RecordBatch& block, arrow::MemoryPool* pool) const {
    if (block.num_columns() == 0) return arrow::Status::OK();
    {
      std::lock_guard<std::mutex> lock(table_mutex_);
      if (probe_schema_) return arrow::Status::OK();
    }
    cp::ExecContext exec(pool);
    ARROW_ASSIGN_OR_RAISE(auto decoded, DecodeKeys(block.Slice(0, 0), ProbeKeys(), 1 - build_, &exec));
    std::lock_guard<std::mutex> lock(table_mutex_);
    if (!probe_schema_) probe_schema_ = decoded->schema();
    return arrow::Status::OK();
  }

  const std::vector<std::string>& BuildKeys() const { return build_ == 0 ? spec_.left_keys : spec_.right_keys; }
  const std::vector<std::string>& ProbeKeys() const { return build_ == 0 ? spec_.right_keys : spec_.left_keys; }

  /// One probe block joined with the build table.
  arrow::Result<Block> Probe(BuildTable& table, const Block& input, arrow::MemoryPool* pool) const {
    cp::ExecContext exec(pool);
    const int probe = 1 - build_;
    ARROW_ASSIGN_OR_RAISE(auto block, DecodeKeys(input, ProbeKeys(), probe, &exec));
    // Key types are checked before running when both schemas are known; a UDF's output
    // is known only here.
    for (size_t i = 0; i < ProbeKeys().size(); ++i) {
      const auto& probe_type = block->GetColumnByName(ProbeKeys()[i])->type();
      const auto& build_type = table.table->GetColumnByName(BuildKeys()[i])->type();
      if (!probe_type->Equals(*build_type)) {
        const auto& left_type = build_ == 0 ? build_type : probe_type;
        const auto& right_type = build_ == 0 ? probe_type : build_type;
        return arrow::Status::TypeError("join: key column '", spec_.left_keys[i], "' is ", left_type->ToString(),
                                        " on the left but '", spec_.right_keys[i], "' is ", right_type->ToString(),
                                        " on the right; cast one of them so the key types match");
      }
    }
    Keys k = KeysOf(*block, ProbeKeys());
    const int64_t n = block->num_rows();
    // Each row's build group (-1: none, or a null key); one buffer per worker thread,
    // reused (a fresh one per block would cost a page fault per 4 KiB of it).
    thread_local std::vector<int64_t> ids;
    ids.assign(n, -1);
    auto valid = [&](int64_t r) { return k.has_null.empty() || !k.has_null[r]; };
    if (table.int64) {
      const int64_t* values = Values64(*block->GetColumnByName(ProbeKeys()[0]));
      for (int64_t r = 0; r < n; ++r) {
        if (valid(r)) ids[r] = table.int64->Find(values[r]);
      }
    } else {
      arrow::Datum datum;
      {
        std::lock_guard<std::mutex> lock(table.mutex);
        ARROW_ASSIGN_OR_RAISE(datum, table.grouper->Lookup(cp::ExecSpan(k.batch)));
      }
      auto found = datum.array_as<arrow::UInt32Array>();
      for (int64_t r = 0; r < n; ++r) {
        if (valid(r) && found->IsValid(r)) ids[r] = found->Value(r);
      }
    }
    auto matches = [&](int64_t r, int64_t* begin, int64_t* end) {
      if (ids[r] < 0) {
        *begin = *end = 0;
        return;
      }
      *begin = table.offsets[ids[r]];
      *end = table.offsets[ids[r] + 1];
    };
    const JoinType view = ProbeView(spec_.type, build_);
    if (MarksBuildSide(view)) {
      for (int64_t r = 0; r < n; ++r) {
        if (ids[r] >= 0) table.matched[ids[r]].store(1, std::memory_order_relaxed);
      }
    }
    if (OutputsBuildSide(view)) return nullptr;  // the last task outputs the build rows
    // The probe rows of an outer join that keeps the build side are joined as for the
    // matching inner or left outer join (the last task adds the unmatched build rows).
    const JoinType type = view == JoinType::kRightOuter  ? JoinType::kInner
                          : view == JoinType::kFullOuter ? JoinType::kLeftOuter
                                                         : view;
    arrow::Int64Builder probe_rows(pool), build_rows(pool);
    int64_t total = 0;
    for (int64_t r = 0; r < n; ++r) {
      int64_t b, e;
      matches(r, &b, &e);
      switch (type) {
        case JoinType::kInner: total += e - b; break;
        case JoinType::kLeftOuter: total += std::max<int64_t>(e - b, 1); break;
        case JoinType::kLeftSemi: total += e > b; break;
        default: total += e == b; break;  // left anti
      }
    }
    ARROW_RETURN_NOT_OK(probe_rows.Reserve(total));
    const bool pairs = type == JoinType::kInner || type == JoinType::kLeftOuter;
    if (pairs) ARROW_RETURN_NOT_OK(build_rows.Reserve(total));
    for (int64_t r = 0; r < n; ++r) {
      int64_t b, e;
      matches(r, &b, &e);
      if (pairs) {
        for (int64_t j = b; j < e; ++j) {
          probe_rows.UnsafeAppend(r);
          build_rows.UnsafeAppend(table.rows[j]);
        }
        if (b == e && type == JoinType::kLeftOuter) {
          probe_rows.UnsafeAppend(r);
          build_rows.UnsafeAppendNull();
        }
      } else if ((e > b) == (type == JoinType::kLeftSemi)) {
        probe_rows.UnsafeAppend(r);
      }
    }
    std::shared_ptr<arrow::Array> rows[2];
    ARROW_ASSIGN_OR_RAISE(rows[probe], probe_rows.Finish());
    if (pairs) {
      ARROW_ASSIGN_OR_RAISE(rows[build_], build_rows.Finish());
    }
    ARROW_ASSIGN_OR_RAISE(auto probe_table, arrow::Table::FromRecordBatches(block->schema(), {block}));
    const arrow::Table& left = build_ == 0 ? *table.table : *probe_table;
    const arrow::Table& right = build_ == 0 ? *probe_table : *table.table;
    return TakeJoinedRows(spec_, left, right, rows, total, pool);
  }

  /// Hands everything to the exchange: what the build side delivered, the probe
  /// bundles queued, and which inputs are done.
  void FallBack() {
    auto made = make_fallback_();
    if (!made.ok()) {
      error_ = made.status();
      return;
    }
    fallback_ = std::move(*made);
    fallback_->set_ordered(ordered());
    for (auto& bundle : build_input_) fallback_->AddInput(build_, std::move(bundle));
    for (auto& bundle : pending_) fallback_->AddInput(1 - build_, std::move(bundle));
    build_input_.clear();
    pending_.clear();
    build_bytes_ = queued_bytes_ = 0;
    for (int i = 0; i < 2; ++i) {
      if (inputs_done_[i]) fallback_->InputDone(i);
    }
    fell_back_ = true;
  }

  /// Moves the exchange's outputs to this operator's queue.
  void Drain() {
    while (fallback_->HasNext()) {
      RefBundle bundle = fallback_->TakeNext();
      CountOutput(static_cast<int64_t>(bundle.blocks.size()), bundle.rows, bundle.bytes);
      PushOutput(std::move(bundle));
    }
  }

  JoinSpec spec_;
  int build_;
  int64_t cap_;
  FallbackFactory make_fallback_;
  std::unique_ptr<PhysicalOperator> fallback_;
  arrow::Status error_;
  bool fell_back_ = false;

  std::deque<RefBundle> build_input_;
  int64_t build_bytes_ = 0;
  int64_t build_rows_ = 0;
  bool build_launched_ = false;
  bool finish_launched_ = false;
  int64_t build_task_ = -1;
  mutable std::mutex table_mutex_;
  mutable std::shared_ptr<BuildTable> table_;  // set by the build task
  mutable std::shared_ptr<arrow::Schema> probe_schema_;  // an outer join's, seen by probe tasks
  bool table_ready_ = false;
  int64_t table_bytes_ = 0;

  std::deque<RefBundle> pending_;  // probe bundles waiting
  int64_t queued_bytes_ = 0;
  std::map<int64_t, int64_t> running_;  // probe task -> its input bytes
  int64_t running_bytes_ = 0;
  int64_t next_task_ = 0;
  int active_tasks_ = 0;
};

}  // namespace

bool BroadcastJoinSupports(JoinType type, int build) {
  switch (ProbeView(type, build)) {
    case JoinType::kInner:
    case JoinType::kLeftOuter:
    case JoinType::kRightOuter:
    case JoinType::kFullOuter:
    case JoinType::kLeftSemi:
    case JoinType::kLeftAnti:
    case JoinType::kRightSemi:
    case JoinType::kRightAnti: return true;
    default: return false;
  }
}

int64_t BroadcastJoinCap(int64_t memory_limit) {
  return std::min<int64_t>(memory_limit / 8, kBroadcastJoinMaxBytes);
}

std::unique_ptr<PhysicalOperator> MakeBroadcastJoinOperator(std::string name, JoinSpec spec, int build,
                                                            int64_t cap, FallbackFactory make_fallback) {
  return std::make_unique<BroadcastJoinOperator>(std::move(name), std::move(spec), build, cap,
                                                 std::move(make_fallback));
}

}  // namespace millstream
