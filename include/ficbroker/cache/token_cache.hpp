// One map of every token ficbroker holds — exchanged tokens per (tenant, app, scope) and
// assertions per source — with an index ordered by refresh time that drives the background
// refresher, single-flight fetches, stale-while-valid serving and idle eviction.
//
// Keys callers choose (any resource they name) are bounded apart from the keys ficbroker needs
// itself (assertions, pinned prewarm keys), per group and in total, remembered failures first and
// then least recently used; so no flood of made-up or rejected resources can push out the keys in
// use. Fetches are bounded in flight by a FetchLimiter.
//
// Thread safety: all members must be used from the one io_context thread.
#pragma once

#include "ficbroker/cache/fetch_limiter.hpp"
#include "ficbroker/cache/refresh_policy.hpp"
#include "ficbroker/util/asio.hpp"
#include "ficbroker/util/clock.hpp"
#include "ficbroker/util/token.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>

namespace ficbroker {

struct CacheStats {
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;        // a caller had to wait for an upstream fetch it started
  std::uint64_t coalesced = 0;     // a caller waited on a fetch someone else started
  std::uint64_t stale_serves = 0;  // served while the entry's refresh was failing
  std::uint64_t refreshes = 0;     // background refreshes started
  std::uint64_t refresh_failures = 0;
  std::uint64_t fetches = 0;          // upstream fetches started (any reason)
  std::uint64_t evictions = 0;        // idle or over max_entries
  std::uint64_t negative_hits = 0;    // served a cached permanent failure
  std::uint64_t fetches_refused = 0;  // over the in-flight bound: the caller was told to retry
};

/// What the cache is told about a key when it is created, so it never parses keys.
struct KeyInfo {
  /// A key ficbroker makes itself (an assertion): there is one per configured source and
  /// audience, so it is never evicted for room and its fetch is not bounded (a bounded fetch waits
  /// on it; bounding both could deadlock).
  bool internal = false;
  /// The target (tenant + app) or source a caller-chosen key belongs to.
  std::string group;
  /// The upstream host (host:port) the key's fetch calls, for the per-host bound.
  std::string upstream;
};

struct CacheSettings {
  RefreshPolicy policy;
  std::chrono::seconds idle_ttl{3600};
  /// Keys callers choose, in total and per group; internal and pinned keys are not counted.
  std::size_t max_entries = 10000;
  std::size_t max_entries_per_group = 1000;
  /// How long a permanent failure is remembered, so a misconfigured app cannot turn every
  /// request into an upstream call.
  std::chrono::seconds negative_ttl{30};
  /// How long a caller waits for an upstream fetch before it is told to retry (503 with
  /// Retry-After); the fetch itself goes on and fills the cache for the retry.
  std::chrono::milliseconds max_wait{20000};
  FetchBounds fetch_bounds;
  /// After a burst (at least this many fetches) drains, memory the allocator kept is handed back
  /// to the system once things are quiet, at most once per trim_interval.
  std::uint64_t trim_after_fetches = 32;
  std::chrono::milliseconds trim_delay{1000};
  std::chrono::seconds trim_interval{10};
  /// Hands memory back (malloc_trim with glibc when empty).
  std::function<void()> release_memory;
};

class TokenCache {
 public:
  using Fetch = std::function<asio::awaitable<TokenResult>()>;
  using Random = std::function<double()>;  // uniform in [0, 1)

  TokenCache(asio::any_io_executor executor, const Clock& clock, CacheSettings settings,
             Random random);
  TokenCache(const TokenCache&) = delete;
  TokenCache& operator=(const TokenCache&) = delete;
  ~TokenCache();

  /// The hot path: a servable cached token, or nullptr. Never suspends, never allocates.
  /// The pointer is valid until the next suspension point.
  const Token* find(std::string_view key);

  /// A servable token for `key`: from the cache, else from the one in-flight fetch for that key,
  /// else from a new fetch (run as its own task, so a caller that goes away does not cancel it
  /// for the others). `fetch` is kept with the entry and reused by background refreshes.
  /// `info` is used when the key is created.
  asio::awaitable<TokenResult> get(std::string key, Fetch fetch, KeyInfo info);
  /// A caller-chosen key of the default group. Not a default argument: GCC 12 destroys a
  /// default argument of a coroutine twice.
  asio::awaitable<TokenResult> get(std::string key, Fetch fetch) {
    return get(std::move(key), std::move(fetch), KeyInfo{});
  }

  /// Forgets the cached token for `key` (e.g. an assertion Entra rejected as expired).
  void invalidate(std::string_view key);

  /// Forgets every key that starts with `prefix`, in flight or not: a fetch in flight for such a
  /// key still answers its waiters but is never stored.
  void invalidate_prefix(std::string_view prefix);

  /// Keeps `key` refreshed even when nobody asks for it (prewarmed keys).
  void pin(const std::string& key);
  void unpin_all() { pinned_.clear(); }

  /// Starts background refreshes of every entry whose refresh point has passed and drops idle
  /// ones. run_refresher() calls it; tests with a ManualClock call it directly.
  void refresh_due();

  /// Runs the background refresher until stop(): sleeps until the earliest refresh point,
  /// refreshes due entries that someone asked for within idle_ttl, drops the others.
  asio::awaitable<void> run_refresher();
  void stop();

  /// Whether every one of `keys` currently holds a servable token (readiness).
  bool all_servable(const std::vector<std::string>& keys) const;

  const CacheStats& stats() const noexcept { return stats_; }
  std::size_t size() const noexcept { return entries_.size(); }
  /// Entries of caller-chosen keys (those max_entries bounds).
  std::size_t bounded_size() const noexcept { return bounded_count_; }
  const FetchLimiter& limiter() const noexcept { return limiter_; }

  /// Seconds to expiry per key (for metrics); keys never contain secrets.
  template <class F>
  void for_each_entry(F&& f) const {
    const auto now = clock_.now();
    for (const auto& [key, entry] : entries_) {
      if (entry.token) {
        f(key, std::chrono::duration_cast<std::chrono::seconds>(entry.token->expires_at - now));
      }
    }
  }

 private:
  struct Flight;
  // The caller-chosen keys of one group, each list in order of last access, oldest first.
  struct Group {
    std::list<const std::string*> failed;  // no token: a remembered failure or a first fetch
    std::list<const std::string*> valid;   // holding a token
    std::size_t size() const noexcept { return failed.size() + valid.size(); }
  };
  using GroupMap = std::map<std::string, Group, std::less<>>;
  struct Entry {
    std::optional<Token> token;
    Fetch fetch;
    SteadyTime last_access{};
    SteadyTime refresh_at{};
    std::multimap<SteadyTime, std::string>::iterator schedule_pos;
    bool scheduled = false;
    std::shared_ptr<Flight> flight;
    int failures = 0;
    std::optional<UpstreamError> negative;  // a permanent failure, remembered briefly
    SteadyTime negative_until{};
    std::string upstream;  // for the per-host fetch bound
    bool internal = false;
    bool bounded = false;  // a caller-chosen key, in one of its group's lists
    GroupMap::iterator group;
    std::list<const std::string*>::iterator group_pos;
    bool in_valid = false;
  };
  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  using EntryMap = std::unordered_map<std::string, Entry, StringHash, std::equal_to<>>;

  std::shared_ptr<Flight> start_flight(const std::string& key, Entry& entry, bool background);
  asio::awaitable<void> run_flight(std::string key, std::shared_ptr<Flight> flight, Fetch fetch,
                                   bool background, bool bounded, std::string upstream);
  void complete_flight(const std::string& key, const std::shared_ptr<Flight>& flight,
                       TokenResult result, bool background);
  void schedule(const std::string& key, Entry& entry, SteadyTime when);
  void unschedule(Entry& entry);
  void erase(EntryMap::iterator it);
  EntryMap::iterator create(const std::string& key, KeyInfo info);
  void track(EntryMap::iterator it, const std::string& group);
  void untrack(Entry& entry);
  void touch(Entry& entry);
  void enforce_bound(Entry& created, std::string_view keep);
  bool evict_from(Group& group, std::string_view keep, bool failures_only);
  void settle_failure(EntryMap::iterator it, const UpstreamError& error, bool background,
                      bool short_lived);
  void flights_drained();
  void wake_refresher();

  asio::any_io_executor executor_;
  const Clock& clock_;
  CacheSettings settings_;
  Random random_;
  EntryMap entries_;
  std::multimap<SteadyTime, std::string> schedule_;  // refresh points, earliest first
  std::set<std::string, std::less<>> pinned_;
  GroupMap groups_;
  std::size_t bounded_count_ = 0;
  FetchLimiter limiter_;
  asio::steady_timer trim_timer_;
  std::uint64_t fetches_at_trim_ = 0;
  std::optional<SteadyTime> last_trim_;
  asio::steady_timer wakeup_;
  bool stopped_ = false;
  CacheStats stats_;
};

}  // namespace ficbroker
