#include <algorithm>

#include "exec/operators/operators.h"

namespace millstream {
namespace {

/// Passes the first `limit` rows (slicing the block that crosses it), then wants no more
/// input: the executor stops everything upstream. Runs no tasks.
class LimitOperator : public PhysicalOperator {
 public:
  explicit LimitOperator(int64_t limit)
      : PhysicalOperator("Limit[" + std::to_string(limit) + "]", 1), limit_(limit) {}

  std::string Describe() const override { return "LimitOperator[" + std::to_string(limit_) + "]"; }

  void AddInput(int, RefBundle bundle) override {
    if (stopped()) return;
    CountInput(bundle);
    for (auto& ref : bundle.blocks) {
      int64_t remaining = limit_ - rows_passed_;
      if (remaining <= 0) break;
      RefBundle out;
      if (ref.rows() > remaining) {
        out = RefBundle::Of(ref.Get().ValueOrDie()->Slice(0, remaining));
      } else {
        out.Add(std::move(ref));
      }
      rows_passed_ += out.rows;
      CountOutput(1, out.rows, out.bytes);
      PushOutput(std::move(out));
    }
    if (InputSatisfied()) InputDone(0);
  }

  bool InputSatisfied() const override { return rows_passed_ >= limit_; }
  bool NeedsOrderedInput() const override { return true; }

  int64_t EstimateRowsOut(int64_t rows_in) const override {
    return std::min(PhysicalOperator::EstimateRowsOut(rows_in), std::max(limit_, stats.rows_out));
  }

 private:
  int64_t limit_;
  int64_t rows_passed_ = 0;
};

}  // namespace

std::unique_ptr<PhysicalOperator> MakeLimitOperator(int64_t limit) {
  return std::make_unique<LimitOperator>(limit);
}

}  // namespace millstream
