#include "ficbroker/cache/token_cache.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <exception>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace ficbroker {
namespace {

// Every error this file makes is "try again later": 503 with Retry-After.
// glibc keeps freed memory in its arenas; after a burst that is tens of MB the process never
// uses again.
void release_heap() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

}  // namespace

struct TokenCache::Flight {
  // Each waiter's own timer, armed with its deadline and cancelled when `result` is set: a
  // condition variable with a timeout per waiter.
  std::vector<asio::steady_timer*> waiters;
  std::optional<TokenResult> result;
  bool holds_slot = false;  // of the FetchLimiter, released when the fetch ends
};

TokenCache::TokenCache(asio::any_io_executor executor, const Clock& clock, CacheSettings settings,
                       Random random)
    : executor_(executor),
      clock_(clock),
      settings_(settings),
      random_(std::move(random)),
      limiter_(executor, settings_.fetch_bounds),
      trim_timer_(executor),
      wakeup_(executor) {
  wakeup_.expires_at(SteadyTime::max());
  if (!settings_.release_memory) settings_.release_memory = release_heap;
  limiter_.on_drained([this] { flights_drained(); });
}

TokenCache::~TokenCache() = default;

const Token* TokenCache::find(std::string_view key) {
  const auto it = entries_.find(key);
  if (it == entries_.end() || !it->second.token) return nullptr;
  const auto now = clock_.now();
  if (!settings_.policy.servable(*it->second.token, now)) return nullptr;
  it->second.last_access = now;
  touch(it->second);
  ++stats_.hits;
  if (it->second.failures > 0) ++stats_.stale_serves;
  return &*it->second.token;
}

asio::awaitable<TokenResult> TokenCache::get(std::string key, Fetch fetch, KeyInfo info) {
  auto it = entries_.find(key);
  const auto now = clock_.now();
  if (it == entries_.end()) it = create(key, std::move(info));
  Entry& entry = it->second;
  entry.last_access = now;
  touch(entry);
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
  // still wait for it. Assertions are not bounded: bounded fetches wait on them.
  const bool bounded = !entry.internal;
  asio::co_spawn(
      executor_, run_flight(key, flight, entry.fetch, background, bounded, entry.upstream),
      [this, key, flight, background, upstream = entry.upstream](std::exception_ptr e) {
        if (!e) return;
        if (flight->holds_slot) limiter_.release(upstream);
        // A fetch must report failures as results; an exception here is a bug, but
        // waiters must still be released.
        UpstreamError error = UpstreamError::transient("internal error while fetching a token", 0);
        error.error = "server_error";
        complete_flight(key, flight, error, background);
      });
  return flight;
}

asio::awaitable<void> TokenCache::run_flight(std::string key, std::shared_ptr<Flight> flight,
                                             Fetch fetch, bool background, bool bounded,
                                             std::string upstream) {
  if (bounded) {
    std::string host = upstream;
    const bool admitted = co_await limiter_.acquire(std::move(host), background);
    if (!admitted) {
      ++stats_.fetches_refused;
      complete_flight(
          key, flight,
          UpstreamError::transient("too many token requests are waiting for the upstream", 1),
          background);
      co_return;
    }
    flight->holds_slot = true;
  }
  TokenResult result = co_await fetch();
  complete_flight(key, flight, std::move(result), background);
  if (flight->holds_slot) {
    flight->holds_slot = false;
    limiter_.release(upstream);
  }
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
      touch(entry);
      schedule(key, entry,
               settings_.policy.refresh_at(result->issued_at, result->expires_at, random_()));
    } else {
      settle_failure(it, result.error(), background, short_lived);
    }
  }
  flight->result = std::move(result);
  for (auto* waiter : flight->waiters) waiter->cancel();
}

void TokenCache::settle_failure(EntryMap::iterator it, const UpstreamError& error, bool background,
                                bool short_lived) {
  const auto now = clock_.now();
  Entry& entry = it->second;
  ++entry.failures;
  if (background) ++stats_.refresh_failures;
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
    schedule(it->first, entry, now + delay);
    return;
  }
  entry.token.reset();
  touch(entry);
  if (entry.negative) {
    // Remembered until its time is up; then the refresher drops it (there is nothing to
    // refresh), so a flood of rejected keys does not stay in the map.
    schedule(it->first, entry, entry.negative_until);
  } else {
    // A transient failure without a token: nothing worth keeping.
    unschedule(entry);
    untrack(entry);
    entries_.erase(it);
  }
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
  untrack(it->second);
  entries_.erase(it);
  ++stats_.evictions;
}

TokenCache::EntryMap::iterator TokenCache::create(const std::string& key, KeyInfo info) {
  const auto it = entries_.emplace(key, Entry{}).first;
  it->second.internal = info.internal;
  it->second.upstream = std::move(info.upstream);
  if (!info.internal && !pinned_.contains(key)) {
    track(it, info.group);
    enforce_bound(it->second, key);
  }
  return it;  // erasing other elements leaves it valid
}

void TokenCache::track(EntryMap::iterator it, const std::string& group) {
  Entry& entry = it->second;
  entry.group = groups_.try_emplace(group).first;
  entry.in_valid = entry.token.has_value();
  auto& list = entry.in_valid ? entry.group->second.valid : entry.group->second.failed;
  entry.group_pos = list.insert(list.end(), &it->first);  // map keys do not move
  entry.bounded = true;
  ++bounded_count_;
}

void TokenCache::untrack(Entry& entry) {
  if (!entry.bounded) return;
  Group& group = entry.group->second;
  (entry.in_valid ? group.valid : group.failed).erase(entry.group_pos);
  if (group.size() == 0) groups_.erase(entry.group);
  entry.bounded = false;
  --bounded_count_;
}

void TokenCache::touch(Entry& entry) {
  // To the back of the list for its state (most recently used); splice never allocates.
  if (!entry.bounded) return;
  Group& group = entry.group->second;
  auto& from = entry.in_valid ? group.valid : group.failed;
  auto& to = entry.token ? group.valid : group.failed;
  to.splice(to.end(), from, entry.group_pos);
  entry.in_valid = entry.token.has_value();
}

bool TokenCache::evict_from(Group& group, std::string_view keep, bool failures_only) {
  // Entries with a fetch in flight stay: dropping them would let a second fetch start.
  for (auto* list : {&group.failed, &group.valid}) {
    if (failures_only && list == &group.valid) break;
    for (const std::string* key : *list) {
      const auto it = entries_.find(*key);
      if (*key == keep || it->second.flight) continue;
      erase(it);
      return true;
    }
  }
  return false;
}

void TokenCache::enforce_bound(Entry& created, std::string_view keep) {
  // One group's flood only evicts that group's keys: its failures first, then its least
  // recently used.
  Group& own = created.group->second;
  while (own.size() > settings_.max_entries_per_group &&
         (evict_from(own, keep, true) || evict_from(own, keep, false))) {
  }
  // Over the total: remembered failures anywhere, then the least recently used key of the
  // largest group, so the groups callers flood pay for it.
  while (bounded_count_ > settings_.max_entries) {
    std::vector<Group*> by_size;
    for (auto& [name, group] : groups_) by_size.push_back(&group);
    std::sort(by_size.begin(), by_size.end(),
              [](const Group* a, const Group* b) { return a->size() > b->size(); });
    bool evicted = false;
    for (const bool failures_only : {true, false}) {
      for (Group* group : by_size) {
        if ((evicted = evict_from(*group, keep, failures_only))) break;
      }
      if (evicted) break;
    }
    if (!evicted) return;  // everything else is in flight; the fetch bound limits those
  }
}

void TokenCache::pin(const std::string& key) {
  pinned_.insert(key);
  if (const auto it = entries_.find(key); it != entries_.end()) untrack(it->second);
}

void TokenCache::flights_drained() {
  if (stats_.fetches - fetches_at_trim_ < settings_.trim_after_fetches) return;
  // Not at once: the burst's callers are still being answered. Once things are quiet.
  auto delay = std::chrono::duration_cast<std::chrono::milliseconds>(settings_.trim_delay);
  const auto now = clock_.now();
  if (last_trim_ && *last_trim_ + settings_.trim_interval > now + delay) {
    delay = std::chrono::duration_cast<std::chrono::milliseconds>(*last_trim_ +
                                                                  settings_.trim_interval - now);
  }
  trim_timer_.expires_after(delay);
  trim_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || limiter_.in_flight() > 0 || limiter_.queued() > 0) return;  // a new burst
    last_trim_ = clock_.now();
    fetches_at_trim_ = stats_.fetches;
    settings_.release_memory();
  });
}

void TokenCache::invalidate(std::string_view key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  it->second.token.reset();
  it->second.negative.reset();
  unschedule(it->second);
  touch(it->second);
}

void TokenCache::invalidate_prefix(std::string_view prefix) {
  // In-flight entries go too: their fetch was started for what is being forgotten (a target
  // re-pointed by a reload). It still answers the callers already waiting on it, but it finds no
  // entry to store into, so nothing it brings back is served afterwards.
  for (auto it = entries_.begin(); it != entries_.end();) {
    auto next = std::next(it);
    if (std::string_view(it->first).starts_with(prefix)) erase(it);
    it = next;
  }
}

void TokenCache::wake_refresher() { wakeup_.cancel(); }

void TokenCache::stop() {
  stopped_ = true;
  wakeup_.cancel();
  trim_timer_.cancel();
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
    if (!entry.token) {
      // A remembered failure whose time is up; one being fetched again settles itself.
      if (!entry.flight) erase(it);
      continue;
    }
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
