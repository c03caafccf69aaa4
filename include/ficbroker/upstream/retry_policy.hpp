// When a failed upstream call is tried again, as Azure documents it. Pure: the decision takes the
// error, the attempt number and the time spent so far.
//
//  - IMDS / App Service: 404, 408, 429 and 5xx back off exponentially (1, 2, 4, 8 s); 410 means
//    "IMDS is updating" and is retried every 10 s for up to 70 s.
//  - Entra: 429 and 5xx honour Retry-After when it is short; AADSTS70021 right after a federated
//    credential is created is propagation delay, retried a bounded number of times.
//  - Permanent errors are never retried (the cache remembers them briefly instead).
#pragma once

#include "ficbroker/util/token.hpp"

#include <chrono>
#include <optional>

namespace ficbroker {

enum class Upstream { managed_identity, entra };

struct RetryPolicy {
  int max_attempts = 4;                      // transient failures, per fetch
  std::chrono::seconds gone_budget{70};      // IMDS 410
  std::chrono::seconds max_retry_after{10};  // longer waits go back to the caller
  int propagation_attempts = 3;              // AADSTS70021

  /// The delay before attempt `attempt + 1`, or nullopt to give up. `attempt` counts from 1;
  /// `status` is the upstream HTTP status (0 for transport failures); `elapsed` is the time
  /// spent on this fetch so far.
  std::optional<std::chrono::milliseconds> next_delay(Upstream upstream, const UpstreamError& error,
                                                      unsigned status, int attempt,
                                                      std::chrono::milliseconds elapsed) const {
    using std::chrono::milliseconds;
    using std::chrono::seconds;
    if (upstream == Upstream::managed_identity && status == 410) {
      const milliseconds delay = seconds(10);
      if (elapsed + delay > gone_budget) return std::nullopt;
      return delay;
    }
    if (upstream == Upstream::entra && error.aadsts == 70021) {
      if (attempt >= propagation_attempts) return std::nullopt;
      return seconds(2 << (attempt - 1));  // 2 s, 4 s
    }
    if (error.kind == UpstreamError::Kind::permanent ||
        error.kind == UpstreamError::Kind::assertion_rejected) {
      return std::nullopt;
    }
    if (attempt >= max_attempts) return std::nullopt;
    if (error.retry_after_seconds > 0 && error.kind == UpstreamError::Kind::throttled) {
      if (seconds(error.retry_after_seconds) > max_retry_after) return std::nullopt;
      return seconds(error.retry_after_seconds);
    }
    milliseconds delay = seconds(1 << (attempt - 1));  // 1, 2, 4, 8 s
    if (error.retry_after_seconds > 0 && seconds(error.retry_after_seconds) > delay) {
      if (seconds(error.retry_after_seconds) > max_retry_after) return std::nullopt;
      delay = seconds(error.retry_after_seconds);
    }
    return delay;
  }
};

}  // namespace ficbroker
