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
#include <functional>
#include <map>
#include <string>

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

/// Waiters per identity, served in turns: one identity's flood waits behind itself and cannot
/// starve the others. Pure bookkeeping; UpstreamBudget does the waiting.
template <class Waiter>
class FairQueue {
 public:
  bool empty() const { return turns_.empty(); }
  void push(const std::string& identity, Waiter w) {
    auto& queue = queues_[identity];
    if (queue.empty()) turns_.push_back(identity);
    queue.push_back(w);
  }
  /// The waiter whose turn it is. Precondition: !empty().
  Waiter front() const { return queues_.at(turns_.front()).front(); }
  /// Removes front(); its identity, if it still has waiters, goes to the back of the turns.
  void pop_front() {
    const std::string identity = turns_.front();
    turns_.pop_front();
    auto it = queues_.find(identity);
    it->second.pop_front();
    if (it->second.empty()) {
      queues_.erase(it);
    } else {
      turns_.push_back(identity);
    }
  }

 private:
  std::map<std::string, std::deque<Waiter>, std::less<>> queues_;
  std::deque<std::string> turns_;  // identities with waiters, whose turn is next first
};

class UpstreamBudget {
 public:
  UpstreamBudget(asio::any_io_executor executor, double per_second, int burst, int max_concurrent)
      : executor_(std::move(executor)), window_(per_second, burst, max_concurrent) {}

  /// Waits until a call for `identity` may start; pair every acquire() with release(). Waiters
  /// of different identities take turns.
  asio::awaitable<void> acquire(std::string identity);
  void release();
  std::uint64_t waits() const { return waits_; }

 private:
  asio::any_io_executor executor_;
  RateWindow window_;
  FairQueue<asio::steady_timer*> queue_;
  std::uint64_t waits_ = 0;
};

}  // namespace ficbroker
