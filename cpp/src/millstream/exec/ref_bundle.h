#pragma once

#include <memory>
#include <vector>

#include <arrow/result.h>
#include <arrow/type_fwd.h>

#include "io/datasource.h"
#include "millstream/block.h"

namespace millstream {

/// \brief What the executor knows of a block without touching its data.
struct BlockMetadata {
  int64_t rows = 0;
  int64_t bytes = 0;
  std::shared_ptr<arrow::Schema> schema;
};

/// \brief A reference to one block and its metadata. Today the block is in this
/// process's memory; a spilled block, a block in shared memory or a Ray object would
/// be other kinds of reference behind the same `Get`.
class BlockRef {
 public:
  BlockRef() = default;
  explicit BlockRef(Block block)
      : metadata_{block->num_rows(), BlockBytes(*block), block->schema()},
        block_(std::move(block)) {}
  const BlockMetadata& metadata() const { return metadata_; }
  int64_t rows() const { return metadata_.rows; }
  int64_t bytes() const { return metadata_.bytes; }
  /// The block's data (loading it, for a reference that is not in memory).
  arrow::Result<Block> Get() const { return block_; }

 private:
  BlockMetadata metadata_;
  Block block_;
};

/// \brief The unit that flows into an operator: block references, or read tasks that
/// make blocks (the input of an operator that reads).
struct RefBundle {
  std::vector<BlockRef> blocks;
  std::vector<std::shared_ptr<ReadTask>> read_tasks;
  int64_t rows = 0;
  int64_t bytes = 0;
  static RefBundle Of(Block block) {
    RefBundle bundle;
    bundle.Add(BlockRef(std::move(block)));
    return bundle;
  }
  void Add(BlockRef ref) {
    rows += ref.rows();
    bytes += ref.bytes();
    blocks.push_back(std::move(ref));
  }
  /// Appends `other`'s blocks and read tasks.
  void Merge(RefBundle other) {
    for (auto& ref : other.blocks) blocks.push_back(std::move(ref));
    for (auto& task : other.read_tasks) read_tasks.push_back(std::move(task));
    rows += other.rows;
    bytes += other.bytes;
  }
};

}  // namespace millstream
