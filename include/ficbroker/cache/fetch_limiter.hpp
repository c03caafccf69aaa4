// Bounds the upstream fetches in flight, globally and per upstream host, so that a burst of cold
// requests costs at most that many connections (each TLS connection holds ~100 KB) instead of one
// per distinct key. Beyond the bound fetches wait in one first-come queue: fetches for callers
// wait briefly and the queue of them is bounded (the caller is then told to retry); background
// refreshes wait as long as it takes, in the same order, so callers cannot starve them.
//
// Thread safety: io_context thread only.
#pragma once

#include "ficbroker/util/asio.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <string>

namespace ficbroker {

struct FetchBounds {
  std::size_t max_in_flight = 64;
  std::size_t max_in_flight_per_host = 16;
  /// Caller fetches waiting for a slot; one more is refused at once.
  std::size_t max_queued = 256;
  /// How long a caller fetch waits for a slot before it is refused.
  std::chrono::milliseconds max_queue_wait{1000};
};

class FetchLimiter {
 public:
  FetchLimiter(asio::any_io_executor executor, FetchBounds bounds)
      : executor_(std::move(executor)), bounds_(bounds) {}
  FetchLimiter(const FetchLimiter&) = delete;
  FetchLimiter& operator=(const FetchLimiter&) = delete;

  /// Waits for a slot for one fetch to `host`; false when a caller fetch was refused (queue full
  /// or waited max_queue_wait). Pair every true with release(host).
  asio::awaitable<bool> acquire(std::string host, bool background);
  void release(const std::string& host);

  /// Called (synchronously, from release) when the last fetch ends and nobody waits.
  void on_drained(std::function<void()> f) { on_drained_ = std::move(f); }

  std::size_t in_flight() const noexcept { return in_flight_; }
  std::size_t queued() const noexcept { return queue_.size(); }
  std::uint64_t refused() const noexcept { return refused_; }

 private:
  struct Waiter {
    const std::string* host;
    asio::steady_timer* timer;
    bool background;
    bool granted = false;
  };

  bool has_room(const std::string& host) const;
  void take(const std::string& host);
  void grant_waiters();

  asio::any_io_executor executor_;
  FetchBounds bounds_;
  std::size_t in_flight_ = 0;
  std::map<std::string, std::size_t, std::less<>> per_host_;  // hosts with fetches in flight
  std::list<Waiter*> queue_;                                  // arrival order
  std::size_t queued_callers_ = 0;
  std::uint64_t refused_ = 0;
  std::function<void()> on_drained_;
};

}  // namespace ficbroker
