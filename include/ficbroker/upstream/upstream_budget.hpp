// Keeps calls to one upstream within a rate and a concurrency limit (IMDS documents 20 requests
// per second and 5 concurrent requests per VM for managed identity). Waiters queue in order.
//
// Thread safety: io_context thread only.
#pragma once

#include "ficbroker/util/asio.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdint>
#include <deque>

namespace ficbroker {

/// The pure part: a token bucket plus an in-flight count, on an injected time.
class RateWindow {
 public:
  RateWindow(double per_second, int burst, int max_concurrent)
      : rate_(per_second), burst_(burst), max_concurrent_(max_concurrent), tokens_(burst) {}

  /// How long to wait before a call may start at `now` (zero: start now and count it).
  std::chrono::nanoseconds try_acquire(std::chrono::steady_clock::time_point now);
  void release() { --in_flight_; }
  int in_flight() const { return in_flight_; }

 private:
  double rate_;
  int burst_;
  int max_concurrent_;
  double tokens_;
  int in_flight_ = 0;
  std::chrono::steady_clock::time_point last_{};
};

class UpstreamBudget {
 public:
  UpstreamBudget(asio::any_io_executor executor, double per_second, int burst, int max_concurrent)
      : executor_(std::move(executor)), window_(per_second, burst, max_concurrent) {}

  /// Waits until a call may start; pair every acquire() with release().
  asio::awaitable<void> acquire();
  void release();
  std::uint64_t waits() const { return waits_; }

 private:
  asio::any_io_executor executor_;
  RateWindow window_;
  std::deque<asio::steady_timer*> queue_;  // waiters in arrival order
  std::uint64_t waits_ = 0;
};

}  // namespace ficbroker
