#pragma once

#include <memory>
#include <string>

#include <arrow/compute/expression.h>

#include "exec/bind_cache.h"
#include "exec/transform.h"

namespace millstream {

/// \brief Adds (or replaces) column `name` with the value of an Arrow compute expression
/// evaluated over each block; a scalar result is repeated for every row. Runs natively,
/// without Python.
class WithColumnTransform : public Transform {
 public:
  WithColumnTransform(std::string name, arrow::compute::Expression expr);
  std::string name() const override;
  bool row_preserving() const override { return true; }
  bool output_sized_by_input() const override { return true; }
  arrow::Result<std::unique_ptr<TransformState>> MakeState(const TaskContext&) const override;
  arrow::Result<std::shared_ptr<arrow::Schema>> SchemaOut(
      const std::shared_ptr<arrow::Schema>& input) const override {
    return Apply(*input);
  }

  /// The expression bound to `schema`; an error names a missing column and the columns.
  arrow::Result<arrow::compute::Expression> Bind(const arrow::Schema& schema) const;
  /// Bind, remembered for the last schema across the operator's tasks.
  arrow::Result<arrow::compute::Expression> BindShared(
      const std::shared_ptr<arrow::Schema>& schema) const;
  /// The output schema for blocks of `schema`.
  arrow::Result<std::shared_ptr<arrow::Schema>> Apply(const arrow::Schema& schema) const;
  /// Evaluates `bound` (from Bind on this block's schema) over `block`.
  arrow::Result<Block> Apply(const Block& block, const arrow::compute::Expression& bound) const;

 private:
  std::string column_;
  arrow::compute::Expression expr_;
  mutable BindCache bind_cache_;
};

/// A WithColumnTransform.
std::shared_ptr<const Transform> MakeWithColumnTransform(std::string name,
                                                         arrow::compute::Expression expr);

}  // namespace millstream
