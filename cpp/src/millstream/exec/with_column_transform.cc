#include "exec/with_column_transform.h"
#include "runtime/counting_memory_pool.h"

#include <arrow/api.h>
#include <arrow/compute/api.h>

namespace millstream {
namespace {

namespace cp = arrow::compute;

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "" : ", ") + name;
  return out;
}

class WithColumnState : public TransformState {
 public:
  explicit WithColumnState(const WithColumnTransform* transform) : transform_(transform) {}

  arrow::Status Push(Block block, const Emit& emit) override {
    if (!bound_schema_ || !bound_schema_->Equals(*block->schema())) {
      ARROW_ASSIGN_OR_RAISE(bound_, transform_->BindShared(block->schema()));
      bound_schema_ = block->schema();
    }
    ARROW_ASSIGN_OR_RAISE(auto out, transform_->Apply(block, bound_));
    return emit(std::move(out));
  }

 private:
  const WithColumnTransform* transform_;
  cp::Expression bound_;
  std::shared_ptr<arrow::Schema> bound_schema_;
};

}  // namespace

WithColumnTransform::WithColumnTransform(std::string name, cp::Expression expr)
    : column_(std::move(name)), expr_(std::move(expr)) {}

std::string WithColumnTransform::name() const {
  return "WithColumn(" + column_ + "=" + expr_.ToString() + ")";
}

arrow::Result<std::unique_ptr<TransformState>> WithColumnTransform::MakeState(
    const TaskContext&) const {
  return std::make_unique<WithColumnState>(this);
}

arrow::Result<cp::Expression> WithColumnTransform::Bind(const arrow::Schema& schema) const {
  for (const auto& ref : cp::FieldsInExpression(expr_)) {
    auto found = ref.FindOneOrNone(schema);
    if (ref.IsName() && found.ok() && found->empty()) {
      return arrow::Status::KeyError("column '", *ref.name(), "' not found; the columns are: ",
                                     JoinNames(schema.field_names()));
    }
  }
  auto bound = expr_.Bind(schema);
  if (!bound.ok()) {
    return bound.status().WithMessage(bound.status().message(),
                                      " (columns: ", JoinNames(schema.field_names()), ")");
  }
  return bound;
}

arrow::Result<cp::Expression> WithColumnTransform::BindShared(
    const std::shared_ptr<arrow::Schema>& schema) const {
  return bind_cache_.Get(schema, [this](const arrow::Schema& s) { return Bind(s); });
}

arrow::Result<std::shared_ptr<arrow::Schema>> WithColumnTransform::Apply(
    const arrow::Schema& schema) const {
  ARROW_ASSIGN_OR_RAISE(auto bound, Bind(schema));
  auto field = arrow::field(column_, bound.type()->GetSharedPtr());
  int index = schema.GetFieldIndex(column_);
  if (index >= 0) return schema.SetField(index, field);
  return schema.AddField(schema.num_fields(), field);
}

arrow::Result<Block> WithColumnTransform::Apply(const Block& block,
                                                const cp::Expression& bound) const {
  cp::ExecContext exec(EngineMemoryPool());  // the new column counts as the engine's memory
  ARROW_ASSIGN_OR_RAISE(auto result, cp::ExecuteScalarExpression(bound, cp::ExecBatch(*block), &exec));
  std::shared_ptr<arrow::Array> values;
  if (result.is_scalar()) {
    ARROW_ASSIGN_OR_RAISE(values, arrow::MakeArrayFromScalar(*result.scalar(), block->num_rows(), EngineMemoryPool()));
  } else {
    values = result.make_array();
  }
  auto field = arrow::field(column_, values->type());
  int index = block->schema()->GetFieldIndex(column_);
  if (index >= 0) return block->SetColumn(index, field, values);
  return block->AddColumn(block->num_columns(), field, values);
}

std::shared_ptr<const Transform> MakeWithColumnTransform(std::string name, cp::Expression expr) {
  return std::make_shared<WithColumnTransform>(std::move(name), std::move(expr));
}

}  // namespace millstream
