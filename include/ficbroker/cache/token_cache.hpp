// One map of every token ficbroker holds — exchanged tokens per (tenant, app, scope) and
// assertions per source — with an index ordered by refresh time that drives the background
// refresher, single-flight fetches, stale-while-valid serving and idle eviction.
//
// Thread safety: all members must be used from the one io_context thread.
#pragma once

#include "ficbroker/cache/refresh_policy.hpp"
#include "ficbroker/util/asio.hpp"
#include "ficbroker/util/clock.hpp"
#include "ficbroker/util/token.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <cstdint>
#include <functional>
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
  std::uint64_t fetches = 0;        // upstream fetches started (any reason)
  std::uint64_t evictions = 0;      // idle or over max_entries
  std::uint64_t negative_hits = 0;  // served a cached permanent failure
};

struct CacheSettings {
  RefreshPolicy policy;
  std::chrono::seconds idle_ttl{3600};
  std::size_t max_entries = 10000;
  /// How long a permanent failure is remembered, so a misconfigured app cannot turn every
  /// request into an upstream call.
  std::chrono::seconds negative_ttl{30};
  /// How long a caller waits for an upstream fetch before it is told to retry (503 with
  /// Retry-After); the fetch itself goes on and fills the cache for the retry.
  std::chrono::milliseconds max_wait{20000};
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
  asio::awaitable<TokenResult> get(std::string key, Fetch fetch);

  /// Forgets the cached token for `key` (e.g. an assertion Entra rejected as expired).
  void invalidate(std::string_view key);

  /// Forgets every key that starts with `prefix`, in flight or not.
  void invalidate_prefix(std::string_view prefix);

  /// Keeps `key` refreshed even when nobody asks for it (prewarmed keys).
  void pin(const std::string& key) { pinned_.insert(key); }
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
                                   bool background);
  void complete_flight(const std::string& key, const std::shared_ptr<Flight>& flight,
                       TokenResult result, bool background);
  void schedule(const std::string& key, Entry& entry, SteadyTime when);
  void unschedule(Entry& entry);
  void erase(EntryMap::iterator it);
  void enforce_bound(std::string_view keep);
  void wake_refresher();

  asio::any_io_executor executor_;
  const Clock& clock_;
  CacheSettings settings_;
  Random random_;
  EntryMap entries_;
  std::multimap<SteadyTime, std::string> schedule_;  // refresh points, earliest first
  std::set<std::string, std::less<>> pinned_;
  asio::steady_timer wakeup_;
  bool stopped_ = false;
  CacheStats stats_;
};

}  // namespace ficbroker
