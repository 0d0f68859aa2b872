#include "exec/transforms.h"
#include "runtime/counting_memory_pool.h"
#include "shuffle/aggregate.h"

namespace millstream {
namespace {

class PartialAggregateState : public TransformState {
 public:
  explicit PartialAggregateState(std::shared_ptr<const PartialAggregation> aggregation)
      : aggregation_(std::move(aggregation)) {}

  arrow::Status Push(Block block, const Emit& emit) override {
    // The partial rows count as the engine's memory, as the exchange's own would.
    ARROW_ASSIGN_OR_RAISE(auto partial, aggregation_->Apply(std::move(block), EngineMemoryPool()));
    return emit(std::move(partial));
  }

 private:
  std::shared_ptr<const PartialAggregation> aggregation_;
};

class PartialAggregateTransform : public Transform {
 public:
  PartialAggregateTransform(std::shared_ptr<const PartialAggregation> aggregation, std::string name)
      : aggregation_(std::move(aggregation)), name_(std::move(name)) {}
  std::string name() const override { return name_; }
  // One row per group of a block: never more rows than it got.
  bool output_sized_by_input() const override { return true; }
  arrow::Result<std::unique_ptr<TransformState>> MakeState(const TaskContext&) const override {
    return std::make_unique<PartialAggregateState>(aggregation_);
  }

 private:
  std::shared_ptr<const PartialAggregation> aggregation_;
  std::string name_;
};

}  // namespace

std::shared_ptr<const Transform> MakePartialAggregateTransform(std::shared_ptr<const PartialAggregation> aggregation,
                                                               std::string name) {
  return std::make_shared<PartialAggregateTransform>(std::move(aggregation), std::move(name));
}

}  // namespace millstream
