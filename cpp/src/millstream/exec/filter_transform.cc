#include <arrow/api.h>
#include <arrow/compute/api.h>

#include "exec/transforms.h"

namespace millstream {
namespace {

namespace cp = arrow::compute;

class FilterState : public TransformState {
 public:
  explicit FilterState(const cp::Expression& predicate) : predicate_(predicate) {}

  arrow::Status Push(Block block, const Emit& emit) override {
    if (!bound_schema_ || !bound_schema_->Equals(*block->schema())) {
      auto bound = predicate_.Bind(*block->schema());
      if (!bound.ok()) {
        return arrow::Status::Invalid("Filter(", predicate_.ToString(),
                                      "): ", bound.status().message(),
                                      " (columns: ", block->schema()->ToString(), ")");
      }
      if (bound->type()->id() != arrow::Type::BOOL) {
        // A number or string is no predicate: `0`, `1 - 1`, `a + b` would keep rows by
        // whatever their bytes read as a boolean.
        return arrow::Status::TypeError("filter predicate ", predicate_.ToString(), " is of type ",
                                        bound->type()->ToString(),
                                        ", not boolean; compare it (e.g. `x != 0`)");
      }
      bound_ = *bound;
      bound_schema_ = block->schema();
    }
    ARROW_ASSIGN_OR_RAISE(auto mask,
                          cp::ExecuteScalarExpression(bound_, cp::ExecBatch(*block)));
    if (mask.is_scalar()) {
      const auto& scalar = mask.scalar_as<arrow::BooleanScalar>();
      if (scalar.is_valid && scalar.value) return emit(std::move(block));
      return emit(block->Slice(0, 0));
    }
    ARROW_ASSIGN_OR_RAISE(auto filtered, cp::Filter(block, mask));
    return emit(filtered.record_batch());
  }

 private:
  cp::Expression predicate_;
  cp::Expression bound_;
  std::shared_ptr<arrow::Schema> bound_schema_;
};

class FilterTransform : public Transform {
 public:
  explicit FilterTransform(cp::Expression predicate) : predicate_(std::move(predicate)) {}
  std::string name() const override { return "Filter(" + predicate_.ToString() + ")"; }
  arrow::Result<std::unique_ptr<TransformState>> MakeState(const TaskContext&) const override {
    return std::make_unique<FilterState>(predicate_);
  }

 private:
  cp::Expression predicate_;
};

}  // namespace

std::shared_ptr<const Transform> MakeFilterTransform(cp::Expression predicate) {
  return std::make_shared<FilterTransform>(std::move(predicate));
}

}  // namespace millstream
