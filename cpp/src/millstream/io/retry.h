#pragma once

#include <functional>
#include <string>
#include <vector>

#include <arrow/status.h>

#include "io/datasource.h"

namespace millstream {

/// \brief Which IO errors are transient (Ray's DataContext.retried_io_errors) and how often
/// to try again.
struct RetryPolicy {
  /// An error whose message contains one of these, or matches one as a regex, is retried.
  std::vector<std::string> patterns;
  int max_attempts = 10;
  /// Waits between attempts: base * 2^attempt, at most max, with jitter (half to full).
  double base_backoff_s = 0.05;
  double max_backoff_s = 2.0;
};

/// \brief Whether `status` is one of `policy`'s transient errors.
bool IsRetried(const arrow::Status& status, const RetryPolicy& policy);

/// \brief Runs `read` (which emits blocks in a fixed order) until it succeeds, retrying a
/// transient error with backoff. A retry reads again from the start and hands on only the
/// blocks past those already emitted, so nothing is lost or emitted twice. An error from
/// `emit` itself (a cancelled execution) is returned at once.
arrow::Status RunWithRetry(const std::function<arrow::Status(const Emit&)>& read, const Emit& emit,
                           const RetryPolicy& policy);

}  // namespace millstream
