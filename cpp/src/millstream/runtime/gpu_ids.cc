#include "runtime/gpu_ids.h"

#include <algorithm>
#include <cmath>

namespace millstream {
namespace {

constexpr double kEpsilon = 1e-9;
thread_local const std::vector<int>* current_gpu_ids = nullptr;

}  // namespace

GpuAllocator::GpuAllocator(int devices) : used_(std::max(0, devices), 0.0) {}

std::vector<int> GpuAllocator::Acquire(double num_gpus) {
  std::vector<int> ids;
  if (num_gpus <= 0 || used_.empty()) return ids;
  std::lock_guard<std::mutex> lock(mutex_);
  const int devices = static_cast<int>(used_.size());
  if (num_gpus < 1) {
    for (int d = 0; d < devices && ids.empty(); ++d) {
      if (used_[d] + num_gpus <= 1 + kEpsilon) ids.push_back(d);
    }
    if (ids.empty()) ids.push_back(static_cast<int>(std::min_element(used_.begin(), used_.end()) - used_.begin()));
    used_[ids[0]] += num_gpus;
    return ids;
  }
  const int want = std::min(devices, static_cast<int>(std::ceil(num_gpus - kEpsilon)));
  for (int d = 0; d < devices && static_cast<int>(ids.size()) < want; ++d) {
    if (used_[d] <= kEpsilon) ids.push_back(d);
  }
  if (static_cast<int>(ids.size()) < want) {
    // Not enough free devices: share the least used ones.
    std::vector<int> order(devices);
    for (int d = 0; d < devices; ++d) order[d] = d;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return used_[a] < used_[b]; });
    for (int d : order) {
      if (static_cast<int>(ids.size()) == want) break;
      if (std::find(ids.begin(), ids.end(), d) == ids.end()) ids.push_back(d);
    }
    std::sort(ids.begin(), ids.end());
  }
  for (int d : ids) used_[d] += 1;
  return ids;
}

void GpuAllocator::Release(const std::vector<int>& ids, double num_gpus) {
  if (ids.empty()) return;
  std::lock_guard<std::mutex> lock(mutex_);
  const double each = num_gpus < 1 ? num_gpus : 1;
  for (int d : ids) {
    if (d >= 0 && d < static_cast<int>(used_.size())) used_[d] = std::max(0.0, used_[d] - each);
  }
}

const std::vector<int>& CurrentGpuIds() {
  static const std::vector<int> none;
  return current_gpu_ids ? *current_gpu_ids : none;
}

ScopedGpuIds::ScopedGpuIds(const std::vector<int>* ids) : previous_(current_gpu_ids) {
  current_gpu_ids = ids;
}

ScopedGpuIds::~ScopedGpuIds() { current_gpu_ids = previous_; }

}  // namespace millstream
