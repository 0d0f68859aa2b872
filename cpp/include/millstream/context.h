#pragma once

#include <cstdint>
#include <optional>

#include <arrow/status.h>

namespace millstream {

/// \brief Limits on what an execution may use. An unset field means "derive from the
/// machine": all CPUs, the GPUs detected (CUDA_VISIBLE_DEVICES, else the NVIDIA driver's
/// count, else 0), 30% of physical memory for blocks.
struct ResourceLimits {
  std::optional<double> cpu;
  std::optional<double> gpu;
  /// Bytes of live blocks the executor may hold at once (queued, in flight, buffered).
  std::optional<int64_t> object_store_memory;
};

/// \brief Options of one execution, named as in Ray Data's ExecutionOptions.
struct ExecutionOptions {
  ResourceLimits resource_limits;
  /// Resources subtracted from the limits (e.g. held by another workload).
  ResourceLimits exclude_resources;
  /// Deliver blocks in input order. Off by default: order costs memory and latency.
  bool preserve_order = false;
};

/// \brief When an autoscaling actor pool grows and shrinks (Ray Data's AutoscalingConfig).
///
/// Utilization is (tasks running + bundles waiting) / (actors x max_tasks_in_flight_per_actor):
/// when every actor is busy (running `max_concurrency` tasks) and it is at or above the upscaling
/// threshold the pool adds up to `actor_pool_max_upscaling_delta` actors per scheduling
/// round; at or below the downscaling threshold it retires an idle actor. Never outside
/// the pool's [min, max].
struct AutoscalingConfig {
  double actor_pool_util_upscaling_threshold = 1.75;
  double actor_pool_util_downscaling_threshold = 0.5;
  int actor_pool_max_upscaling_delta = 1;
};

/// \brief The engine's knobs, with Ray Data's names and defaults.
///
/// A DataContext is a value: an execution copies the one it is given when it starts, after
/// checking it with Validate (an invalid value fails the execution, naming the field).
struct DataContext {
  /// Blocks larger than this are split (zero-copy slices).
  int64_t target_max_block_size = 128LL * 1024 * 1024;
  /// Outputs of one task smaller than this are combined before they leave the task.
  int64_t target_min_block_size = 1LL * 1024 * 1024;
  ExecutionOptions execution_options;
  /// Reserve a share of the memory limit for each operator, so upstream can't starve
  /// downstream.
  bool op_resource_reservation_enabled = true;
  double op_resource_reservation_ratio = 0.5;
  /// Sources aim for at least this many blocks when no override is given.
  int64_t read_op_min_num_blocks = 200;
  AutoscalingConfig autoscaling_config;
  /// Failed tasks to tolerate before failing the execution (-1: any number). A tolerated
  /// failure drops that task's remaining output and is counted in the stats; for a
  /// write, the task's file is never committed.
  int64_t max_errored_blocks = 0;
  /// Where sort, shuffle and repartition spill past the memory limit (a directory of
  /// their own is made inside it and removed at the end); empty: $TMPDIR, else /tmp.
  std::string spill_directory;
  /// An operator stops launching while its downstream map has more than this many
  /// bundles queued per task it can run at once (0 or less: no such cap).
  double downstream_capacity_backpressure_ratio = 2.0;

  /// OK, or Invalid naming the first field outside its range (a block size below 1, a
  /// negative or non-finite resource amount, a CPU limit of 0 or less, a reservation
  /// ratio outside [0, 1], ...). Planning and Execution::Start call it.
  arrow::Status Validate() const;
};

/// \brief The limits that an execution with `context` runs under, with unset fields
/// filled from the machine and `exclude_resources` subtracted.
struct EffectiveLimits {
  double cpu = 1;
  double gpu = 0;
  int64_t memory = 0;
};
EffectiveLimits ResolveLimits(const DataContext& context);

}  // namespace millstream
