#include <algorithm>
#include <deque>
#include <limits>

#include <arrow/api.h>

#include "exec/operators/operators.h"
#include "plan/logical_operators.h"

namespace millstream {
namespace {

/// Zips its inputs row by row as they stream in, without copying a row: whenever every
/// input has rows waiting, the next output block is the longest run of rows all of them
/// have, made of zero-copy slices of their blocks put side by side. Block boundaries
/// need not agree (an output block ends wherever any input's block does). Its inputs
/// arrive in order (NeedsOrderedInput). Runs no tasks; inputs of different lengths fail
/// the execution through status().
class ZipOperator : public PhysicalOperator {
 public:
  explicit ZipOperator(int num_inputs)
      : PhysicalOperator("Zip", num_inputs), queues_(num_inputs), offsets_(num_inputs, 0),
        rows_(num_inputs, 0) {}

  std::string Describe() const override {
    return "ZipOperator[" + std::to_string(num_inputs()) + " inputs]";
  }
  bool NeedsOrderedInput() const override { return true; }

  void AddInput(int input_index, RefBundle bundle) override {
    if (stopped() || !error_.ok()) return;
    CountInput(bundle);
    for (const auto& ref : bundle.blocks) {
      auto block = ref.Get();
      if (!block.ok()) {
        error_ = block.status();
        return;
      }
      rows_[input_index] += ref.rows();
      if (ref.rows() == 0) continue;
      queued_bytes_ += ref.bytes();
      queues_[input_index].push_back({std::move(*block), ref.bytes()});
    }
    Zip();
    CheckLengths();
  }

  void InputDone(int input_index) override {
    PhysicalOperator::InputDone(input_index);
    CheckLengths();
  }

  /// A stopped zip (a satisfied limit downstream) had its inputs cut short: no error.
  arrow::Status status() const override { return stopped() ? arrow::Status::OK() : error_; }
  int64_t CurrentUsage() const override { return OutputQueueBytes() + queued_bytes_; }

  bool Completed() const override {
    if (!AllInputsDone()) return false;
    for (const auto& queue : queues_) {
      if (!queue.empty()) return false;
    }
    return true;
  }

  void Stop() override {
    PhysicalOperator::Stop();
    for (auto& queue : queues_) queue.clear();
    queued_bytes_ = 0;
  }

 private:
  struct Queued {
    Block block;
    int64_t bytes;
  };

  /// Hands on every run of rows that all inputs have.
  void Zip() {
    while (std::all_of(queues_.begin(), queues_.end(), [](const auto& q) { return !q.empty(); })) {
      int64_t rows = std::numeric_limits<int64_t>::max();
      for (int i = 0; i < num_inputs(); ++i) {
        rows = std::min(rows, queues_[i].front().block->num_rows() - offsets_[i]);
      }
      std::vector<std::shared_ptr<arrow::Schema>> schemas;
      arrow::ArrayVector columns;
      for (int i = 0; i < num_inputs(); ++i) {
        const auto& head = queues_[i].front().block;
        auto piece = head->Slice(offsets_[i], rows);
        schemas.push_back(head->schema());
        for (const auto& column : piece->columns()) columns.push_back(column);
        offsets_[i] += rows;
        if (offsets_[i] == head->num_rows()) {
          queued_bytes_ -= queues_[i].front().bytes;
          queues_[i].pop_front();
          offsets_[i] = 0;
        }
      }
      if (!schema_ || !SameSchemas(schemas)) {
        last_schemas_ = schemas;
        schema_ = ZipSchemas(schemas);
      }
      auto zipped = arrow::RecordBatch::Make(schema_, rows, std::move(columns));
      CountOutput(1, rows, BlockBytes(*zipped));
      PushOutput(RefBundle::Of(std::move(zipped)));
    }
  }

  bool SameSchemas(const std::vector<std::shared_ptr<arrow::Schema>>& schemas) const {
    for (size_t i = 0; i < schemas.size(); ++i) {
      if (schemas[i] != last_schemas_[i] && !schemas[i]->Equals(*last_schemas_[i])) return false;
    }
    return true;
  }

  /// Compares each input with the first, as Ray does: they differ once either of the two
  /// is done and the other has more rows, or both are done with different counts. Found
  /// early, the error stops the execution before the longer input is buffered whole.
  void CheckLengths() {
    if (!error_.ok() || stopped()) return;
    for (int other = 1; other < num_inputs(); ++other) {
      const bool first_done = inputs_done_[0], other_done = inputs_done_[other];
      const bool differ = (first_done && rows_[other] > rows_[0]) ||
                          (other_done && rows_[0] > rows_[other]) ||
                          (first_done && other_done && rows_[0] != rows_[other]);
      if (!differ) continue;
      std::string partial;
      if (!first_done || !other_done) {
        partial = " (input " + std::to_string(first_done ? other : 0) +
                  " of the zip is not done: it has at least that many rows)";
      }
      // Ray's words: the first input's count, then the first that differs.
      error_ = arrow::Status::Invalid("Cannot zip datasets of different number of rows: ",
                                      rows_[0], ", ", rows_[other], partial);
      return;
    }
  }

  std::vector<std::deque<Queued>> queues_;
  /// Rows of each input's front block already handed on.
  std::vector<int64_t> offsets_;
  /// Rows each input has delivered so far.
  std::vector<int64_t> rows_;
  int64_t queued_bytes_ = 0;
  std::shared_ptr<arrow::Schema> schema_;
  std::vector<std::shared_ptr<arrow::Schema>> last_schemas_;
  arrow::Status error_;
};

}  // namespace

std::unique_ptr<PhysicalOperator> MakeZipOperator(int num_inputs) {
  return std::make_unique<ZipOperator>(num_inputs);
}

}  // namespace millstream
