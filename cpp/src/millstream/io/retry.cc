#include "io/retry.h"

#include <chrono>
#include <random>
#include <regex>
#include <thread>

namespace millstream {

bool IsRetried(const arrow::Status& status, const RetryPolicy& policy) {
  if (status.ok() || status.IsCancelled()) return false;
  const std::string& message = status.message();
  for (const auto& pattern : policy.patterns) {
    if (pattern.empty()) continue;
    if (message.find(pattern) != std::string::npos) return true;
    try {
      if (std::regex_search(message, std::regex(pattern))) return true;
    } catch (const std::regex_error&) {
      // not a regex: the substring test was all
    }
  }
  return false;
}

arrow::Status RunWithRetry(const std::function<arrow::Status(const Emit&)>& read, const Emit& emit,
                           const RetryPolicy& policy) {
  int64_t emitted = 0;
  std::mt19937_64 rng(std::random_device{}());
  for (int attempt = 1;; ++attempt) {
    int64_t seen = 0;
    arrow::Status emit_error;
    auto forward = [&](Block block) -> arrow::Status {
      if (seen++ < emitted) return arrow::Status::OK();  // handed on by an earlier attempt
      auto status = emit(std::move(block));
      if (!status.ok()) {
        emit_error = status;
        return status;
      }
      ++emitted;
      return status;
    };
    auto status = read(forward);
    if (status.ok() || !emit_error.ok()) return status;
    if (attempt >= policy.max_attempts || !IsRetried(status, policy)) {
      if (attempt > 1) return status.WithMessage(status.message(), " (after ", attempt, " attempts)");
      return status;
    }
    double wait = std::min(policy.max_backoff_s, policy.base_backoff_s * (1 << std::min(attempt - 1, 20)));
    wait *= std::uniform_real_distribution<double>(0.5, 1.0)(rng);
    std::this_thread::sleep_for(std::chrono::duration<double>(wait));
  }
}

}  // namespace millstream
