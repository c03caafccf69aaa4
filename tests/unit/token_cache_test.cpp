// The token cache on one io_context with a ManualClock: single-flight fetches, the validity floor,
// stale-while-valid, negative caching, bounds and the background refresher. Time only moves when
// a test moves it; fetches that must overlap wait on a gate the test opens. The refresher is
// driven through refresh_due(), plus a few tests of run_refresher() itself.
//
// Inside coroutines, co_await operands never hold non-trivial temporaries (GCC 12 may destroy
// them twice): keys are string views and results are named.
#include "ficbroker/cache/token_cache.hpp"

#include "run_coro.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace ficbroker {
namespace {

using std::chrono::hours;
using std::chrono::seconds;
using testing::run_coro;
using testing::yield_once;
using testing::yield_until;

// A 1 h token refreshes at (3600 - 300) * 3/4 = 2475 s with jitter 0.
constexpr seconds kRefreshPoint{2475};

class TokenCacheTest : public ::testing::Test {
 protected:
  TokenCacheTest() { gate_.expires_at(SteadyTime::max()); }

  void make_cache(CacheSettings settings = {}) {
    cache_ =
        std::make_unique<TokenCache>(ioc_.get_executor(), clock_, settings, [] { return 0.0; });
  }

  Token token(std::string name, seconds lifetime) const {
    Token t;
    t.access_token = std::move(name);
    t.issued_at = clock_.now();
    t.expires_at = t.issued_at + lifetime;
    t.expires_on = clock_.epoch_seconds() + lifetime.count();
    t.ext_expires_on = t.expires_on;
    t.not_before = clock_.epoch_seconds();
    return t;
  }

  static UpstreamError failure(UpstreamError::Kind kind, std::string description) {
    UpstreamError e;
    e.kind = kind;
    const bool permanent = kind == UpstreamError::Kind::permanent;
    e.error = permanent ? "invalid_request" : "temporarily_unavailable";
    e.description = std::move(description);
    e.retry_after_seconds = permanent ? 0 : 1;
    return e;
  }

  // Counts its calls, suspends once as real I/O would (so that a misbehaving cache loops through
  // the scheduler instead of hanging the thread), waits while the gate is closed, then answers
  // with `next_error_` or a token named after the call number.
  TokenCache::Fetch counting_fetch() {
    return [this]() -> asio::awaitable<TokenResult> {
      const int call = ++fetches_;
      co_await yield_once();
      while (!gate_open_) co_await gate_.async_wait(use_nothrow);
      if (throw_) throw std::runtime_error("fetch blew up");
      if (next_error_) co_return *next_error_;
      co_return token("token-" + std::to_string(call), lifetime_);
    };
  }

  void close_gate() { gate_open_ = false; }
  void open_gate() {
    gate_open_ = true;
    gate_.cancel();
  }

  asio::awaitable<TokenResult> get(std::string_view key) {
    std::string owned(key);
    TokenCache::Fetch fetch = counting_fetch();
    TokenResult result = co_await cache_->get(std::move(owned), std::move(fetch));
    co_return result;
  }

  // Runs refresh_due() and lets the background fetches it started finish (each completes after
  // a yield or two; twenty rounds are ample).
  asio::awaitable<void> refresh_and_settle() {
    cache_->refresh_due();
    for (int i = 0; i < 20; ++i) co_await yield_once();
  }

  asio::awaitable<TokenResult> get_as(std::string_view key, KeyInfo info) {
    std::string owned(key);
    TokenCache::Fetch fetch = counting_fetch();
    TokenResult result = co_await cache_->get(std::move(owned), std::move(fetch), std::move(info));
    co_return result;
  }

  // Starts a get that runs on its own; its result lands in `results_[key]`.
  void spawn_get(const std::string& key, KeyInfo info = {}) {
    asio::co_spawn(ioc_, get_as(key, std::move(info)),
                   [this, key](std::exception_ptr e, TokenResult r) {
                     EXPECT_FALSE(e);
                     results_.insert_or_assign(key, std::move(r));
                   });
  }

  static KeyInfo in_group(std::string group, std::string upstream = "") {
    KeyInfo info;
    info.group = std::move(group);
    info.upstream = std::move(upstream);
    return info;
  }

  static KeyInfo internal_key() {
    KeyInfo info;
    info.internal = true;
    return info;
  }

  const Token* found(std::string_view key) { return cache_->find(key); }

  std::string found_name(std::string_view key) {
    const Token* t = cache_->find(key);
    return t ? t->access_token : "(none)";
  }

  asio::io_context ioc_;
  ManualClock clock_;
  std::unique_ptr<TokenCache> cache_;
  asio::steady_timer gate_{ioc_};
  bool gate_open_ = true;
  int fetches_ = 0;
  bool throw_ = false;
  std::optional<UpstreamError> next_error_;
  std::map<std::string, TokenResult> results_;
  seconds lifetime_{3600};
};

std::string name_of(const TokenResult& r) {
  return r.has_value() ? r->access_token : "(error: " + r.error().description + ")";
}

// --- Hits, misses, single flight
// ------------------------------------------------------------------

TEST_F(TokenCacheTest, MissCallsFetchOnceAndTheSecondGetIsAHit) {
  make_cache();
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult first = co_await get("k");
    EXPECT_EQ(name_of(first), "token-1");
    EXPECT_EQ(fetches_, 1);
    EXPECT_EQ(cache_->stats().misses, 1u);
    EXPECT_EQ(cache_->stats().fetches, 1u);
    EXPECT_EQ(cache_->stats().hits, 0u);

    EXPECT_EQ(found_name("k"), "token-1");
    EXPECT_EQ(cache_->stats().hits, 1u);

    const TokenResult second = co_await get("k");
    EXPECT_EQ(name_of(second), "token-1");
    EXPECT_EQ(fetches_, 1) << "a hit must not fetch";
    EXPECT_EQ(cache_->stats().hits, 2u);
    EXPECT_EQ(cache_->stats().misses, 1u);
    EXPECT_EQ(cache_->size(), 1u);
  }());
}

TEST_F(TokenCacheTest, FindOnAnUnknownKeyIsNullAndCountsNothing) {
  make_cache();
  EXPECT_EQ(found("nope"), nullptr);
  EXPECT_EQ(cache_->stats().hits, 0u);
  EXPECT_EQ(cache_->stats().misses, 0u);
  EXPECT_EQ(cache_->size(), 0u);
}

TEST_F(TokenCacheTest, DifferentKeysFetchSeparately) {
  make_cache();
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult a = co_await get("a");
    const TokenResult b = co_await get("b");
    EXPECT_EQ(name_of(a), "token-1");
    EXPECT_EQ(name_of(b), "token-2");
    EXPECT_EQ(cache_->size(), 2u);
  }());
}

TEST_F(TokenCacheTest, ConcurrentGetsForOneKeyShareOneFetch) {
  make_cache();
  close_gate();
  constexpr int kCallers = 50;
  std::vector<std::optional<TokenResult>> results(kCallers);
  int finished = 0;
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    for (int i = 0; i < kCallers; ++i) {
      asio::co_spawn(ioc_, get("shared"), [&, i](std::exception_ptr e, TokenResult r) {
        EXPECT_FALSE(e);
        results[static_cast<std::size_t>(i)] = std::move(r);
        ++finished;
      });
    }
    const bool all_joined =
        co_await yield_until([&] { return cache_->stats().coalesced == kCallers - 1; });
    EXPECT_TRUE(all_joined) << "coalesced=" << cache_->stats().coalesced;
    EXPECT_EQ(finished, 0) << "nobody may finish while the fetch is held";
    open_gate();
    const bool all_done = co_await yield_until([&] { return finished == kCallers; });
    EXPECT_TRUE(all_done) << finished << " of " << kCallers << " callers finished";
  }());
  EXPECT_EQ(fetches_, 1);
  EXPECT_EQ(cache_->stats().fetches, 1u);
  EXPECT_EQ(cache_->stats().misses, 1u);
  EXPECT_EQ(cache_->stats().coalesced, static_cast<std::uint64_t>(kCallers - 1));
  for (std::size_t i = 0; i < results.size(); ++i) {
    ASSERT_TRUE(results[i].has_value()) << "caller " << i;
    EXPECT_EQ(name_of(*results[i]), "token-1") << "caller " << i;
  }
}

TEST_F(TokenCacheTest, AFailingFetchReachesEveryWaiter) {
  make_cache();
  close_gate();
  next_error_ = failure(UpstreamError::Kind::transient, "IMDS answered HTTP 500");
  constexpr int kCallers = 10;
  std::vector<std::optional<TokenResult>> results(kCallers);
  int finished = 0;
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    for (int i = 0; i < kCallers; ++i) {
      asio::co_spawn(ioc_, get("k"), [&, i](std::exception_ptr, TokenResult r) {
        results[static_cast<std::size_t>(i)] = std::move(r);
        ++finished;
      });
    }
    co_await yield_until([&] { return cache_->stats().coalesced == kCallers - 1; });
    open_gate();
    co_await yield_until([&] { return finished == kCallers; });
  }());
  EXPECT_EQ(fetches_, 1);
  ASSERT_EQ(finished, kCallers);
  for (const auto& r : results) {
    ASSERT_TRUE(r.has_value());
    ASSERT_FALSE(r->has_value());
    EXPECT_EQ(r->error().description, "IMDS answered HTTP 500");
    EXPECT_EQ(http_status(r->error()), 503u);
  }
  EXPECT_EQ(found("k"), nullptr);
}

TEST_F(TokenCacheTest, ATransientFailureIsNotRemembered) {
  make_cache();
  next_error_ = failure(UpstreamError::Kind::transient, "timeout");
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult failed = co_await get("k");
    EXPECT_FALSE(failed.has_value());
    next_error_.reset();
    const TokenResult retried = co_await get("k");
    EXPECT_EQ(name_of(retried), "token-2");
    EXPECT_EQ(cache_->stats().negative_hits, 0u);
  }());
}

TEST_F(TokenCacheTest, AnExceptionInTheFetchReleasesEveryWaiterWithAnError) {
  make_cache();
  close_gate();
  throw_ = true;
  int finished = 0;
  int errors = 0;
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    for (int i = 0; i < 3; ++i) {
      asio::co_spawn(ioc_, get("k"), [&](std::exception_ptr e, TokenResult r) {
        if (!e && !r.has_value()) ++errors;
        ++finished;
      });
    }
    co_await yield_until([&] { return cache_->stats().coalesced == 2; });
    open_gate();
    co_await yield_until([&] { return finished == 3; });
  }());
  EXPECT_EQ(finished, 3);
  EXPECT_EQ(errors, 3);
  EXPECT_EQ(fetches_, 1);
}

TEST_F(TokenCacheTest, ACallerWaitingLongerThanMaxWaitIsToldToRetryAndTheFetchGoesOn) {
  CacheSettings settings;
  settings.max_wait = std::chrono::milliseconds(0);
  make_cache(settings);
  close_gate();
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult impatient = co_await get("k");
    EXPECT_FALSE(impatient.has_value());
    if (!impatient) {
      EXPECT_EQ(impatient.error().kind, UpstreamError::Kind::transient);
      EXPECT_EQ(http_status(impatient.error()), 503u);
      EXPECT_GT(impatient.error().retry_after_seconds, 0);
    }
    open_gate();
    const bool filled = co_await yield_until([&] { return found("k") != nullptr; });
    EXPECT_TRUE(filled) << "the abandoned fetch must still fill the cache";
    EXPECT_EQ(fetches_, 1);
    const TokenResult retried = co_await get("k");
    EXPECT_EQ(name_of(retried), "token-1");
  }());
}

// --- Validity floor
// ---------------------------------------------------------------------------------

TEST_F(TokenCacheTest, TokenWithOnlyMinValidityLeftIsNeverServed) {
  make_cache();  // min_validity 300 s
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult first = co_await get("k");
    EXPECT_EQ(name_of(first), "token-1");
    clock_.advance(seconds(3600 - 300 - 1));
    EXPECT_NE(found("k"), nullptr) << "301 s left";
    clock_.advance(seconds(1));
    EXPECT_EQ(found("k"), nullptr) << "300 s left";
    EXPECT_FALSE(cache_->all_servable({"k"}));
    const TokenResult second = co_await get("k");
    EXPECT_EQ(name_of(second), "token-2") << "a fresh token, not the one at the floor";
    if (second) {
      EXPECT_EQ(second->expires_at - clock_.now(), seconds(3600));
    }
    EXPECT_EQ(fetches_, 2);
    EXPECT_EQ(found_name("k"), "token-2");
  }());
}

TEST_F(TokenCacheTest, FreshTokenShorterThanTheFloorIsNotHandedOut) {
  // MSAL treats a token with less than 5 min left as expired and asks again at once: handing
  // one out invites a request storm. The caller should get a retryable error instead.
  make_cache();  // min_validity 300 s
  lifetime_ = seconds(200);
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult r = co_await get("k");
    if (r) {
      ADD_FAILURE() << "handed out a token with " << (r->expires_at - clock_.now()).count() / 1e9
                    << " s left (floor 300 s)";
    } else {
      EXPECT_EQ(r.error().kind, UpstreamError::Kind::transient);
      EXPECT_GT(r.error().retry_after_seconds, 0);
    }
    EXPECT_EQ(found("k"), nullptr);
  }());
}

TEST_F(TokenCacheTest, ExpiredTokenIsRefetched) {
  make_cache();
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult first = co_await get("k");
    EXPECT_TRUE(first.has_value());
    clock_.advance(hours(5));
    EXPECT_EQ(found("k"), nullptr);
    const TokenResult second = co_await get("k");
    EXPECT_EQ(name_of(second), "token-2");
  }());
}

// --- Background refresh
// -------------------------------------------------------------------------------

TEST_F(TokenCacheTest, NothingIsRefreshedBeforeTheRefreshPoint) {
  make_cache();
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult first = co_await get("k");
    EXPECT_TRUE(first.has_value());
    clock_.advance(kRefreshPoint - seconds(1));
    co_await refresh_and_settle();
    EXPECT_EQ(fetches_, 1);
    EXPECT_EQ(cache_->stats().refreshes, 0u);
  }());
}

TEST_F(TokenCacheTest, BackgroundRefreshReplacesTheTokenWithoutCallersWaiting) {
  make_cache();
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult first = co_await get("k");
    EXPECT_TRUE(first.has_value());
    clock_.advance(kRefreshPoint);
    co_await refresh_and_settle();
    EXPECT_EQ(cache_->stats().refreshes, 1u);
    EXPECT_EQ(found_name("k"), "token-2");
    EXPECT_EQ(cache_->stats().misses, 1u) << "only the very first get waited";
    EXPECT_EQ(cache_->stats().stale_serves, 0u);
  }());
}

TEST_F(TokenCacheTest, StaleTokenIsServedWhileItsRefreshFails) {
  make_cache();
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult first = co_await get("k");
    EXPECT_TRUE(first.has_value());
    clock_.advance(kRefreshPoint + seconds(25));  // well before the floor at 3300 s
    next_error_ = failure(UpstreamError::Kind::transient, "Entra answered HTTP 503");
    co_await refresh_and_settle();
    EXPECT_EQ(cache_->stats().refreshes, 1u);
    EXPECT_EQ(cache_->stats().refresh_failures, 1u);
    EXPECT_EQ(fetches_, 2);

    EXPECT_EQ(found_name("k"), "token-1") << "a failing refresh must not take a valid token away";
    EXPECT_EQ(cache_->stats().stale_serves, 1u);

    const TokenResult served = co_await get("k");
    EXPECT_EQ(name_of(served), "token-1");
    EXPECT_EQ(cache_->stats().stale_serves, 2u);
    EXPECT_EQ(fetches_, 2) << "callers do not fetch while the stale token is valid";
  }());
}

TEST_F(TokenCacheTest, FailedRefreshIsRetriedWithBackoffAndRecovers) {
  make_cache();
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult first = co_await get("k");
    EXPECT_TRUE(first.has_value());
    clock_.advance(kRefreshPoint);
    next_error_ = failure(UpstreamError::Kind::transient, "down");
    co_await refresh_and_settle();
    EXPECT_EQ(fetches_, 2);
    co_await refresh_and_settle();
    EXPECT_EQ(fetches_, 2) << "the retry waits for its backoff (1 s)";
    clock_.advance(seconds(1));
    next_error_.reset();
    co_await refresh_and_settle();
    EXPECT_EQ(fetches_, 3);
    EXPECT_EQ(found_name("k"), "token-3");
    EXPECT_EQ(cache_->stats().stale_serves, 0u) << "failures reset after a success";
  }());
}

TEST_F(TokenCacheTest, StaleTokenStopsBeingServedAtTheFloor) {
  make_cache();
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult first = co_await get("k");
    EXPECT_TRUE(first.has_value());
    clock_.advance(kRefreshPoint);
    next_error_ = failure(UpstreamError::Kind::transient, "down");
    co_await refresh_and_settle();
    clock_.advance(seconds(3300) - kRefreshPoint);
    EXPECT_EQ(found("k"), nullptr);
    const TokenResult late = co_await get("k");
    EXPECT_FALSE(late.has_value()) << "the upstream is still down";
  }());
}

TEST_F(TokenCacheTest, RefresherEvictsIdleEntriesInsteadOfRefreshingThem) {
  CacheSettings settings;
  settings.idle_ttl = seconds(60);
  make_cache(settings);
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult first = co_await get("k");
    EXPECT_TRUE(first.has_value());
    clock_.advance(kRefreshPoint);  // nobody asked since the fetch
    co_await refresh_and_settle();
    EXPECT_EQ(cache_->size(), 0u);
    EXPECT_EQ(cache_->stats().evictions, 1u);
    EXPECT_EQ(cache_->stats().refreshes, 0u);
    EXPECT_EQ(fetches_, 1) << "an idle key costs no upstream call";
  }());
}

TEST_F(TokenCacheTest, RefresherRefreshesRecentlyUsedEntries) {
  CacheSettings settings;
  settings.idle_ttl = seconds(600);
  make_cache(settings);
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult first = co_await get("k");
    EXPECT_TRUE(first.has_value());
    clock_.advance(kRefreshPoint - seconds(100));
    EXPECT_NE(found("k"), nullptr);  // a use within idle_ttl of the refresh point
    clock_.advance(seconds(100));
    co_await refresh_and_settle();
    EXPECT_EQ(fetches_, 2);
    EXPECT_EQ(cache_->size(), 1u);
    EXPECT_EQ(cache_->stats().evictions, 0u);
  }());
}

TEST_F(TokenCacheTest, PinnedKeysAreRefreshedEvenWhenIdle) {
  CacheSettings settings;
  settings.idle_ttl = seconds(60);
  make_cache(settings);
  cache_->pin("k");
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult first = co_await get("k");
    EXPECT_TRUE(first.has_value());
    clock_.advance(kRefreshPoint);
    co_await refresh_and_settle();
    EXPECT_EQ(fetches_, 2);
    EXPECT_EQ(found_name("k"), "token-2");
    cache_->unpin_all();
  }());
}

TEST_F(TokenCacheTest, ShortLivedTokenIsNotRefetchedAgainWithoutTimeMoving) {
  // An upstream that hands out a token with less than min_validity left (App Service caches
  // tokens for hours and may return one near its end) gets a refresh point of "now". After one
  // more attempt the cache must back off, not ask again on every pass of the refresher.
  make_cache();
  lifetime_ = seconds(200);
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult first = co_await get("k");
    EXPECT_FALSE(first.has_value());  // too short to serve: an error, remembered briefly
    co_await refresh_and_settle();
    const int after_first_pass = fetches_;
    co_await refresh_and_settle();
    co_await refresh_and_settle();
    EXPECT_EQ(fetches_, after_first_pass) << "the refresh point of a too-short token is 'now'";
  }());
}

TEST_F(TokenCacheTest, RunRefresherDoesNotSpinOnATokenShorterThanTheFloor) {
  make_cache();
  lifetime_ = seconds(200);
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult first = co_await get("k");
    EXPECT_FALSE(first.has_value());  // too short to serve: an error, remembered briefly
    asio::co_spawn(ioc_, cache_->run_refresher(), asio::detached);
    for (int i = 0; i < 200; ++i) co_await yield_once();
    EXPECT_LE(fetches_, 3) << "the refresher fetched " << fetches_
                           << " times without the clock moving";
    cache_->stop();
  }());
}

TEST_F(TokenCacheTest, RunRefresherRefreshesWhatIsAlreadyDue) {
  make_cache();
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult first = co_await get("k");
    EXPECT_TRUE(first.has_value());
    clock_.advance(kRefreshPoint);
    asio::co_spawn(ioc_, cache_->run_refresher(), asio::detached);
    const bool refreshed = co_await yield_until([&] { return found_name("k") == "token-2"; });
    EXPECT_TRUE(refreshed);
    EXPECT_EQ(cache_->stats().refreshes, 1u);
    cache_->stop();
  }());
}

TEST_F(TokenCacheTest, StopEndsTheRefresher) {
  make_cache();
  bool ended = false;
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    asio::co_spawn(ioc_, cache_->run_refresher(), [&](std::exception_ptr) { ended = true; });
    co_await yield_once();
    cache_->stop();
    co_await yield_until([&] { return ended; });
  }());
  EXPECT_TRUE(ended);
}

// --- Negative cache, invalidation, readiness
// ------------------------------------------------------

TEST_F(TokenCacheTest, PermanentFailureIsNegativeCached) {
  CacheSettings settings;
  settings.negative_ttl = seconds(30);
  make_cache(settings);
  next_error_ = failure(UpstreamError::Kind::permanent, "AADSTS700213: no matching FIC");
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult first = co_await get("k");
    EXPECT_FALSE(first.has_value());
    EXPECT_EQ(fetches_, 1);

    clock_.advance(seconds(29));
    const TokenResult second = co_await get("k");
    EXPECT_EQ(name_of(second), "(error: AADSTS700213: no matching FIC)");
    EXPECT_EQ(fetches_, 1) << "within negative_ttl the failure is answered from memory";
    EXPECT_EQ(cache_->stats().negative_hits, 1u);

    clock_.advance(seconds(2));
    next_error_.reset();
    const TokenResult third = co_await get("k");
    EXPECT_EQ(name_of(third), "token-2") << "after negative_ttl the upstream is asked again";
  }());
}

TEST_F(TokenCacheTest, InvalidateForgetsTheToken) {
  make_cache();
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult first = co_await get("k");
    EXPECT_TRUE(first.has_value());
    EXPECT_NE(found("k"), nullptr);
    cache_->invalidate("k");
    EXPECT_EQ(found("k"), nullptr);
    cache_->invalidate("never-seen");
    const TokenResult second = co_await get("k");
    EXPECT_EQ(name_of(second), "token-2");
  }());
}

TEST_F(TokenCacheTest, InvalidatePrefixDropsAKeyInFlightSoItsResultIsNeverServed) {
  make_cache();
  close_gate();
  std::optional<TokenResult> waiter;
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    asio::co_spawn(ioc_, get("t\x1fold-tenant\x1fscope"),
                   [&](std::exception_ptr, TokenResult r) { waiter = std::move(r); });
    co_await yield_until([&] { return fetches_ == 1; });
    // A reload re-points the target while its fetch is in flight.
    cache_->invalidate_prefix("t\x1fold-tenant\x1f");
    open_gate();
    co_await yield_until([&] { return waiter.has_value(); });
  }());
  ASSERT_TRUE(waiter.has_value());
  EXPECT_TRUE(waiter->has_value()) << "the caller that was waiting still gets its answer";
  EXPECT_EQ(found("t\x1fold-tenant\x1fscope"), nullptr)
      << "a fetch started for the old target was stored after the reload";
}

TEST_F(TokenCacheTest, InvalidateAlsoForgetsANegativeEntry) {
  make_cache();
  next_error_ = failure(UpstreamError::Kind::permanent, "nope");
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult first = co_await get("k");
    EXPECT_FALSE(first.has_value());
    cache_->invalidate("k");
    next_error_.reset();
    const TokenResult second = co_await get("k");
    EXPECT_EQ(name_of(second), "token-2");
  }());
}

TEST_F(TokenCacheTest, AllServableNeedsEveryKey) {
  make_cache();
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    EXPECT_TRUE(cache_->all_servable({}));
    EXPECT_FALSE(cache_->all_servable({"a", "b"}));
    const TokenResult a = co_await get("a");
    EXPECT_TRUE(a.has_value());
    EXPECT_FALSE(cache_->all_servable({"a", "b"}));
    clock_.advance(seconds(1000));
    const TokenResult b = co_await get("b");
    EXPECT_TRUE(b.has_value());
    EXPECT_TRUE(cache_->all_servable({"a", "b"}));
    clock_.advance(seconds(3600 - 300 - 1000));  // "a" reaches the floor, "b" does not
    EXPECT_FALSE(cache_->all_servable({"a", "b"}));
    EXPECT_TRUE(cache_->all_servable({"b"}));
  }());
}

TEST_F(TokenCacheTest, ForEachEntryReportsSecondsLeft) {
  make_cache();
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult first = co_await get("k");
    EXPECT_TRUE(first.has_value());
    clock_.advance(seconds(100));
    int seen = 0;
    cache_->for_each_entry([&](const std::string& key, seconds left) {
      ++seen;
      EXPECT_EQ(key, "k");
      EXPECT_EQ(left, seconds(3500));
    });
    EXPECT_EQ(seen, 1);
  }());
}

// --- Bounds
// ---------------------------------------------------------------------------------------

TEST_F(TokenCacheTest, MaxEntriesBoundEvictsTheEntryDueSoonest) {
  CacheSettings settings;
  settings.max_entries = 2;
  make_cache(settings);
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult k1 = co_await get("k1");
    clock_.advance(seconds(1));
    const TokenResult k2 = co_await get("k2");
    clock_.advance(seconds(1));
    const TokenResult k3 = co_await get("k3");
    EXPECT_TRUE(k1 && k2 && k3);
    EXPECT_EQ(cache_->size(), 2u);
    EXPECT_EQ(cache_->stats().evictions, 1u);
    EXPECT_EQ(found("k1"), nullptr);
    EXPECT_NE(found("k2"), nullptr);
    EXPECT_NE(found("k3"), nullptr);
  }());
}

TEST_F(TokenCacheTest, MaxEntriesBoundHoldsForKeysWhoseFetchFailed) {
  // Failed keys hold no token and no refresh point; they must still count against the bound,
  // or callers asking for ever-new resources that fail grow the map without limit.
  CacheSettings settings;
  settings.max_entries = 2;
  make_cache(settings);
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    next_error_ = failure(UpstreamError::Kind::permanent, "AADSTS500011: resource not found");
    for (int i = 0; i < 5; ++i) {
      const std::string key = "p" + std::to_string(i);
      const TokenResult r = co_await get(key);
      EXPECT_FALSE(r.has_value());
    }
    next_error_ = failure(UpstreamError::Kind::transient, "down");
    for (int i = 0; i < 5; ++i) {
      const std::string key = "t" + std::to_string(i);
      const TokenResult r = co_await get(key);
      EXPECT_FALSE(r.has_value());
    }
  }());
  EXPECT_LE(cache_->size(), 2u);
}

// --- Eviction under floods: failures first, internal and pinned keys apart, LRU per group
// ---------------------------------------------------------------------------------------

TEST_F(TokenCacheTest, AFloodOfRejectedKeysEvictsOnlyFailuresAndTheKeyInUseStaysAHit) {
  CacheSettings settings;
  settings.max_entries = 3;
  make_cache(settings);
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult in_use = co_await get("in-use");
    EXPECT_TRUE(in_use.has_value());
    next_error_ = failure(UpstreamError::Kind::permanent, "AADSTS500011: resource not found");
    for (int i = 0; i < 50; ++i) {
      const std::string key = "rejected-" + std::to_string(i);
      const TokenResult r = co_await get(key);
      EXPECT_FALSE(r.has_value());
    }
  }());
  EXPECT_EQ(found_name("in-use"), "token-1");
  EXPECT_LE(cache_->size(), 3u);
  EXPECT_EQ(fetches_, 51);
}

TEST_F(TokenCacheTest, ARememberedFailureIsDroppedWhenItsTimeIsUp) {
  CacheSettings settings;
  settings.negative_ttl = seconds(30);
  make_cache(settings);
  next_error_ = failure(UpstreamError::Kind::permanent, "AADSTS500011: resource not found");
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult r = co_await get("rejected");
    EXPECT_FALSE(r.has_value());
    clock_.advance(seconds(29));
    co_await refresh_and_settle();
    EXPECT_EQ(cache_->size(), 1u) << "remembered for its negative_ttl";
    clock_.advance(seconds(2));
    co_await refresh_and_settle();
  }());
  EXPECT_EQ(cache_->size(), 0u);
  EXPECT_EQ(fetches_, 1) << "a dropped failure is not refetched by the refresher";
}

TEST_F(TokenCacheTest, AThrottledKeyIsDroppedAfterItsRetryAfter) {
  make_cache();
  UpstreamError throttled = failure(UpstreamError::Kind::throttled, "429");
  throttled.retry_after_seconds = 5;
  next_error_ = throttled;
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult r = co_await get("k");
    EXPECT_FALSE(r.has_value());
    clock_.advance(seconds(6));
    co_await refresh_and_settle();
  }());
  EXPECT_EQ(cache_->size(), 0u);
}

TEST_F(TokenCacheTest, ATransientFailureLeavesNoEntryBehind) {
  make_cache();
  next_error_ = failure(UpstreamError::Kind::transient, "timeout");
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    for (int i = 0; i < 20; ++i) {
      const std::string key = "k" + std::to_string(i);
      const TokenResult r = co_await get(key);
      EXPECT_FALSE(r.has_value());
    }
  }());
  EXPECT_EQ(cache_->size(), 0u);
}

TEST_F(TokenCacheTest, AssertionAndPinnedKeysAreNeverEvictedForCallerKeys) {
  CacheSettings settings;
  settings.max_entries = 2;
  make_cache(settings);
  cache_->pin("pinned");
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult assertion = co_await get_as("assertion", internal_key());
    const TokenResult pinned = co_await get("pinned");
    EXPECT_TRUE(assertion && pinned);
    for (int i = 0; i < 20; ++i) {
      clock_.advance(seconds(1));
      const std::string key = "caller-" + std::to_string(i);
      const TokenResult r = co_await get(key);
      EXPECT_TRUE(r.has_value());
    }
  }());
  EXPECT_NE(found("assertion"), nullptr);
  EXPECT_NE(found("pinned"), nullptr);
  EXPECT_EQ(cache_->bounded_size(), 2u);
  EXPECT_EQ(cache_->size(), 4u);
  EXPECT_NE(found("caller-19"), nullptr);
  EXPECT_NE(found("caller-18"), nullptr);
}

TEST_F(TokenCacheTest, PinningAnExistingCallerKeyTakesItOutOfTheBound) {
  CacheSettings settings;
  settings.max_entries = 1;
  make_cache(settings);
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult first = co_await get("prewarm");
    EXPECT_TRUE(first.has_value());
    cache_->pin("prewarm");
    const TokenResult other = co_await get("other");
    EXPECT_TRUE(other.has_value());
  }());
  EXPECT_NE(found("prewarm"), nullptr);
  EXPECT_NE(found("other"), nullptr);
}

TEST_F(TokenCacheTest, EachGroupIsBoundedLeastRecentlyUsedFirst) {
  CacheSettings settings;
  settings.max_entries_per_group = 2;
  make_cache(settings);
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult a1 = co_await get_as("a1", in_group("A"));
    const TokenResult a2 = co_await get_as("a2", in_group("A"));
    const TokenResult b1 = co_await get_as("b1", in_group("B"));
    EXPECT_TRUE(a1 && a2 && b1);
    EXPECT_NE(found("a1"), nullptr);  // a1 is used again: a2 is now the least recently used
    const TokenResult a3 = co_await get_as("a3", in_group("A"));
    EXPECT_TRUE(a3.has_value());
    EXPECT_EQ(found("a2"), nullptr);
    for (int i = 0; i < 10; ++i) {
      const std::string key = "flood-" + std::to_string(i);
      const TokenResult r = co_await get_as(key, in_group("A"));
      EXPECT_TRUE(r.has_value());
    }
  }());
  EXPECT_NE(found("b1"), nullptr) << "a flood in group A never evicts group B";
  EXPECT_NE(found("flood-9"), nullptr);
  EXPECT_EQ(cache_->bounded_size(), 3u);
}

TEST_F(TokenCacheTest, TheTotalBoundEvictsFromTheLargestGroup) {
  CacheSettings settings;
  settings.max_entries = 4;
  make_cache(settings);
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult b1 = co_await get_as("b1", in_group("B"));  // the oldest of all
    EXPECT_TRUE(b1.has_value());
    for (int i = 1; i <= 4; ++i) {
      clock_.advance(seconds(1));
      const std::string key = "a" + std::to_string(i);
      const TokenResult r = co_await get_as(key, in_group("A"));
      EXPECT_TRUE(r.has_value());
    }
  }());
  EXPECT_NE(found("b1"), nullptr);
  EXPECT_EQ(found("a1"), nullptr);
  EXPECT_EQ(cache_->bounded_size(), 4u);
}

TEST_F(TokenCacheTest, TheTotalBoundEvictsFailuresAnywhereBeforeValidTokens) {
  CacheSettings settings;
  settings.max_entries = 3;
  make_cache(settings);
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult a1 = co_await get_as("a1", in_group("A"));
    const TokenResult a2 = co_await get_as("a2", in_group("A"));
    next_error_ = failure(UpstreamError::Kind::permanent, "rejected");
    const TokenResult b1 = co_await get_as("b1", in_group("B"));
    next_error_.reset();
    const TokenResult a3 = co_await get_as("a3", in_group("A"));
    EXPECT_TRUE(a1 && a2 && !b1 && a3);
  }());
  EXPECT_NE(found("a1"), nullptr);
  EXPECT_NE(found("a2"), nullptr);
  EXPECT_NE(found("a3"), nullptr);
  EXPECT_EQ(cache_->bounded_size(), 3u);
}

// --- The in-flight bound
// ---------------------------------------------------------------------------------

TEST_F(TokenCacheTest, FetchesBeyondTheHostBoundQueueAndBeyondTheQueueAreToldToRetry) {
  CacheSettings settings;
  settings.fetch_bounds.max_in_flight_per_host = 2;
  settings.fetch_bounds.max_queued = 1;
  settings.fetch_bounds.max_queue_wait = std::chrono::hours(1);
  make_cache(settings);
  close_gate();
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    for (const char* key : {"k1", "k2", "k3", "k4"}) spawn_get(key, in_group("A", "entra"));
    const bool refused = co_await yield_until([&] { return results_.contains("k4"); });
    EXPECT_TRUE(refused);
    EXPECT_EQ(fetches_, 2) << "two in flight, one queued, one refused";
    EXPECT_EQ(cache_->limiter().queued(), 1u);
    if (results_.contains("k4")) {
      const TokenResult& r = results_.at("k4");
      EXPECT_FALSE(r.has_value());
      if (!r) {
        EXPECT_EQ(r.error().kind, UpstreamError::Kind::transient);
        EXPECT_EQ(http_status(r.error()), 503u);
        EXPECT_GT(r.error().retry_after_seconds, 0);
      }
    }
    open_gate();
    co_await yield_until([&] { return results_.size() == 4; });
  }());
  EXPECT_EQ(fetches_, 3);
  ASSERT_EQ(results_.size(), 4u);
  EXPECT_TRUE(results_.at("k1") && results_.at("k2") && results_.at("k3"));
  EXPECT_EQ(cache_->stats().fetches_refused, 1u);
  EXPECT_EQ(cache_->limiter().in_flight(), 0u);
  EXPECT_EQ(cache_->size(), 3u) << "a refused key leaves no entry";
}

TEST_F(TokenCacheTest, AQueuedCallerIsToldToRetryAfterMaxQueueWait) {
  CacheSettings settings;
  settings.fetch_bounds.max_in_flight = 1;
  settings.fetch_bounds.max_queue_wait = std::chrono::milliseconds(1);
  make_cache(settings);
  close_gate();
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    spawn_get("k1");
    co_await yield_until([&] { return fetches_ == 1; });
    const TokenResult queued = co_await get("k2");
    EXPECT_FALSE(queued.has_value());
    if (!queued) {
      EXPECT_GT(queued.error().retry_after_seconds, 0);
    }
    EXPECT_EQ(cache_->limiter().queued(), 0u);
    open_gate();
    co_await yield_until([&] { return results_.size() == 1; });
  }());
  EXPECT_EQ(fetches_, 1);
}

TEST_F(TokenCacheTest, OtherHostsAreNotHeldUpByAFullHost) {
  CacheSettings settings;
  settings.fetch_bounds.max_in_flight_per_host = 1;
  make_cache(settings);
  close_gate();
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    spawn_get("slow-1", in_group("A", "host-a"));
    spawn_get("slow-2", in_group("A", "host-a"));
    spawn_get("other", in_group("B", "host-b"));
    const bool started = co_await yield_until([&] { return fetches_ == 2; });
    EXPECT_TRUE(started);
    for (int i = 0; i < 50; ++i) co_await yield_once();
    EXPECT_EQ(fetches_, 2) << "slow-2 waits for host-a";
    open_gate();
    co_await yield_until([&] { return results_.size() == 3; });
  }());
  EXPECT_EQ(fetches_, 3);
}

TEST_F(TokenCacheTest, TheGlobalBoundHoldsAcrossHosts) {
  CacheSettings settings;
  settings.fetch_bounds.max_in_flight = 2;
  make_cache(settings);
  close_gate();
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    for (int i = 0; i < 5; ++i) {
      spawn_get("k" + std::to_string(i), in_group("A", "host-" + std::to_string(i)));
    }
    for (int i = 0; i < 50; ++i) co_await yield_once();
    EXPECT_EQ(fetches_, 2);
    EXPECT_EQ(cache_->limiter().queued(), 3u);
    open_gate();
    co_await yield_until([&] { return results_.size() == 5; });
  }());
  EXPECT_EQ(fetches_, 5);
  for (const auto& [key, r] : results_) EXPECT_TRUE(r.has_value()) << key;
}

TEST_F(TokenCacheTest, ABackgroundRefreshQueuesEvenWhenCallersFillTheQueue) {
  CacheSettings settings;
  settings.fetch_bounds.max_in_flight = 1;
  settings.fetch_bounds.max_queued = 0;  // callers beyond the bound are refused at once
  make_cache(settings);
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult first = co_await get("refreshed");
    EXPECT_EQ(name_of(first), "token-1");
    close_gate();
    spawn_get("caller");
    co_await yield_until([&] { return fetches_ == 2; });
    clock_.advance(kRefreshPoint);
    cache_->refresh_due();  // the refresh waits for the slot
    spawn_get("refused");
    co_await yield_until([&] { return results_.contains("refused"); });
    EXPECT_EQ(cache_->limiter().queued(), 1u);
    open_gate();
    co_await yield_until([&] { return found_name("refreshed") == "token-3"; });
  }());
  EXPECT_EQ(found_name("refreshed"), "token-3");
  ASSERT_TRUE(results_.contains("refused"));
  EXPECT_FALSE(results_.at("refused").has_value());
  EXPECT_EQ(cache_->stats().refreshes, 1u);
}

TEST_F(TokenCacheTest, AssertionFetchesAreNotBounded) {
  // A bounded token fetch waits on its assertion: bounding both could hold every slot.
  CacheSettings settings;
  settings.fetch_bounds.max_in_flight = 1;
  settings.fetch_bounds.max_queued = 0;
  make_cache(settings);
  close_gate();
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    spawn_get("token");
    spawn_get("assertion", internal_key());
    const bool both = co_await yield_until([&] { return fetches_ == 2; });
    EXPECT_TRUE(both);
    open_gate();
    co_await yield_until([&] { return results_.size() == 2; });
  }());
  EXPECT_TRUE(results_.at("token") && results_.at("assertion"));
}

TEST_F(TokenCacheTest, AnExceptionInABoundedFetchReleasesItsSlot) {
  CacheSettings settings;
  settings.fetch_bounds.max_in_flight = 1;
  settings.fetch_bounds.max_queued = 0;
  make_cache(settings);
  throw_ = true;
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult blew_up = co_await get("k1");
    EXPECT_FALSE(blew_up.has_value());
    throw_ = false;
    const TokenResult next = co_await get("k2");
    EXPECT_TRUE(next.has_value()) << "the slot was released";
  }());
  EXPECT_EQ(cache_->limiter().in_flight(), 0u);
}

// --- Memory after a burst
// ---------------------------------------------------------------------------------

TEST_F(TokenCacheTest, MemoryIsReleasedOnceWhenABurstDrains) {
  CacheSettings settings;
  settings.trim_after_fetches = 3;
  settings.trim_delay = std::chrono::milliseconds(0);
  int released = 0;
  settings.release_memory = [&released] { ++released; };
  make_cache(settings);
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    const TokenResult one = co_await get("k1");
    for (int i = 0; i < 20; ++i) co_await yield_once();
    EXPECT_EQ(released, 0) << "one fetch is no burst";
    close_gate();
    spawn_get("k2");
    spawn_get("k3");
    spawn_get("k4");
    co_await yield_until([&] { return fetches_ == 4; });
    EXPECT_EQ(released, 0) << "never while fetches are in flight";
    open_gate();
    co_await yield_until([&] { return released > 0; });
    for (int i = 0; i < 20; ++i) co_await yield_once();
  }());
  EXPECT_EQ(released, 1);
}

}  // namespace
}  // namespace ficbroker
