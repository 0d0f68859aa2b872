#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <arrow/record_batch.h>
#include <arrow/result.h>
#include <arrow/table.h>

namespace millstream {

/// \brief A user function over batches: one batch in, a table out (any number of rows).
///
/// `Call` may run on any engine thread. A task-pool UDF instance is shared by concurrent
/// tasks and must be thread-safe; an actor-pool instance is called by one thread at a time
/// (unless its pool sets `enable_true_multi_threading`).
class BatchUdf {
 public:
  virtual ~BatchUdf() = default;
  virtual arrow::Result<std::shared_ptr<arrow::Table>> Call(
      const std::shared_ptr<arrow::RecordBatch>& batch) = 0;

  /// Calls the UDF; a UDF that runs several steps (see `Then`) returns one table per
  /// batch its last step was called on. The default: `Call`'s table.
  virtual arrow::Result<std::vector<std::shared_ptr<arrow::Table>>> CallAll(
      const std::shared_ptr<arrow::RecordBatch>& batch) {
    ARROW_ASSIGN_OR_RAISE(auto table, Call(batch));
    return std::vector<std::shared_ptr<arrow::Table>>{std::move(table)};
  }

  /// One UDF that runs this one and then `next` on each batch of its output (in the
  /// order of the output's batches, empty ones skipped, as fused steps hand blocks on),
  /// inside one call: for Python UDFs one GIL acquisition and one conversion in and out
  /// for the whole chain. Null when the two cannot run as one (the default).
  virtual std::shared_ptr<BatchUdf> Then(const std::shared_ptr<BatchUdf>& next) const {
    return nullptr;
  }
};

/// \brief Makes UDF instances: once for a task pool, once per actor for an actor pool
/// (that is where expensive setup, such as loading a model, belongs).
/// The GPU ids of the actor (or task) whose UDF runs on this thread: the devices its
/// `num_gpus` were given, as Ray's `ray.get_gpu_ids()`. Empty outside a UDF, or when the
/// map asked for no GPUs. An actor keeps its ids for its lifetime; a fractional num_gpus
/// shares a device with other fractions.
const std::vector<int>& CurrentGpuIds();

using BatchUdfFactory = std::function<arrow::Result<std::shared_ptr<BatchUdf>>()>;

/// \brief Where a map runs.
struct ComputeStrategy {
  enum class Kind { kTasks, kActors };
  Kind kind = Kind::kTasks;
  /// Tasks: the most tasks in flight (0: no cap). Actors: the pool's size bounds.
  int min_size = 0;
  int max_size = 0;
  /// Bundles one actor is expected to have waiting or running: the autoscaler's unit of
  /// load (not how many run inside it; that is `max_concurrency`).
  int max_tasks_in_flight_per_actor = 4;
  /// Actors: tasks one actor runs at once (Ray's `max_concurrency`); each holds
  /// 1/max_concurrency of the actor's CPUs and GPUs while it runs.
  int max_concurrency = 1;
  /// Actors: when false, an actor's UDF instances are called by one task at a time even
  /// when `max_concurrency` > 1 (its other tasks slice, convert and hand on batches
  /// meanwhile); when true, up to `max_concurrency` calls enter one instance at once.
  bool enable_true_multi_threading = false;

  static ComputeStrategy Tasks(int concurrency = 0) {
    return {Kind::kTasks, 0, concurrency, 4, 1, false};
  }
  static ComputeStrategy Actors(int min_size, int max_size, int max_tasks_in_flight = 4,
                                int max_concurrency = 1, bool enable_true_multi_threading = false) {
    return {Kind::kActors, min_size,       max_size, max_tasks_in_flight,
            max_concurrency,  enable_true_multi_threading};
  }
  bool operator==(const ComputeStrategy&) const = default;
};

/// \brief Options of a map over batches (`map_batches` in Python).
struct MapBatchesOptions {
  /// Rows per UDF call; unset: whole blocks. Small blocks are bundled to reach it.
  std::optional<int64_t> batch_size;
  /// The operator's name in plans and stats, e.g. "MapBatches(normalize)".
  std::string name = "MapBatches";
  /// True when the UDF returns exactly one row per input row, in order (lets a limit
  /// move ahead of it).
  bool row_preserving = false;
  ComputeStrategy compute;
  double num_cpus = 1;
  double num_gpus = 0;
  /// Bytes of memory one task (or actor) needs beyond its blocks, e.g. a model: held
  /// against the memory limit while a task runs. 0: only its blocks count.
  int64_t memory = 0;
};

}  // namespace millstream
