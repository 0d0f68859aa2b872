#include "exec/schema_unify.h"

#include <arrow/api.h>
#include <arrow/compute/api.h>

namespace millstream {

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
  return arrow::UnifySchemas(schemas, arrow::Field::MergeOptions::Permissive());
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
