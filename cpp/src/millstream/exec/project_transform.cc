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
  std::vector<std::string> sources;  // each output column's name before renaming
  for (auto& field : fields) {
    sources.push_back(field->name());
    auto it = renames_.find(field->name());
    if (it != renames_.end()) field = field->WithName(it->second);
  }
  // Every output name once: a rename onto an existing name (or two onto one) would leave
  // two columns that no name can tell apart.
  for (size_t i = 0; i < fields.size(); ++i) {
    for (size_t j = i + 1; j < fields.size(); ++j) {
      if (fields[i]->name() != fields[j]->name()) continue;
      if (!select_ && !renames_.count(sources[i]) && !renames_.count(sources[j])) continue;
      if (!select_ || !renames_.empty()) {
        return arrow::Status::Invalid("rename_columns: two columns would be named '", fields[i]->name(),
                                      "' (from '", sources[i], "' and '", sources[j],
                                      "'); the columns are: ", JoinNames(schema.field_names()));
      }
      return arrow::Status::Invalid("select_columns: column '", fields[i]->name(),
                                    "' is selected more than once");
    }
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
