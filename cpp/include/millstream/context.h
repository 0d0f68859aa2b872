#pragma once

#include <cstdint>
#include <optional>

namespace millstream {

/// \brief Limits on what an execution may use. An unset field means "derive from the
/// machine": all CPUs, detected GPUs (none here), 30% of physical memory for blocks.
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

/// \brief The engine's knobs, with Ray Data's names and defaults.
///
/// A DataContext is a value: an execution copies the one it is given when it starts.
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
  /// Blocks buffered ahead of the consumer (iter_batches' prefetch), at least 1.
  int64_t consumer_prefetch_blocks = 2;
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
