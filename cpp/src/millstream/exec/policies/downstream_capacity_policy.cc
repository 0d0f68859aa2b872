#include "exec/physical_operator.h"
#include "exec/policies/backpressure_policy.h"

namespace millstream {
namespace {

class DownstreamCapacityPolicy : public BackpressurePolicy {
 public:
  std::string name() const override { return "DownstreamCapacity"; }

  bool CanLaunch(const ExecutionView& execution, size_t i) const override {
    const double ratio = execution.context().downstream_capacity_backpressure_ratio;
    const auto& ops = execution.operators();
    const int downstream = ops[i]->downstream;
    if (ratio <= 0 || downstream < 0) return true;
    const auto& next = *ops[downstream];
    auto capacity = next.TaskCapacity(execution.limits());
    if (!capacity) return true;
    return static_cast<double>(next.QueuedInputBundles()) <= ratio * *capacity;
  }
};

}  // namespace

std::unique_ptr<BackpressurePolicy> MakeDownstreamCapacityPolicy() {
  return std::make_unique<DownstreamCapacityPolicy>();
}

}  // namespace millstream
