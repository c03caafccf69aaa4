#include "ficbroker/cache/token_cache.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <exception>
#include <vector>

namespace ficbroker {

struct TokenCache::Flight {
  // Each waiter's own timer, armed with its deadline and cancelled when `result` is set: a
  // condition variable with a timeout per waiter.
  std::vector<asio::steady_timer*> waiters;
  std::optional<TokenResult> result;
};

TokenCache::TokenCache(asio::any_io_executor executor, const Clock& clock, CacheSettings settings,
                       Random random)
    : executor_(executor),
      clock_(clock),
      settings_(settings),
      random_(std::move(random)),
      wakeup_(executor) {
  wakeup_.expires_at(SteadyTime::max());
}

TokenCache::~TokenCache() = default;

const Token* TokenCache::find(std::string_view key) {
  const auto it = entries_.find(key);
  if (it == entries_.end() || !it->second.token) return nullptr;
  const auto now = clock_.now();
  if (!settings_.policy.servable(*it->second.token, now)) return nullptr;
  it->second.last_access = now;
  ++stats_.hits;
  if (it->second.failures > 0) ++stats_.stale_serves;
  return &*it->second.token;
}

asio::awaitable<TokenResult> TokenCache::get(std::string key, Fetch fetch) {
  auto it = entries_.find(key);
  const auto now = clock_.now();
  if (it == entries_.end()) {
    it = entries_.emplace(key, Entry{}).first;
    enforce_bound(key);
    it = entries_.find(key);
  }
  Entry& entry = it->second;
  entry.last_access = now;
  entry.fetch = std::move(fetch);
  if (entry.token && settings_.policy.servable(*entry.token, now)) {
    ++stats_.hits;
    if (entry.failures > 0) ++stats_.stale_serves;
    co_return *entry.token;
  }
  if (entry.negative && now < entry.negative_until) {
    ++stats_.negative_hits;
    co_return *entry.negative;
  }
  std::shared_ptr<Flight> flight = entry.flight;
  if (flight) {
    ++stats_.coalesced;
  } else {
    ++stats_.misses;
    flight = start_flight(key, entry, false);
  }
  if (!flight->result) {
    asio::steady_timer wake(executor_);
    wake.expires_after(settings_.max_wait);
    flight->waiters.push_back(&wake);
    // Woken early by complete_flight (cancel); otherwise the deadline passed.
    co_await wake.async_wait(use_nothrow);
    std::erase(flight->waiters, &wake);
  }
  if (!flight->result) {
    co_return UpstreamError::transient(
        "the upstream is slow to answer; the token is still being fetched", 2);
  }
  co_return *flight->result;
}

std::shared_ptr<TokenCache::Flight> TokenCache::start_flight(const std::string& key, Entry& entry,
                                                             bool background) {
  auto flight = std::make_shared<Flight>();
  entry.flight = flight;
  ++stats_.fetches;
  if (background) ++stats_.refreshes;
  // The fetch runs as its own task: the caller that triggered it may disconnect, the others
  // still wait for it.
  asio::co_spawn(executor_, run_flight(key, flight, entry.fetch, background),
                 [this, key, flight, background](std::exception_ptr e) {
                   if (!e) return;
                   // A fetch must report failures as results; an exception here is a bug, but
                   // waiters must still be released.
                   UpstreamError error =
                       UpstreamError::transient("internal error while fetching a token", 0);
                   error.error = "server_error";
                   complete_flight(key, flight, error, background);
                 });
  return flight;
}

asio::awaitable<void> TokenCache::run_flight(std::string key, std::shared_ptr<Flight> flight,
                                             Fetch fetch, bool background) {
  TokenResult result = co_await fetch();
  complete_flight(key, flight, std::move(result), background);
}

void TokenCache::complete_flight(const std::string& key, const std::shared_ptr<Flight>& flight,
                                 TokenResult result, bool background) {
  if (flight->result) return;
  const auto now = clock_.now();
  bool short_lived = false;
  if (result && !settings_.policy.servable(*result, now)) {
    // A token that arrives with less than the floor left can never be handed out; caching it
    // would schedule an immediate refresh, again and again.
    result = UpstreamError::transient(
        "the upstream issued a token with less time left than cache.min_validity_seconds (" +
            std::to_string(settings_.policy.min_validity.count()) + " s); it cannot be served",
        30);
    short_lived = true;
  }
  auto it = entries_.find(key);
  if (it != entries_.end() && it->second.flight == flight) {
    Entry& entry = it->second;
    entry.flight.reset();
    if (result) {
      entry.token = *result;
      entry.failures = 0;
      entry.negative.reset();
      schedule(key, entry,
               settings_.policy.refresh_at(result->issued_at, result->expires_at, random_()));
    } else {
      ++entry.failures;
      if (background) ++stats_.refresh_failures;
      const auto& error = result.error();
      if (error.kind == UpstreamError::Kind::permanent) {
        entry.negative = error;
        entry.negative_until = now + settings_.negative_ttl;
      } else if ((error.kind == UpstreamError::Kind::throttled || short_lived) &&
                 error.retry_after_seconds > 0) {
        // Throttled: nobody calls upstream for this key again before its Retry-After.
        entry.negative = error;
        entry.negative_until = now + std::chrono::seconds(error.retry_after_seconds);
      }
      if (entry.token && settings_.policy.servable(*entry.token, now)) {
        // Stale-while-valid: keep serving, retry with backoff while the token still has time.
        const auto delay =
            settings_.policy.retry_delay(entry.failures, error.retry_after_seconds, random_());
        schedule(key, entry, now + delay);
      } else {
        entry.token.reset();
        unschedule(entry);
      }
    }
  }
  flight->result = std::move(result);
  for (auto* waiter : flight->waiters) waiter->cancel();
}

void TokenCache::schedule(const std::string& key, Entry& entry, SteadyTime when) {
  unschedule(entry);
  entry.refresh_at = when;
  entry.schedule_pos = schedule_.emplace(when, key);
  entry.scheduled = true;
  if (entry.schedule_pos == schedule_.begin()) wake_refresher();
}

void TokenCache::unschedule(Entry& entry) {
  if (entry.scheduled) {
    schedule_.erase(entry.schedule_pos);
    entry.scheduled = false;
  }
}

void TokenCache::erase(EntryMap::iterator it) {
  unschedule(it->second);
  entries_.erase(it);
  ++stats_.evictions;
}

void TokenCache::enforce_bound(std::string_view keep) {
  // Over the bound: drop the entries whose refresh is due soonest and that have no fetch in
  // flight; they are the ones closest to costing an upstream call anyway.
  auto pos = schedule_.begin();
  while (entries_.size() > settings_.max_entries && pos != schedule_.end()) {
    auto next = std::next(pos);
    auto it = entries_.find(pos->second);
    if (it != entries_.end() && !it->second.flight && it->first != keep) erase(it);
    pos = next;
  }
  // Entries whose fetch failed are not scheduled at all: drop those next.
  for (auto it = entries_.begin();
       entries_.size() > settings_.max_entries && it != entries_.end();) {
    auto next = std::next(it);
    if (!it->second.flight && !it->second.token && it->first != keep) erase(it);
    it = next;
  }
}

void TokenCache::invalidate(std::string_view key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  it->second.token.reset();
  it->second.negative.reset();
  unschedule(it->second);
}

void TokenCache::invalidate_prefix(std::string_view prefix) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    auto next = std::next(it);
    if (std::string_view(it->first).starts_with(prefix) && !it->second.flight) erase(it);
    it = next;
  }
}

void TokenCache::wake_refresher() { wakeup_.cancel(); }

void TokenCache::stop() {
  stopped_ = true;
  wakeup_.cancel();
}

bool TokenCache::all_servable(const std::vector<std::string>& keys) const {
  const auto now = clock_.now();
  for (const auto& key : keys) {
    const auto it = entries_.find(key);
    if (it == entries_.end() || !it->second.token ||
        !settings_.policy.servable(*it->second.token, now)) {
      return false;
    }
  }
  return true;
}

void TokenCache::refresh_due() {
  const auto now = clock_.now();
  while (!schedule_.empty() && schedule_.begin()->first <= now) {
    const std::string key = schedule_.begin()->second;
    schedule_.erase(schedule_.begin());
    auto it = entries_.find(key);
    if (it == entries_.end()) continue;
    Entry& entry = it->second;
    entry.scheduled = false;
    if (now - entry.last_access > settings_.idle_ttl && !pinned_.contains(key)) {
      // Nobody asked for this key lately: stop spending upstream calls on it.
      erase(it);
      continue;
    }
    if (!entry.flight && entry.fetch) start_flight(key, entry, true);
  }
}

asio::awaitable<void> TokenCache::run_refresher() {
  while (!stopped_) {
    refresh_due();
    if (schedule_.empty()) {
      wakeup_.expires_at(SteadyTime::max());
    } else {
      // The clock may be a test clock: sleep in steady_clock terms for the remaining delta.
      wakeup_.expires_after(schedule_.begin()->first - clock_.now());
    }
    co_await wakeup_.async_wait(use_nothrow);
  }
}

}  // namespace ficbroker
