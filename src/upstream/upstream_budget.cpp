#include "ficbroker/upstream/upstream_budget.hpp"

#include <algorithm>

namespace ficbroker {

std::chrono::nanoseconds RateWindow::try_acquire(std::chrono::steady_clock::time_point now) {
  if (last_ != std::chrono::steady_clock::time_point{}) {
    const double elapsed = std::chrono::duration<double>(now - last_).count();
    tokens_ = std::min<double>(burst_, tokens_ + elapsed * rate_);
  }
  last_ = now;
  if (in_flight_ >= max_concurrent_) {
    // Woken by release(); a nominal wait in case nothing else wakes us.
    return std::chrono::milliseconds(50);
  }
  if (tokens_ < 1.0) {
    return std::chrono::nanoseconds(static_cast<long long>((1.0 - tokens_) / rate_ * 1e9) + 1);
  }
  tokens_ -= 1.0;
  ++in_flight_;
  return std::chrono::nanoseconds::zero();
}

asio::awaitable<void> UpstreamBudget::acquire(std::string identity) {
  if (queue_.empty()) {
    if (window_.try_acquire(std::chrono::steady_clock::now()) == std::chrono::nanoseconds::zero()) {
      co_return;
    }
  }
  ++waits_;
  asio::steady_timer timer(executor_);
  queue_.push(identity, &timer);
  for (;;) {
    if (queue_.front() == &timer) {  // its turn
      const auto wait = window_.try_acquire(std::chrono::steady_clock::now());
      if (wait == std::chrono::nanoseconds::zero()) break;
      timer.expires_after(wait);
    } else {
      timer.expires_at(std::chrono::steady_clock::time_point::max());
    }
    co_await timer.async_wait(use_nothrow);
  }
  queue_.pop_front();
  if (!queue_.empty()) queue_.front()->cancel();  // the next turn re-checks
}

void UpstreamBudget::release() {
  window_.release();
  if (!queue_.empty()) queue_.front()->cancel();
}

}  // namespace ficbroker
