#include <algorithm>

#include "exec/physical_operator.h"
#include "exec/policies/backpressure_policy.h"

namespace millstream {
namespace {

class MemoryBudgetPolicy : public BackpressurePolicy {
 public:
  std::string name() const override { return "MemoryBudget"; }

  bool CanLaunch(const ExecutionView& execution, size_t i) const override {
    const auto& ops = execution.operators();
    const auto& op = *ops[i];
    if (op.NextTaskRelievesMemory()) return true;
    // No finished task to size the next one from: run one first (a UDF's output may be
    // far larger than its input), then size the rest from what it produced. Engine steps
    // alone are sized from their input (a read's from the file's metadata), while the
    // limit would hold even kFirstWaveMargin times that for every task then running
    // (metadata sizes miss decode growth, e.g. a dictionary-encoded string column).
    const int64_t limit = execution.limits().memory;
    const int64_t estimate = std::max(op.EstimateNextTaskBytes(), execution.TaskScratchPeak(i));
    if (op.stats.tasks > 0 && op.ActiveTasks() > 0 && op.ActiveTasks() == op.stats.tasks) {
      constexpr double kFirstWaveMargin = 4;
      const double wave = static_cast<double>(op.ActiveTasks() + 1) * kFirstWaveMargin *
                          static_cast<double>(estimate);
      const bool sized = op.OutputSizedByInput() &&
                         static_cast<double>(execution.TotalUsage()) + wave <= static_cast<double>(limit);
      if (!sized) return false;
    }
    if (execution.TotalUsage() + estimate > limit) return false;
    const auto& context = execution.context();
    if (!context.op_resource_reservation_enabled) return true;
    const double ratio = std::clamp(context.op_resource_reservation_ratio, 0.0, 1.0);
    int64_t task_ops = 0;
    for (const auto& o : ops) task_ops += o->RunsTasks();
    const int64_t reserved = static_cast<int64_t>(limit * ratio / std::max<int64_t>(1, task_ops));
    const int64_t shared = static_cast<int64_t>(limit * (1 - ratio));
    int64_t shared_used_by_others = 0;
    for (size_t j = 0; j < ops.size(); ++j) {
      if (j == i || !ops[j]->RunsTasks()) continue;
      shared_used_by_others += std::max<int64_t>(0, execution.OperatorUsage(j) - reserved);
    }
    const int64_t mine = execution.OperatorUsage(i) + estimate;
    return std::max<int64_t>(0, mine - reserved) <= shared - shared_used_by_others;
  }
};

}  // namespace

std::unique_ptr<BackpressurePolicy> MakeMemoryBudgetPolicy() {
  return std::make_unique<MemoryBudgetPolicy>();
}

std::vector<std::unique_ptr<BackpressurePolicy>> DefaultBackpressurePolicies() {
  std::vector<std::unique_ptr<BackpressurePolicy>> policies;
  policies.push_back(MakeDownstreamCapacityPolicy());
  policies.push_back(MakeMemoryBudgetPolicy());
  return policies;
}

}  // namespace millstream
