#pragma once

#include <memory>
#include <string>
#include <vector>

#include "millstream/context.h"

namespace millstream {

class PhysicalOperator;

/// \brief What a policy may read of the execution (under the executor's lock).
class ExecutionView {
 public:
  virtual ~ExecutionView() = default;
  virtual const std::vector<std::unique_ptr<PhysicalOperator>>& operators() const = 0;
  /// Bytes accounted to operator `i`: what it holds and the input queued downstream of it.
  virtual int64_t OperatorUsage(size_t i) const = 0;
  virtual int64_t TotalUsage() const = 0;
  /// The most bytes one finished task of operator `i` held that nothing else counted
  /// (decode buffers, compute scratch: its memory meter's peak).
  virtual int64_t TaskScratchPeak(size_t i) const = 0;
  virtual const EffectiveLimits& limits() const = 0;
  virtual const DataContext& context() const = 0;
};

/// \brief A rule that may hold back a task launch (Ray's backpressure policies). The
/// executor launches a ready task only when every policy allows it — except when
/// nothing runs and the consumer waits, when one task runs past them (liveness).
class BackpressurePolicy {
 public:
  virtual ~BackpressurePolicy() = default;
  virtual std::string name() const = 0;
  /// Whether operator `op` may launch its next task now.
  virtual bool CanLaunch(const ExecutionView& execution, size_t op) const = 0;
};

/// Memory: the task's expected bytes (its output, or the scratch a finished task of the
/// operator held, whichever is larger) fit the limit, within the operator's reservation
/// plus its share of the unreserved part (op_resource_reservation_ratio); the first task
/// of an operator with a user function runs alone, so the rest are sized from what it
/// produced (an operator of engine steps only is sized from its input).
std::unique_ptr<BackpressurePolicy> MakeMemoryBudgetPolicy();
/// Downstream capacity: an operator waits while the queue of the operator it feeds holds
/// more bundles than `downstream_capacity_backpressure_ratio` times that operator's task
/// capacity.
std::unique_ptr<BackpressurePolicy> MakeDownstreamCapacityPolicy();

/// The policies every execution applies, in order.
std::vector<std::unique_ptr<BackpressurePolicy>> DefaultBackpressurePolicies();

}  // namespace millstream
