#include "exec/physical_operator.h"

#include <algorithm>

namespace millstream {

PhysicalOperator::PhysicalOperator(std::string display_name, int num_inputs)
    : inputs_done_(num_inputs, false), display_name_(std::move(display_name)),
      num_inputs_(num_inputs) {}

void PhysicalOperator::InputDone(int input_index) { inputs_done_.at(input_index) = true; }

bool PhysicalOperator::AllInputsDone() const {
  return std::all_of(inputs_done_.begin(), inputs_done_.end(), [](bool done) { return done; });
}

RefBundle PhysicalOperator::TakeNext() {
  RefBundle bundle = std::move(output_queue_.front());
  output_queue_.pop_front();
  output_queue_bytes_ -= bundle.bytes;
  return bundle;
}

bool PhysicalOperator::Completed() const { return AllInputsDone() && ActiveTasks() == 0; }

void PhysicalOperator::Stop() {
  *stopped_ = true;
  std::fill(inputs_done_.begin(), inputs_done_.end(), true);
  ClearOutput();
}

int64_t PhysicalOperator::EstimateRowsOut(int64_t rows_in) const {
  if (Completed()) return stats.rows_out;
  return std::max(rows_in, stats.rows_out);
}

void PhysicalOperator::PushOutput(RefBundle bundle) {
  output_queue_bytes_ += bundle.bytes;
  output_queue_.push_back(std::move(bundle));
}

void PhysicalOperator::CountInput(const RefBundle& bundle) {
  stats.blocks_in += static_cast<int64_t>(bundle.blocks.size());
  stats.rows_in += bundle.rows;
  stats.bytes_in += bundle.bytes;
}

void PhysicalOperator::CountOutput(int64_t blocks, int64_t rows, int64_t bytes) {
  stats.blocks_out += blocks;
  stats.rows_out += rows;
  stats.bytes_out += bytes;
}

void PhysicalOperator::ClearOutput() {
  output_queue_.clear();
  output_queue_bytes_ = 0;
}

}  // namespace millstream
