#include "io/datasource.h"

#include <algorithm>

namespace millstream {
namespace {

class GroupedReadTask : public ReadTask {
 public:
  explicit GroupedReadTask(std::vector<std::shared_ptr<ReadTask>> parts) : parts_(std::move(parts)) {}
  arrow::Status Run(const Emit& emit) const override {
    for (const auto& part : parts_) ARROW_RETURN_NOT_OK(part->Run(emit));
    return arrow::Status::OK();
  }
  int64_t estimated_rows() const override {
    int64_t rows = 0;
    for (const auto& part : parts_) rows += part->estimated_rows();
    return rows;
  }
  int64_t estimated_bytes() const override {
    int64_t bytes = 0;
    for (const auto& part : parts_) bytes += part->estimated_bytes();
    return bytes;
  }
  bool sized_by_metadata() const override {
    return std::all_of(parts_.begin(), parts_.end(),
                       [](const auto& part) { return part->sized_by_metadata(); });
  }

 private:
  std::vector<std::shared_ptr<ReadTask>> parts_;
};

}  // namespace

std::shared_ptr<ReadTask> MakeGroupedReadTask(std::vector<std::shared_ptr<ReadTask>> parts) {
  return std::make_shared<GroupedReadTask>(std::move(parts));
}

}  // namespace millstream
