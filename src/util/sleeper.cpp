#include "ficbroker/util/sleeper.hpp"

#include <algorithm>

namespace ficbroker {

asio::awaitable<bool> TimerSleeper::sleep_for(std::chrono::milliseconds delay) {
  asio::steady_timer timer(executor_, delay);
  sleeping_.push_back(&timer);
  const auto [ec] = co_await timer.async_wait(use_nothrow);
  std::erase(sleeping_, &timer);
  co_return !ec;
}

void TimerSleeper::wake_all() {
  // cancel() only queues the completions, so no sleeper leaves the list while it is walked.
  for (auto* timer : sleeping_) timer->cancel();
}

}  // namespace ficbroker
