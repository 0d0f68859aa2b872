#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <arrow/result.h>
#include <arrow/type_fwd.h>

namespace millstream {

class LogicalOperator;
using PlanPtr = std::shared_ptr<const LogicalOperator>;

/// \brief A node of a logical plan: what the user asked, not how it runs.
///
/// A plan is a DAG: each node holds its inputs (none for a read, one for a map or a limit,
/// several for a union). Nodes are immutable; rewriting a plan builds new nodes
/// (WithInputs). Each kind is a class of its own (plan/logical_operators.h) with its own
/// fields; the planner finds a node's physical operator by its class, and rules find the
/// nodes they rewrite by casting, never by name.
class LogicalOperator {
 public:
  explicit LogicalOperator(std::vector<PlanPtr> inputs) : inputs_(std::move(inputs)) {}
  virtual ~LogicalOperator() = default;

  const std::vector<PlanPtr>& inputs() const { return inputs_; }
  /// The first input, or null for a source.
  const PlanPtr& input() const;

  /// "ReadParquet", "MapBatches(f)", "ReadParquet->MapBatches(f)->Filter(g)", "Limit[10]".
  virtual std::string Name() const = 0;
  /// One output row per input row, in order: a limit may move ahead of it.
  virtual bool RowPreserving() const { return false; }
  /// Rows out, from the inputs' row counts (unset: unknown) when metadata gives it.
  virtual std::optional<int64_t> RowsOut(const std::vector<std::optional<int64_t>>& inputs) const {
    return std::nullopt;
  }
  /// The output schema from the inputs' schemas (null: unknown), when known without
  /// running anything.
  virtual std::shared_ptr<arrow::Schema> SchemaOut(
      const std::vector<std::shared_ptr<arrow::Schema>>& inputs) const {
    return nullptr;
  }
  /// The same operator over other inputs (as many as it has).
  virtual PlanPtr WithInputs(std::vector<PlanPtr> inputs) const = 0;

  template <typename T>
  const T* As() const {
    return dynamic_cast<const T*>(this);
  }

 private:
  std::vector<PlanPtr> inputs_;
};

/// The operators of a linear plan from source to sink, following each node's first input.
std::vector<PlanPtr> PlanChain(const PlanPtr& sink);
/// One line per operator, sink first, each input indented under its consumer.
std::string FormatPlan(const PlanPtr& sink);
/// Rewrites `plan` bottom-up: `rewrite` sees each node after its inputs were rewritten
/// (already attached) and returns its replacement.
arrow::Result<PlanPtr> RewriteBottomUp(const PlanPtr& plan,
                                       const std::function<arrow::Result<PlanPtr>(PlanPtr)>& rewrite);
/// What metadata tells without running the plan: its rows and its schema (unset/null
/// when unknown).
std::optional<int64_t> PlanRows(const PlanPtr& plan);
std::shared_ptr<arrow::Schema> PlanSchema(const PlanPtr& plan);

}  // namespace millstream
