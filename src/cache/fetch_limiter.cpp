#include "ficbroker/cache/fetch_limiter.hpp"

#include <algorithm>

namespace ficbroker {

bool FetchLimiter::has_room(const std::string& host) const {
  if (in_flight_ >= bounds_.max_in_flight) return false;
  const auto it = per_host_.find(host);
  return it == per_host_.end() || it->second < bounds_.max_in_flight_per_host;
}

void FetchLimiter::take(const std::string& host) {
  ++in_flight_;
  ++per_host_[host];
}

asio::awaitable<bool> FetchLimiter::acquire(std::string host, bool background) {
  // Waiters are only ever held up by a full bound, so a fetch with room need not queue behind
  // them (they wait for another host, or for the global bound, which is full then).
  if (has_room(host)) {
    take(host);
    co_return true;
  }
  if (!background && queued_callers_ >= bounds_.max_queued) {
    ++refused_;
    co_return false;
  }
  asio::steady_timer timer(executor_);
  Waiter waiter{&host, &timer, background};
  queue_.push_back(&waiter);
  const auto pos = std::prev(queue_.end());
  if (!background) ++queued_callers_;
  for (;;) {
    // Woken early by grant_waiters (cancel); a caller's deadline ends its wait.
    timer.expires_after(background ? std::chrono::hours(24) : bounds_.max_queue_wait);
    co_await timer.async_wait(use_nothrow);
    if (waiter.granted || !background) break;
  }
  if (!waiter.granted) {
    queue_.erase(pos);
    --queued_callers_;
    ++refused_;
    co_return false;
  }
  co_return true;
}

void FetchLimiter::grant_waiters() {
  for (auto it = queue_.begin(); it != queue_.end() && in_flight_ < bounds_.max_in_flight;) {
    Waiter* w = *it;
    if (!has_room(*w->host)) {
      ++it;
      continue;
    }
    take(*w->host);
    w->granted = true;
    if (!w->background) --queued_callers_;
    w->timer->cancel();
    it = queue_.erase(it);
  }
}

void FetchLimiter::release(const std::string& host) {
  --in_flight_;
  const auto it = per_host_.find(host);
  if (it != per_host_.end() && --it->second == 0) per_host_.erase(it);
  grant_waiters();
  if (in_flight_ == 0 && queue_.empty() && on_drained_) on_drained_();
}

}  // namespace ficbroker
