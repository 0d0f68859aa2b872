#include <arrow/api.h>

#include "exec/transforms.h"

namespace millstream {
namespace {

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "" : ", ") + name;
  return out;
}

class ProjectState : public TransformState {
 public:
  explicit ProjectState(const ProjectTransform* transform) : transform_(transform) {}
  arrow::Status Push(Block block, const Emit& emit) override {
    ARROW_ASSIGN_OR_RAISE(auto out, transform_->Apply(block));
    return emit(std::move(out));
  }

 private:
  const ProjectTransform* transform_;
};

}  // namespace

ProjectTransform::ProjectTransform(std::optional<std::vector<std::string>> select,
                                   std::map<std::string, std::string> renames)
    : select_(std::move(select)), renames_(std::move(renames)) {}

std::string ProjectTransform::name() const {
  if (select_ && renames_.empty()) return "Project[" + JoinNames(*select_) + "]";
  std::vector<std::string> pairs;
  for (const auto& [from, to] : renames_) pairs.push_back(from + "->" + to);
  if (select_) return "Project[" + JoinNames(*select_) + "; " + JoinNames(pairs) + "]";
  return "RenameColumns[" + JoinNames(pairs) + "]";
}

arrow::Result<std::unique_ptr<TransformState>> ProjectTransform::MakeState(
    const TaskContext&) const {
  return std::make_unique<ProjectState>(this);
}

arrow::Result<std::shared_ptr<arrow::Schema>> ProjectTransform::Apply(
    const arrow::Schema& schema) const {
  arrow::FieldVector fields;
  if (select_) {
    for (const auto& column : *select_) {
      auto field = schema.GetFieldByName(column);
      if (!field) {
        return arrow::Status::KeyError("column '", column, "' not found; the columns are: ",
                                       JoinNames(schema.field_names()));
      }
      fields.push_back(field);
    }
  } else {
    fields = schema.fields();
  }
  for (const auto& [from, to] : renames_) {
    if (!schema.GetFieldByName(from)) {
      return arrow::Status::KeyError("column '", from, "' to rename not found; the columns are: ",
                                     JoinNames(schema.field_names()));
    }
  }
  for (auto& field : fields) {
    auto it = renames_.find(field->name());
    if (it != renames_.end()) field = field->WithName(it->second);
  }
  return arrow::schema(std::move(fields), schema.metadata());
}

arrow::Result<Block> ProjectTransform::Apply(const Block& block) const {
  ARROW_ASSIGN_OR_RAISE(auto schema, Apply(*block->schema()));
  if (!select_) return block->ReplaceSchema(schema);
  arrow::ArrayVector columns;
  for (const auto& column : *select_) {
    columns.push_back(block->GetColumnByName(column));
  }
  return arrow::RecordBatch::Make(schema, block->num_rows(), std::move(columns));
}

}  // namespace millstream
