#pragma once

#include <memory>
#include <mutex>

#include <arrow/compute/expression.h>
#include <arrow/result.h>
#include <arrow/type.h>

namespace millstream {

/// An expression bound to the last schema it was asked for, shared by the tasks of one
/// operator: each task would otherwise bind it again for its first block, and binding
/// costs more than evaluating a predicate on a small block. Thread-safe.
class BindCache {
 public:
  /// The bound expression for `schema`: the cached one if the schema equals the last,
  /// else `bind(schema)`'s (an error is not cached).
  template <typename Bind>
  arrow::Result<arrow::compute::Expression> Get(const std::shared_ptr<arrow::Schema>& schema,
                                                Bind&& bind) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (schema_ && (schema_ == schema || schema_->Equals(*schema))) return bound_;
    ARROW_ASSIGN_OR_RAISE(bound_, bind(*schema));
    schema_ = schema;
    return bound_;
  }

 private:
  std::mutex mutex_;
  std::shared_ptr<arrow::Schema> schema_;
  arrow::compute::Expression bound_;
};

}  // namespace millstream
