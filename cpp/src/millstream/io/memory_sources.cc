#include <algorithm>
#include <limits>

#include <arrow/api.h>

#include "io/sources.h"

namespace millstream {
namespace {

class RangeReadTask : public ReadTask {
 public:
  RangeReadTask(int64_t start, int64_t end) : start_(start), end_(end) {}
  arrow::Status Run(const Emit& emit) const override {
    arrow::Int64Builder builder;
    ARROW_RETURN_NOT_OK(builder.Reserve(end_ - start_));
    for (int64_t i = start_; i < end_; ++i) builder.UnsafeAppend(i);
    ARROW_ASSIGN_OR_RAISE(auto ids, builder.Finish());
    return emit(arrow::RecordBatch::Make(RangeSchema(), end_ - start_, {ids}));
  }
  int64_t estimated_rows() const override { return end_ - start_; }
  int64_t estimated_bytes() const override { return RangeBytes(end_ - start_); }
  /// 8 bytes a row, saturating at INT64_MAX instead of overflowing.
  static int64_t RangeBytes(int64_t rows) {
    constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
    return rows > kMax / 8 ? kMax : 8 * rows;
  }
  static std::shared_ptr<arrow::Schema> RangeSchema() {
    static auto schema = arrow::schema({arrow::field("id", arrow::int64())});
    return schema;
  }

 private:
  int64_t start_, end_;
};

class RangeSource : public Datasource {
 public:
  explicit RangeSource(int64_t n) : n_(n) {}
  std::string name() const override { return "ReadRange"; }
  arrow::Result<std::vector<std::shared_ptr<ReadTask>>> GetReadTasks(
      const ReadTaskOptions& options) const override {
    const int64_t parallelism = options.parallelism;
    const int64_t target_max_block_size = options.target_max_block_size;
    // Ceiling division without `bytes + size - 1`, which overflows for a size near INT64_MAX.
    const int64_t bytes = RangeReadTask::RangeBytes(n_);
    const int64_t size = std::max<int64_t>(1, target_max_block_size);
    int64_t by_size = bytes / size + (bytes % size != 0);
    int64_t blocks = std::max<int64_t>({1, parallelism, by_size});
    blocks = std::min(blocks, std::max<int64_t>(1, n_));
    // Block boundaries n * i / blocks in 128 bits: n * i overflows 64 for large ranges.
    auto boundary = [&](int64_t i) {
      return static_cast<int64_t>(static_cast<__int128>(n_) * i / blocks);
    };
    std::vector<std::shared_ptr<ReadTask>> tasks;
    for (int64_t i = 0; i < blocks; ++i) {
      tasks.push_back(std::make_shared<RangeReadTask>(boundary(i), boundary(i + 1)));
    }
    return tasks;
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

 private:
  std::vector<Block> blocks_;
  int64_t rows_ = 0, bytes_ = 0;
};

class BlocksSource : public Datasource {
 public:
  BlocksSource(std::vector<Block> blocks, std::shared_ptr<arrow::Schema> schema, std::string name)
      : blocks_(std::move(blocks)), schema_(std::move(schema)), name_(std::move(name)) {}
  std::string name() const override { return name_; }

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
