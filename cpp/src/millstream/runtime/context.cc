#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include <arrow/api.h>
#include <arrow/compute/initialize.h>
#include <arrow/util/byte_size.h>

#include "millstream/block.h"
#include "millstream/context.h"
#include "millstream/dataset.h"

namespace millstream {

int64_t BlockBytes(const arrow::RecordBatch& block) {
  auto referenced = arrow::util::ReferencedBufferSize(block);
  return referenced.ok() ? *referenced : arrow::util::TotalBufferSize(block);
}

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

}  // namespace

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
