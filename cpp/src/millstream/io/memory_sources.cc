#include <algorithm>
#include <limits>
#include <numeric>

#include <arrow/api.h>

#include "io/sources.h"
#include "runtime/memory.h"

namespace millstream {
namespace {

/// Rows [start, end) as int64 blocks of at most `rows_per_block` rows, built one at a time
/// as the executor takes them (a task may cover more rows than fit in memory at once).
class RangeReadTask : public ReadTask {
 public:
  RangeReadTask(int64_t start, int64_t end, int64_t rows_per_block)
      : start_(start), end_(end), rows_per_block_(rows_per_block) {}
  arrow::Status Run(const Emit& emit) const override {
    int64_t at = start_;
    do {
      const int64_t rows = std::min(rows_per_block_, end_ - at);
      ARROW_ASSIGN_OR_RAISE(std::shared_ptr<arrow::Buffer> values,
                            arrow::AllocateBuffer(rows * static_cast<int64_t>(sizeof(int64_t))));
      std::iota(values->mutable_data_as<int64_t>(), values->mutable_data_as<int64_t>() + rows, at);
      auto ids = std::make_shared<arrow::Int64Array>(rows, std::move(values));
      ARROW_RETURN_NOT_OK(emit(arrow::RecordBatch::Make(RangeSchema(), rows, {std::move(ids)})));
      at += rows;
    } while (at < end_);
    return arrow::Status::OK();
  }
  int64_t estimated_rows() const override { return end_ - start_; }
  bool sized_by_metadata() const override { return true; }
  int64_t estimated_bytes() const override {
    const int64_t rows = end_ - start_;
    return rows > std::numeric_limits<int64_t>::max() / 8 ? std::numeric_limits<int64_t>::max()
                                                          : 8 * rows;
  }
  static std::shared_ptr<arrow::Schema> RangeSchema() {
    static auto schema = arrow::schema({arrow::field("id", arrow::int64())});
    return schema;
  }

 private:
  int64_t start_, end_, rows_per_block_;
};

/// Read tasks beyond this many are not created: each task then emits several blocks.
constexpr int64_t kMaxRangeTasks = int64_t{1} << 16;

class RangeSource : public Datasource {
 public:
  explicit RangeSource(int64_t n) : n_(n) {}
  std::string name() const override { return "ReadRange"; }
  arrow::Result<std::vector<std::shared_ptr<ReadTask>>> GetReadTasks(
      const ReadTaskOptions& options) const override {
    // Only the rows a limit right after the read needs.
    const int64_t n = options.row_limit ? std::min(n_, std::max<int64_t>(0, *options.row_limit)) : n_;
    // Blocks: as many as asked, and enough that none exceeds target_max_block_size.
    const int64_t max_rows = std::max<int64_t>(1, options.target_max_block_size / 8);
    const int64_t by_size = n / max_rows + (n % max_rows != 0);
    const int64_t blocks = std::min(std::max<int64_t>({1, options.parallelism, by_size}),
                                    std::max<int64_t>(1, n));
    const int64_t rows_per_block = std::max<int64_t>(1, n / blocks + (n % blocks != 0));
    const int64_t tasks = std::min(blocks, kMaxRangeTasks);
    // Task i covers [start(i), start(i + 1)): the rows split evenly, without overflow.
    auto start = [&](int64_t i) { return n / tasks * i + std::min(i, n % tasks); };
    std::vector<std::shared_ptr<ReadTask>> out;
    out.reserve(tasks);
    for (int64_t i = 0; i < tasks; ++i) {
      out.push_back(std::make_shared<RangeReadTask>(start(i), start(i + 1), rows_per_block));
    }
    return out;
  }
  std::optional<int64_t> num_rows() const override { return n_; }
  std::shared_ptr<arrow::Schema> schema() const override { return RangeReadTask::RangeSchema(); }

 private:
  int64_t n_;
};

class BlocksReadTask : public ReadTask {
 public:
  explicit BlocksReadTask(std::vector<Block> blocks) : blocks_(std::move(blocks)) {
    for (const auto& b : blocks_) {
      rows_ += b->num_rows();
      bytes_ += BlockBytes(*b);
    }
  }
  arrow::Status Run(const Emit& emit) const override {
    for (const auto& block : blocks_) ARROW_RETURN_NOT_OK(emit(block));
    return arrow::Status::OK();
  }
  int64_t estimated_rows() const override { return rows_; }
  int64_t estimated_bytes() const override { return bytes_; }
  bool sized_by_metadata() const override { return true; }

 private:
  std::vector<Block> blocks_;
  int64_t rows_ = 0, bytes_ = 0;
};

class BlocksSource : public Datasource {
 public:
  BlocksSource(std::vector<Block> blocks, std::shared_ptr<arrow::Schema> schema, std::string name)
      : blocks_(std::move(blocks)), schema_(std::move(schema)), name_(std::move(name)) {}
  ~BlocksSource() override {
    int64_t bytes = 0;
    for (const auto& block : blocks_) bytes += BlockBytes(*block);
    blocks_.clear();
    MemoryReturn::BlocksDropped(bytes);  // a materialized dataset let go: return the memory
  }
  std::string name() const override { return name_; }
  std::optional<int64_t> num_blocks() const override { return static_cast<int64_t>(blocks_.size()); }

  arrow::Result<std::vector<std::shared_ptr<ReadTask>>> GetReadTasks(
      const ReadTaskOptions& options) const override {
    const int64_t parallelism = options.parallelism;
    std::vector<std::shared_ptr<ReadTask>> tasks;
    if (parallelism <= 0) {
      for (const auto& block : blocks_) {
        tasks.push_back(std::make_shared<BlocksReadTask>(std::vector<Block>{block}));
      }
      return tasks;
    }
    // Re-split the rows evenly into `parallelism` tasks (zero-copy slices).
    int64_t total = *num_rows();
    int64_t blocks = std::max<int64_t>(1, std::min(parallelism, std::max<int64_t>(1, total)));
    size_t at = 0;
    int64_t offset = 0;
    for (int64_t i = 0; i < blocks; ++i) {
      int64_t want = total * (i + 1) / blocks - total * i / blocks;
      std::vector<Block> pieces;
      while (want > 0 && at < blocks_.size()) {
        int64_t take = std::min(want, blocks_[at]->num_rows() - offset);
        pieces.push_back(blocks_[at]->Slice(offset, take));
        want -= take;
        offset += take;
        if (offset == blocks_[at]->num_rows()) {
          ++at;
          offset = 0;
        }
      }
      if (pieces.empty()) pieces.push_back(blocks_.empty() ? arrow::RecordBatch::MakeEmpty(schema_).ValueOrDie() : blocks_[0]->Slice(0, 0));
      tasks.push_back(std::make_shared<BlocksReadTask>(std::move(pieces)));
    }
    return tasks;
  }
  std::optional<int64_t> num_rows() const override {
    int64_t rows = 0;
    for (const auto& b : blocks_) rows += b->num_rows();
    return rows;
  }
  std::shared_ptr<arrow::Schema> schema() const override { return schema_; }

 private:
  std::vector<Block> blocks_;
  std::shared_ptr<arrow::Schema> schema_;
  std::string name_;
};

}  // namespace

std::shared_ptr<Datasource> MakeRangeSource(int64_t n) { return std::make_shared<RangeSource>(n); }

std::shared_ptr<Datasource> MakeBlocksSource(std::vector<Block> blocks,
                                             std::shared_ptr<arrow::Schema> schema,
                                             std::string name) {
  return std::make_shared<BlocksSource>(std::move(blocks), std::move(schema), std::move(name));
}

}  // namespace millstream
