#include <arrow/api.h>
#include <arrow/compute/api.h>

#include <algorithm>
#include <string>
#include <vector>

#include "exec/bind_cache.h"
#include "exec/transforms.h"
#include "runtime/counting_memory_pool.h"

namespace millstream {
namespace {

namespace cp = arrow::compute;

/// Edits (insert, delete, substitute) that turn `a` into `b`.
size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = above;
    }
  }
  return row[b.size()];
}

/// Why `predicate` does not bind to `schema`: the first column it names that the block
/// lacks, with the nearest column and the list of columns; else Arrow's words.
std::string WhyUnbound(const cp::Expression& predicate, const arrow::Schema& schema,
                       const arrow::Status& status) {
  std::string columns;
  for (const auto& name : schema.field_names()) columns += (columns.empty() ? "" : ", ") + name;
  for (const auto& ref : cp::FieldsInExpression(predicate)) {
    auto found = ref.FindOneOrNone(schema);
    if (!ref.IsName() || !found.ok() || !found->empty()) continue;
    std::string hint;
    size_t best = std::max<size_t>(1, ref.name()->size() / 3) + 1;  // few edits: a typo
    for (const auto& name : schema.field_names()) {
      size_t distance = EditDistance(*ref.name(), name);
      if (distance < best) best = distance, hint = " (did you mean '" + name + "'?)";
    }
    return "column '" + *ref.name() + "' not found" + hint + "; the columns are: " + columns;
  }
  return status.message() + " (columns: " + columns + ")";
}

/// The predicate bound to `schema`, or why it cannot be.
arrow::Result<cp::Expression> BindPredicate(const cp::Expression& predicate,
                                            const arrow::Schema& schema) {
  auto bound = predicate.Bind(schema);
  if (!bound.ok()) {
    return arrow::Status::Invalid("Filter(", predicate.ToString(), "): ",
                                  WhyUnbound(predicate, schema, bound.status()));
  }
  if (bound->type()->id() != arrow::Type::BOOL) {
    // A number or string is no predicate: `0`, `1 - 1`, `a + b` would keep rows by
    // whatever their bytes read as a boolean.
    return arrow::Status::TypeError("filter predicate ", predicate.ToString(), " is of type ",
                                    bound->type()->ToString(),
                                    ", not boolean; compare it (e.g. `x != 0`)");
  }
  return bound;
}

class FilterState : public TransformState {
 public:
  FilterState(const cp::Expression& predicate, BindCache* bind_cache)
      : predicate_(predicate), bind_cache_(bind_cache) {}

  arrow::Status Push(Block block, const Emit& emit) override {
    if (!bound_schema_ || !bound_schema_->Equals(*block->schema())) {
      ARROW_ASSIGN_OR_RAISE(bound_, bind_cache_->Get(block->schema(), [this](const arrow::Schema& schema) {
                              return BindPredicate(predicate_, schema);
                            }));
      bound_schema_ = block->schema();
    }
    // The mask and the filtered copy count as the engine's memory.
    cp::ExecContext exec(EngineMemoryPool());
    ARROW_ASSIGN_OR_RAISE(auto mask, cp::ExecuteScalarExpression(bound_, cp::ExecBatch(*block), &exec));
    if (mask.is_scalar()) {
      const auto& scalar = mask.scalar_as<arrow::BooleanScalar>();
      if (scalar.is_valid && scalar.value) return emit(std::move(block));
      return emit(block->Slice(0, 0));
    }
    // A mask that keeps every row, or none, needs no copy.
    const arrow::BooleanArray keep(mask.array());
    if (keep.null_count() == 0) {
      const int64_t kept = keep.true_count();
      if (kept == keep.length()) return emit(std::move(block));
      if (kept == 0) return emit(block->Slice(0, 0));
    }
    ARROW_ASSIGN_OR_RAISE(auto filtered, cp::Filter(block, mask, cp::FilterOptions::Defaults(), &exec));
    return emit(filtered.record_batch());
  }

 private:
  cp::Expression predicate_;
  BindCache* bind_cache_;  // the transform's, which outlives its states
  cp::Expression bound_;
  std::shared_ptr<arrow::Schema> bound_schema_;
};

class FilterTransform : public Transform {
 public:
  explicit FilterTransform(cp::Expression predicate) : predicate_(std::move(predicate)) {}
  std::string name() const override { return "Filter(" + predicate_.ToString() + ")"; }
  bool output_sized_by_input() const override { return true; }
  arrow::Result<std::shared_ptr<arrow::Schema>> SchemaOut(
      const std::shared_ptr<arrow::Schema>& input) const override {
    return input;
  }
  arrow::Result<std::unique_ptr<TransformState>> MakeState(const TaskContext&) const override {
    return std::make_unique<FilterState>(predicate_, &bind_cache_);
  }
  const cp::Expression& predicate() const { return predicate_; }

 private:
  cp::Expression predicate_;
  mutable BindCache bind_cache_;
};

}  // namespace

std::shared_ptr<const Transform> MakeFilterTransform(cp::Expression predicate) {
  return std::make_shared<FilterTransform>(std::move(predicate));
}

const cp::Expression* FilterPredicate(const Transform& transform) {
  const auto* filter = dynamic_cast<const FilterTransform*>(&transform);
  return filter ? &filter->predicate() : nullptr;
}

}  // namespace millstream
