#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <typeindex>
#include <unordered_map>

#include <arrow/result.h>

#include "exec/physical_operator.h"
#include "exec/streaming_executor.h"
#include "plan/logical_operator.h"
#include "runtime/gpu_ids.h"

namespace millstream {

/// \brief What a factory gets while the planner turns one logical node into its
/// physical operator.
struct PlanningContext {
  const DataContext& context;
  EffectiveLimits limits;
  /// The consumer of this node needs at most this many rows (a limit above a row-
  /// preserving chain): a read may plan fewer rows.
  std::optional<int64_t> row_limit;
  /// GPU ids for the maps with num_gpus, shared by the whole plan.
  std::shared_ptr<GpuAllocator> gpus;
};

/// \brief Logical operator class → physical operator factory. A new operator is one
/// file and one Register line (planner/registry.cc).
class PlannerRegistry {
 public:
  using Factory = std::function<arrow::Result<std::unique_ptr<PhysicalOperator>>(
      const PlanPtr& logical, const PlanningContext& planning)>;

  template <typename Logical>
  void Register(Factory factory) {
    factories_[std::type_index(typeid(Logical))] = std::move(factory);
  }
  const Factory* Find(const LogicalOperator& logical) const;

  /// The registry with every built-in operator.
  static const PlannerRegistry& Default();

 private:
  std::unordered_map<std::type_index, Factory> factories_;
};

/// Turns an optimized logical plan into physical operators (one per node; a node that
/// is the input of two consumers is planned twice), in topological order.
arrow::Result<PhysicalPlan> PlanPhysical(const PlanPtr& optimized, const DataContext& context);

}  // namespace millstream
