#pragma once

#include <mutex>
#include <vector>

#include "millstream/udf.h"

namespace millstream {

/// \brief Hands out GPU device ids to the actors and tasks that ask for `num_gpus`,
/// shared by the operators of one execution.
///
/// A whole request (num_gpus >= 1) takes that many devices, the lowest free ids first; a
/// fractional one shares a device with other fractions while they sum to at most one
/// (first fit). When the devices are all taken (an actor pool larger than the GPUs allow),
/// a request shares the least used devices: the executor's GPU slots still bound how many
/// tasks run at once.
class GpuAllocator {
 public:
  /// `devices`: the GPUs this execution may use (ids 0..devices-1).
  explicit GpuAllocator(int devices);

  std::vector<int> Acquire(double num_gpus);
  /// Gives back what Acquire(num_gpus) returned.
  void Release(const std::vector<int>& ids, double num_gpus);

 private:
  std::mutex mutex_;
  std::vector<double> used_;
};

/// Sets CurrentGpuIds() for this thread while it lives.
class ScopedGpuIds {
 public:
  explicit ScopedGpuIds(const std::vector<int>* ids);
  ~ScopedGpuIds();
  ScopedGpuIds(const ScopedGpuIds&) = delete;
  ScopedGpuIds& operator=(const ScopedGpuIds&) = delete;

 private:
  const std::vector<int>* previous_;
};

}  // namespace millstream
