#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include <arrow/api.h>
#include <arrow/compute/initialize.h>

#include "millstream/block.h"
#include "millstream/context.h"
#include "millstream/dataset.h"

namespace millstream {

namespace {

/// GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else the NVIDIA driver's count.
int DetectGpus() {
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES")) {
    std::string list(visible);
    if (list.empty() || list == "-1" || list == "NoDevFiles") return 0;
    return static_cast<int>(std::count(list.begin(), list.end(), ',')) + 1;
  }
  std::error_code error;
  int gpus = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/driver/nvidia/gpus", error)) {
    (void)entry;
    ++gpus;
  }
  return gpus;
}

arrow::Status CheckAmount(const char* name, double value, double min, bool min_exclusive) {
  if (!std::isfinite(value)) {
    return arrow::Status::Invalid("DataContext: ", name, " must be a finite number, got ", value);
  }
  if (min_exclusive ? value <= min : value < min) {
    return arrow::Status::Invalid("DataContext: ", name, " must be ",
                                  min_exclusive ? "greater than " : "at least ", min, ", got ",
                                  value);
  }
  return arrow::Status::OK();
}

arrow::Status CheckCount(const char* name, int64_t value, int64_t min) {
  if (value < min) {
    return arrow::Status::Invalid("DataContext: ", name, " must be at least ", min, ", got ",
                                  value);
  }
  return arrow::Status::OK();
}

}  // namespace

arrow::Status DataContext::Validate() const {
  ARROW_RETURN_NOT_OK(CheckCount("target_max_block_size", target_max_block_size, 1));
  ARROW_RETURN_NOT_OK(CheckCount("target_min_block_size", target_min_block_size, 0));
  ARROW_RETURN_NOT_OK(CheckCount("read_op_min_num_blocks", read_op_min_num_blocks, 0));
  ARROW_RETURN_NOT_OK(CheckCount("max_errored_blocks", max_errored_blocks, -1));
  const auto& limits = execution_options.resource_limits;
  const auto& exclude = execution_options.exclude_resources;
  if (limits.cpu) ARROW_RETURN_NOT_OK(CheckAmount("resource_limits.cpu", *limits.cpu, 0, true));
  if (limits.gpu) ARROW_RETURN_NOT_OK(CheckAmount("resource_limits.gpu", *limits.gpu, 0, false));
  if (limits.object_store_memory) {
    ARROW_RETURN_NOT_OK(CheckCount("resource_limits.object_store_memory",
                                   *limits.object_store_memory, 0));
  }
  if (exclude.cpu) ARROW_RETURN_NOT_OK(CheckAmount("exclude_resources.cpu", *exclude.cpu, 0, false));
  if (exclude.gpu) ARROW_RETURN_NOT_OK(CheckAmount("exclude_resources.gpu", *exclude.gpu, 0, false));
  if (exclude.object_store_memory) {
    ARROW_RETURN_NOT_OK(CheckCount("exclude_resources.object_store_memory",
                                   *exclude.object_store_memory, 0));
  }
  ARROW_RETURN_NOT_OK(CheckAmount("op_resource_reservation_ratio", op_resource_reservation_ratio, 0, false));
  if (op_resource_reservation_ratio > 1) {
    return arrow::Status::Invalid("DataContext: op_resource_reservation_ratio must be at most 1, got ",
                                  op_resource_reservation_ratio);
  }
  const auto& scaling = autoscaling_config;
  ARROW_RETURN_NOT_OK(CheckAmount("autoscaling_config.actor_pool_util_upscaling_threshold",
                                  scaling.actor_pool_util_upscaling_threshold, 0, false));
  ARROW_RETURN_NOT_OK(CheckAmount("autoscaling_config.actor_pool_util_downscaling_threshold",
                                  scaling.actor_pool_util_downscaling_threshold, 0, false));
  ARROW_RETURN_NOT_OK(CheckCount("autoscaling_config.actor_pool_max_upscaling_delta",
                                 scaling.actor_pool_max_upscaling_delta, 1));
  if (std::isnan(downstream_capacity_backpressure_ratio)) {
    return arrow::Status::Invalid("DataContext: downstream_capacity_backpressure_ratio must be a number, got nan");
  }
  return arrow::Status::OK();
}

EffectiveLimits ResolveLimits(const DataContext& context) {
  const auto& options = context.execution_options;
  EffectiveLimits limits;
  limits.cpu = options.resource_limits.cpu.value_or(
      static_cast<double>(std::max(1u, std::thread::hardware_concurrency())));
  static const int detected_gpus = DetectGpus();
  limits.gpu = options.resource_limits.gpu.value_or(detected_gpus);
  int64_t physical = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGE_SIZE);
  limits.memory = options.resource_limits.object_store_memory.value_or(
      static_cast<int64_t>(physical * 0.3));
  limits.cpu -= options.exclude_resources.cpu.value_or(0);
  limits.gpu -= options.exclude_resources.gpu.value_or(0);
  limits.memory -= options.exclude_resources.object_store_memory.value_or(0);
  limits.cpu = std::max(limits.cpu, 0.0);
  limits.gpu = std::max(limits.gpu, 0.0);
  limits.memory = std::max<int64_t>(limits.memory, 1);
  return limits;
}

arrow::Status Initialize() {
  static arrow::Status status = arrow::compute::Initialize();
  return status;
}

}  // namespace millstream
