#pragma once

#include <memory>
#include <vector>

#include <arrow/result.h>
#include <arrow/type_fwd.h>

#include "millstream/block.h"

namespace millstream {

/// \brief Same column names and types, in the same order (nullability and metadata aside).
bool SameColumns(const arrow::Schema& a, const arrow::Schema& b);

/// \brief The one schema that blocks with different schemas meet in: every column of
/// any of them (in order of first appearance), each with a type that holds all of its
/// values.
///
/// Promotion follows Arrow's `Field::MergeOptions::Permissive()` (what
/// `pa.concat_tables(promote_options="permissive")` does): null to any type, integers to
/// wider integers or to floats, narrower to wider floats, binary/string to their large
/// forms, finer temporal units, decimals. Any other pair of types (string vs int64) is an
/// error naming the column and both types. Nullability and metadata are ignored. Tensor
/// columns (`arrow.fixed_shape_tensor`, `arrow.variable_shape_tensor`) of one value type and
/// number of dimensions but different shapes become a variable-shape tensor, as in Ray.
arrow::Result<std::shared_ptr<arrow::Schema>> UnifyBlockSchemas(
    const std::vector<std::shared_ptr<arrow::Schema>>& schemas);

/// \brief `block` with exactly the columns of `schema`, in its order: a missing column is
/// all null, a column of another type is cast (to a promoted type of UnifyBlockSchemas).
/// Columns of `block` not in `schema` are an error. Returns `block` itself when its
/// schema already matches. Errors name the column and both types.
arrow::Result<Block> CastBlockToSchema(const Block& block,
                                       const std::shared_ptr<arrow::Schema>& schema);

/// \brief `blocks` all with one schema, UnifyBlockSchemas of theirs; unchanged (no copy) when
/// they already share one.
arrow::Result<std::vector<Block>> UnifyBlocks(std::vector<Block> blocks);

/// \brief One block of all `blocks`' rows, in order, with their unified schema.
arrow::Result<Block> ConcatenateBlocks(std::vector<Block> blocks);

}  // namespace millstream
