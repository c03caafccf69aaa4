// Waiting between retries, as something a test can replace: the production Sleeper waits on a
// steady_timer; a test one moves a ManualClock and returns at once. wake_all() ends every pending
// wait early, so that stopping the broker does not wait out a retry's back-off.
//
// Thread safety: io_context thread only.
#pragma once

#include "ficbroker/util/asio.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <utility>
#include <vector>

namespace ficbroker {

class Sleeper {
 public:
  virtual ~Sleeper() = default;

  /// Waits `delay`. True when the whole delay passed, false when wake_all() ended it early.
  virtual asio::awaitable<bool> sleep_for(std::chrono::milliseconds delay) = 0;

  /// Ends every pending sleep_for at once.
  virtual void wake_all() = 0;
};

class TimerSleeper final : public Sleeper {
 public:
  explicit TimerSleeper(asio::any_io_executor executor) : executor_(std::move(executor)) {}

  asio::awaitable<bool> sleep_for(std::chrono::milliseconds delay) override;
  void wake_all() override;

 private:
  asio::any_io_executor executor_;
  std::vector<asio::steady_timer*> sleeping_;  // each one's timer lives in its coroutine frame
};

}  // namespace ficbroker
