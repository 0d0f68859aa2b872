#include "exec/schema_unify.h"

#include <map>

#include <arrow/api.h>
#include <arrow/compute/api.h>
#include <arrow/extension/fixed_shape_tensor.h>
#include <arrow/extension/variable_shape_tensor.h>

namespace millstream {
namespace {

using arrow::extension::FixedShapeTensorType;
using arrow::extension::VariableShapeTensorType;

/// The value type and number of dimensions of a tensor column's type; null otherwise.
std::pair<std::shared_ptr<arrow::DataType>, int64_t> TensorKind(const arrow::DataType& type) {
  if (type.id() != arrow::Type::EXTENSION) return {nullptr, 0};
  const auto& ext = static_cast<const arrow::ExtensionType&>(type);
  if (ext.extension_name() == "arrow.fixed_shape_tensor") {
    const auto& fixed = static_cast<const FixedShapeTensorType&>(ext);
    return {fixed.value_type(), static_cast<int64_t>(fixed.ndim())};
  }
  if (ext.extension_name() == "arrow.variable_shape_tensor") {
    const auto& variable = static_cast<const VariableShapeTensorType&>(ext);
    return {variable.value_type(), variable.ndim()};
  }
  return {nullptr, 0};
}

/// `schemas` with each column that is a tensor of different shapes across them (same
/// value type and number of dimensions) made a variable-shape tensor, as Ray unifies them.
std::vector<std::shared_ptr<arrow::Schema>> UnifyTensorShapes(
    const std::vector<std::shared_ptr<arrow::Schema>>& schemas) {
  std::map<std::string, std::shared_ptr<arrow::DataType>> first;
  std::map<std::string, std::shared_ptr<arrow::DataType>> variable;
  for (const auto& schema : schemas) {
    for (const auto& field : schema->fields()) {
      auto [value_type, ndim] = TensorKind(*field->type());
      if (!value_type) continue;
      auto [it, inserted] = first.emplace(field->name(), field->type());
      if (inserted || it->second->Equals(*field->type())) continue;
      auto [seen_value_type, seen_ndim] = TensorKind(*it->second);
      if (seen_value_type->Equals(*value_type) && seen_ndim == ndim) {
        variable[field->name()] =
            arrow::extension::variable_shape_tensor(value_type, static_cast<int32_t>(ndim));
      }
    }
  }
  if (variable.empty()) return schemas;
  std::vector<std::shared_ptr<arrow::Schema>> out;
  for (const auto& schema : schemas) {
    arrow::FieldVector fields;
    for (const auto& field : schema->fields()) {
      auto it = variable.find(field->name());
      fields.push_back(it != variable.end() && TensorKind(*field->type()).first ? field->WithType(it->second)
                                                                                : field);
    }
    out.push_back(arrow::schema(std::move(fields), schema->metadata()));
  }
  return out;
}

/// A fixed-shape tensor column as a variable-shape tensor of the same cells.
arrow::Result<std::shared_ptr<arrow::Array>> ToVariableShape(
    const std::shared_ptr<arrow::Array>& column, const std::shared_ptr<arrow::DataType>& type) {
  const auto& fixed_type = static_cast<const FixedShapeTensorType&>(*column->type());
  const auto& storage = *static_cast<const arrow::ExtensionArray&>(*column).storage();
  ARROW_ASSIGN_OR_RAISE(auto data, arrow::compute::Cast(storage, arrow::list(fixed_type.value_type())));
  arrow::Int32Builder dims;
  const auto& cell_shape = fixed_type.shape();
  ARROW_RETURN_NOT_OK(dims.Reserve(column->length() * static_cast<int64_t>(cell_shape.size())));
  for (int64_t i = 0; i < column->length(); ++i) {
    for (int64_t d : cell_shape) dims.UnsafeAppend(static_cast<int32_t>(d));
  }
  ARROW_ASSIGN_OR_RAISE(auto dim_values, dims.Finish());
  ARROW_ASSIGN_OR_RAISE(auto shape, arrow::FixedSizeListArray::FromArrays(
                                        dim_values, static_cast<int32_t>(cell_shape.size())));
  const auto& ext_type = static_cast<const arrow::ExtensionType&>(*type);
  ARROW_ASSIGN_OR_RAISE(auto struct_array,
                        arrow::StructArray::Make({data, shape}, ext_type.storage_type()->fields(),
                                                 storage.null_bitmap(), storage.null_count(), storage.offset()));
  return arrow::ExtensionType::WrapArray(type, struct_array);
}

}  // namespace

bool SameColumns(const arrow::Schema& a, const arrow::Schema& b) {
  if (a.num_fields() != b.num_fields()) return false;
  for (int i = 0; i < a.num_fields(); ++i) {
    if (a.field(i)->name() != b.field(i)->name() || !a.field(i)->type()->Equals(*b.field(i)->type())) {
      return false;
    }
  }
  return true;
}

arrow::Result<std::shared_ptr<arrow::Schema>> UnifyBlockSchemas(
    const std::vector<std::shared_ptr<arrow::Schema>>& schemas) {
  if (schemas.empty()) return arrow::schema({});
  bool all_same = true;
  for (size_t i = 1; i < schemas.size() && all_same; ++i) {
    all_same = SameColumns(*schemas[0], *schemas[i]);
  }
  if (all_same) return schemas[0];
  // Arrow's message already names the column and both types ("Unable to merge: Field a
  // has incompatible types: int64 vs string").
  return arrow::UnifySchemas(UnifyTensorShapes(schemas), arrow::Field::MergeOptions::Permissive());
}

arrow::Result<Block> CastBlockToSchema(const Block& block,
                                       const std::shared_ptr<arrow::Schema>& schema) {
  const auto& from = *block->schema();
  if (SameColumns(from, *schema)) {
    return from.Equals(*schema, /*check_metadata=*/false) ? block : block->ReplaceSchema(schema);
  }
  for (const auto& field : from.fields()) {
    if (schema->GetFieldIndex(field->name()) < 0) {
      return arrow::Status::Invalid("column '", field->name(), "' (", field->type()->ToString(),
                                    ") is not in the schema to cast to: ", schema->ToString());
    }
  }
  std::vector<std::shared_ptr<arrow::Array>> columns;
  columns.reserve(schema->num_fields());
  for (const auto& field : schema->fields()) {
    int index = from.GetFieldIndex(field->name());
    if (index < 0) {
      ARROW_ASSIGN_OR_RAISE(auto nulls, arrow::MakeArrayOfNull(field->type(), block->num_rows()));
      columns.push_back(std::move(nulls));
      continue;
    }
    auto column = block->column(index);
    if (column->type()->Equals(*field->type())) {
      columns.push_back(std::move(column));
      continue;
    }
    if (TensorKind(*column->type()).first && TensorKind(*field->type()).first &&
        static_cast<const arrow::ExtensionType&>(*column->type()).extension_name() == "arrow.fixed_shape_tensor") {
      ARROW_ASSIGN_OR_RAISE(auto variable, ToVariableShape(column, field->type()));
      columns.push_back(std::move(variable));
      continue;
    }
    auto cast = arrow::compute::Cast(*column, field->type());
    if (!cast.ok()) {
      return arrow::Status::TypeError("column '", field->name(), "': cannot convert ",
                                      column->type()->ToString(), " to ", field->type()->ToString(),
                                      ": ", cast.status().message());
    }
    columns.push_back(std::move(cast).ValueUnsafe());
  }
  return arrow::RecordBatch::Make(schema, block->num_rows(), std::move(columns));
}

arrow::Result<std::vector<Block>> UnifyBlocks(std::vector<Block> blocks) {
  std::vector<std::shared_ptr<arrow::Schema>> schemas;
  schemas.reserve(blocks.size());
  for (const auto& block : blocks) schemas.push_back(block->schema());
  ARROW_ASSIGN_OR_RAISE(auto schema, UnifyBlockSchemas(schemas));
  for (auto& block : blocks) {
    ARROW_ASSIGN_OR_RAISE(block, CastBlockToSchema(block, schema));
  }
  return blocks;
}

arrow::Result<Block> ConcatenateBlocks(std::vector<Block> blocks) {
  if (blocks.size() == 1) return blocks[0];
  ARROW_ASSIGN_OR_RAISE(blocks, UnifyBlocks(std::move(blocks)));
  return arrow::ConcatenateRecordBatches(blocks);
}

}  // namespace millstream
