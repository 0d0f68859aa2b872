#pragma once

#include <memory>
#include <string>
#include <vector>

#include "exec/transform.h"
#include "io/datasource.h"
#include "millstream/udf.h"

namespace millstream {

/// \brief A node of a logical plan: what the user asked, not how it runs.
///
/// Plans are linear chains today (each operator has at most one input) and immutable:
/// rewriting a plan builds new nodes. Kinds:
/// - kRead: produces the blocks of `source`;
/// - kMap: runs `transforms` (one for a user call; several after fusion) over each block.
///   A kMap with a `source` is a fused read: it reads and then transforms, one task each;
/// - kLimit: keeps the first `limit` rows.
class LogicalOperator {
 public:
  enum class Kind { kRead, kMap, kLimit };

  Kind kind = Kind::kMap;
  std::shared_ptr<const LogicalOperator> input;

  std::shared_ptr<Datasource> source;
  std::vector<std::shared_ptr<const Transform>> transforms;
  ComputeStrategy compute;
  double num_cpus = 1;
  double num_gpus = 0;
  /// Bytes a running task holds beyond its blocks (see MapBatchesOptions::memory).
  int64_t memory = 0;
  /// Rows to bundle before launching a task (a map_batches batch_size), 0: one bundle.
  int64_t min_rows_per_bundle = 0;
  /// For reads: the number of read tasks the user asked for.
  std::optional<int64_t> override_num_blocks;

  int64_t limit = 0;

  /// "ReadParquet", "MapBatches(f)", "ReadParquet->MapBatches(f)->Filter(g)", "Limit[10]".
  std::string Name() const;
  /// Every transform is row preserving (and there is no read).
  bool RowPreserving() const;

  static std::shared_ptr<const LogicalOperator> MakeRead(std::shared_ptr<Datasource> source,
                                                         std::optional<int64_t> num_blocks);
  static std::shared_ptr<const LogicalOperator> MakeMap(
      std::shared_ptr<const LogicalOperator> input, std::shared_ptr<const Transform> transform,
      ComputeStrategy compute = {}, double num_cpus = 1, double num_gpus = 0,
      int64_t min_rows_per_bundle = 0);
  static std::shared_ptr<const LogicalOperator> MakeLimit(
      std::shared_ptr<const LogicalOperator> input, int64_t limit);
};

using PlanPtr = std::shared_ptr<const LogicalOperator>;

/// The operators of a plan from source to sink.
std::vector<PlanPtr> PlanChain(const PlanPtr& sink);
/// One line per operator, sink first, each input indented under its consumer.
std::string FormatPlan(const PlanPtr& sink);

}  // namespace millstream
