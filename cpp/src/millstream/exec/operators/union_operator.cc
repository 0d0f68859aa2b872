#include <deque>

#include "exec/operators/operators.h"

namespace millstream {
namespace {

/// Streams the bundles of all its inputs. Ordered, it hands on all of input 0, then all
/// of input 1...: later inputs wait (counted in its usage) until the earlier are done.
/// Runs no tasks.
class UnionOperator : public PhysicalOperator {
 public:
  explicit UnionOperator(int num_inputs)
      : PhysicalOperator("Union", num_inputs), pending_(num_inputs) {}

  std::string Describe() const override { return "UnionOperator[" + std::to_string(num_inputs()) + " inputs]"; }

  void AddInput(int input_index, RefBundle bundle) override {
    if (stopped()) return;
    CountInput(bundle);
    CountOutput(static_cast<int64_t>(bundle.blocks.size()), bundle.rows, bundle.bytes);
    if (!ordered_ || input_index == current_) {
      PushOutput(std::move(bundle));
      return;
    }
    pending_bytes_ += bundle.bytes;
    pending_[input_index].push_back(std::move(bundle));
  }

  void InputDone(int input_index) override {
    PhysicalOperator::InputDone(input_index);
    // Ordered: move on past every input that is done, handing on what waited.
    while (current_ < num_inputs() && inputs_done_[current_]) {
      if (++current_ >= num_inputs()) break;
      for (auto& bundle : pending_[current_]) {
        pending_bytes_ -= bundle.bytes;
        PushOutput(std::move(bundle));
      }
      pending_[current_].clear();
    }
  }

  int64_t CurrentUsage() const override { return OutputQueueBytes() + pending_bytes_; }

  bool Completed() const override { return AllInputsDone() && pending_bytes_ == 0 && Drained(); }

  void Stop() override {
    PhysicalOperator::Stop();
    for (auto& queue : pending_) queue.clear();
    pending_bytes_ = 0;
  }

 private:
  bool Drained() const {
    for (const auto& queue : pending_) {
      if (!queue.empty()) return false;
    }
    return true;
  }

  std::vector<std::deque<RefBundle>> pending_;
  int64_t pending_bytes_ = 0;
  int current_ = 0;
};

}  // namespace

std::unique_ptr<PhysicalOperator> MakeUnionOperator(int num_inputs) {
  return std::make_unique<UnionOperator>(num_inputs);
}

}  // namespace millstream
