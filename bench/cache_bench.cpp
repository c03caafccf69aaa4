// Microbenchmarks of the pieces a request goes through, built against ficbroker_core (the library
// the daemon links), so they measure the code that ships:
//
//   TokenCache::find     the cache-hit lookup, on caches of 1, 1,000 and 100,000 entries, visiting
//                        every key in a shuffled order (so large caches pay their cache misses)
//   TokenCache::get      the insert path (a fetch that completes at once, run on an io_context),
//                        and the same coroutine path on a hit for comparison
//   Broker::token_key    building the cache key of a request
//   route_request        a typical IMDS request and a typical /token request
//   format_token_body    the JSON answer, with an access token as long as the emulator's
//   parse_request        a typical IMDS request as an Azure SDK sends it
//   Metrics::render      the /metrics exposition with 10 and 10,000 cached tokens
//   hit path             parse_request + route_request + FrontDoor::answer_now (the cache
//                        lookup and the body) + the request counter:
//                        all the user-space work of a cache hit except the socket calls and the
//                        response head
//
// Run: ficbroker_cache_bench [--benchmark_filter=...] (Google Benchmark flags).
#include "ficbroker/cache/token_cache.hpp"
#include "ficbroker/config/config.hpp"
#include "ficbroker/core/broker.hpp"
#include "ficbroker/core/metrics.hpp"
#include "ficbroker/front_door/front_door.hpp"
#include "ficbroker/front_door/http_parser.hpp"
#include "ficbroker/front_door/response.hpp"
#include "ficbroker/front_door/router.hpp"
#include "ficbroker/upstream/http_client.hpp"
#include "ficbroker/util/clock.hpp"
#include "ficbroker/util/log.hpp"
#include "ficbroker/util/token.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace fb = ficbroker;
namespace asio = boost::asio;

namespace {

constexpr const char* kTenant = "22222222-2222-2222-2222-222222222222";
constexpr const char* kApp = "cccccccc-0000-0000-0000-000000000001";
// The emulator's Entra tokens are RS256 JWTs of about 1,100-1,300 characters.
constexpr std::size_t kAccessTokenLength = 1200;

fb::TargetConfig bench_target() {
  fb::TargetConfig t;
  t.tenant_id = kTenant;
  t.client_id = kApp;
  t.source = "uami";
  t.is_default = true;
  return t;
}

std::string resource_n(std::size_t i) { return "https://res-" + std::to_string(i) + ".example"; }

fb::Token make_token(const fb::Clock& clock) {
  fb::Token t;
  // Three base64url-looking parts; the content does not matter to the code measured.
  t.access_token.assign(kAccessTokenLength, 'x');
  t.access_token[36] = '.';
  t.access_token[kAccessTokenLength - 344] = '.';
  t.issued_at = clock.now();
  t.expires_at = t.issued_at + std::chrono::hours(1);
  t.expires_on = clock.epoch_seconds() + 3600;
  t.ext_expires_on = t.expires_on;
  t.not_before = clock.epoch_seconds();
  return t;
}

// A fetch that completes at once (no suspension inside the fetch itself).
asio::awaitable<fb::TokenResult> immediate(fb::Token token) { co_return token; }

fb::TokenCache::Fetch immediate_fetch(const fb::Token& token) {
  return [token] { return immediate(token); };
}

// Runs cache.get(key) to completion on `ioc`; returns whether it produced a token.
bool run_get(asio::io_context& ioc, fb::TokenCache& cache, const std::string& key,
             const fb::Token& token) {
  bool ok = false;
  asio::co_spawn(ioc, cache.get(key, immediate_fetch(token)),
                 [&ok](std::exception_ptr e, fb::TokenResult r) { ok = !e && r.has_value(); });
  ioc.restart();
  ioc.run();
  return ok;
}

fb::CacheSettings big_cache_settings() {
  fb::CacheSettings s;
  s.max_entries = 10'000'000;
  s.max_entries_per_group = 10'000'000;
  return s;
}

std::vector<std::string> make_keys(std::size_t n) {
  const fb::TargetConfig target = bench_target();
  std::vector<std::string> keys;
  keys.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    keys.push_back(fb::Broker::token_key(target, fb::resource_to_scope(resource_n(i))));
  }
  return keys;
}

// ---- TokenCache::find --------------------------------------------------------------------------

void BM_TokenCacheFindHit(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  asio::io_context ioc;
  fb::SystemClock clock;
  fb::TokenCache cache(ioc.get_executor(), clock, big_cache_settings(), [] { return 0.5; });
  const fb::Token token = make_token(clock);
  const std::vector<std::string> keys = make_keys(n);
  for (const auto& key : keys) {
    if (!run_get(ioc, cache, key, token)) {
      state.SkipWithError("populating the cache failed");
      return;
    }
  }
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::shuffle(order.begin(), order.end(), std::mt19937_64(42));
  std::size_t i = 0;
  for (auto _ : state) {
    const fb::Token* t = cache.find(keys[order[i]]);
    benchmark::DoNotOptimize(t);
    if (++i == n) i = 0;
  }
  if (cache.find(keys[0]) == nullptr) state.SkipWithError("find missed");
  state.counters["entries"] = static_cast<double>(cache.size());
}
BENCHMARK(BM_TokenCacheFindHit)->Arg(1)->Arg(1000)->Arg(100000);

void BM_TokenCacheFindMiss(benchmark::State& state) {
  asio::io_context ioc;
  fb::SystemClock clock;
  fb::TokenCache cache(ioc.get_executor(), clock, big_cache_settings(), [] { return 0.5; });
  const fb::Token token = make_token(clock);
  for (const auto& key : make_keys(1000)) run_get(ioc, cache, key, token);
  const std::string absent =
      fb::Broker::token_key(bench_target(), "https://not-cached.example/.default");
  for (auto _ : state) {
    const fb::Token* t = cache.find(absent);
    benchmark::DoNotOptimize(t);
  }
}
BENCHMARK(BM_TokenCacheFindMiss);

// ---- TokenCache::get ---------------------------------------------------------------------------

// Each iteration inserts a new key through get(): entry creation, the single-flight machinery
// (flight, waiter timer, the fetch as its own co_spawned task), the refresh schedule, and the
// io_context round trips that entails. The cache is rebuilt (untimed) every 65,536 keys.
void BM_TokenCacheGetInsert(benchmark::State& state) {
  constexpr std::size_t kPool = 65536;
  asio::io_context ioc;
  fb::SystemClock clock;
  const fb::Token token = make_token(clock);
  const std::vector<std::string> keys = make_keys(kPool);
  auto cache = std::make_unique<fb::TokenCache>(ioc.get_executor(), clock, big_cache_settings(),
                                                [] { return 0.5; });
  std::size_t i = 0;
  for (auto _ : state) {
    if (i == kPool) {
      state.PauseTiming();
      cache = std::make_unique<fb::TokenCache>(ioc.get_executor(), clock, big_cache_settings(),
                                               [] { return 0.5; });
      i = 0;
      state.ResumeTiming();
    }
    if (!run_get(ioc, *cache, keys[i], token)) {
      state.SkipWithError("get failed");
      return;
    }
    ++i;
  }
}
BENCHMARK(BM_TokenCacheGetInsert);

// get() on a key that is already cached: the coroutine path a miss-then-hit would take, to put
// the cost of find() (the path the server actually uses for hits) in perspective.
void BM_TokenCacheGetHit(benchmark::State& state) {
  asio::io_context ioc;
  fb::SystemClock clock;
  fb::TokenCache cache(ioc.get_executor(), clock, big_cache_settings(), [] { return 0.5; });
  const fb::Token token = make_token(clock);
  const std::vector<std::string> keys = make_keys(1000);
  for (const auto& key : keys) run_get(ioc, cache, key, token);
  std::size_t i = 0;
  for (auto _ : state) {
    if (!run_get(ioc, cache, keys[i], token)) {
      state.SkipWithError("get failed");
      return;
    }
    if (++i == keys.size()) i = 0;
  }
}
BENCHMARK(BM_TokenCacheGetHit);

// ---- keys, routing, formatting, parsing --------------------------------------------------------

void BM_BrokerTokenKey(benchmark::State& state) {
  const fb::TargetConfig target = bench_target();
  const std::string scope = "https://graph.microsoft.com/.default";
  for (auto _ : state) {
    std::string key = fb::Broker::token_key(target, scope);
    benchmark::DoNotOptimize(key.data());
  }
}
BENCHMARK(BM_BrokerTokenKey);

fb::RequestView imds_view() {
  fb::RequestView v;
  v.method = "GET";
  v.target =
      "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fgraph."
      "microsoft.com";
  v.host = "127.0.0.1:8181";
  v.metadata = "true";
  return v;
}

void BM_RouteRequestImds(benchmark::State& state) {
  const fb::RequestView view = imds_view();
  const fb::RouterSettings settings;
  for (auto _ : state) {
    fb::RouteDecision d = fb::route_request(view, settings);
    benchmark::DoNotOptimize(d.query.scope.data());
  }
  if (fb::route_request(view, settings).reply) state.SkipWithError("request was refused");
}
BENCHMARK(BM_RouteRequestImds);

void BM_RouteRequestBrokerToken(benchmark::State& state) {
  fb::RequestView view;
  view.method = "GET";
  view.target = "/token?resource=https://graph.microsoft.com";
  view.host = "127.0.0.1:8181";
  view.metadata = "true";
  const fb::RouterSettings settings;
  for (auto _ : state) {
    fb::RouteDecision d = fb::route_request(view, settings);
    benchmark::DoNotOptimize(d.query.scope.data());
  }
  if (fb::route_request(view, settings).reply) state.SkipWithError("request was refused");
}
BENCHMARK(BM_RouteRequestBrokerToken);

void BM_FormatTokenBody(benchmark::State& state) {
  fb::SystemClock clock;
  const fb::Token token = make_token(clock);
  const std::int64_t now = clock.epoch_seconds();
  std::size_t bytes = 0;
  for (auto _ : state) {
    std::string body = fb::format_token_body(token, "https://graph.microsoft.com", kApp, now);
    bytes = body.size();
    benchmark::DoNotOptimize(body.data());
  }
  state.counters["body_bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_FormatTokenBody);

// What Azure.Identity (Python) sends to IMDS, give or take the User-Agent.
constexpr std::string_view kTypicalRequest =
    "GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fgraph."
    "microsoft.com HTTP/1.1\r\n"
    "Host: 127.0.0.1:8181\r\n"
    "User-Agent: azsdk-python-identity/1.15.0 Python/3.11.2 (Linux-6.1.0-x86_64-with-glibc2.36)\r\n"
    "Accept-Encoding: gzip, deflate\r\n"
    "Accept: */*\r\n"
    "Connection: keep-alive\r\n"
    "Metadata: true\r\n"
    "\r\n";

void BM_ParseRequest(benchmark::State& state) {
  const fb::ParseLimits limits;
  for (auto _ : state) {
    fb::ParseResult r = fb::parse_request(kTypicalRequest, limits);
    benchmark::DoNotOptimize(r.request.total_bytes);
  }
  if (fb::parse_request(kTypicalRequest, limits).status != fb::ParseStatus::complete) {
    state.SkipWithError("parse failed");
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(kTypicalRequest.size()));
}
BENCHMARK(BM_ParseRequest);

// ---- /metrics ----------------------------------------------------------------------------------

// Rendering the exposition with N cached tokens: it writes one expiry series per cache key, on
// the io_context thread, so every request waits while it runs.
void BM_MetricsRender(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  asio::io_context ioc;
  fb::SystemClock clock;
  fb::TokenCache cache(ioc.get_executor(), clock, big_cache_settings(), [] { return 0.5; });
  const fb::Token token = make_token(clock);
  for (const auto& key : make_keys(n)) run_get(ioc, cache, key, token);
  fb::Metrics metrics;
  std::size_t bytes = 0;
  for (auto _ : state) {
    std::string text = metrics.render(cache, true);
    bytes = text.size();
    benchmark::DoNotOptimize(text.data());
  }
  state.counters["entries"] = static_cast<double>(cache.size());
  state.counters["bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_MetricsRender)->Arg(10)->Arg(10000)->Unit(benchmark::kMicrosecond);

// ---- the whole user-space hit path -------------------------------------------------------------

std::shared_ptr<const fb::Config> bench_config() {
  const std::string text = std::string(R"({
    "listen": "127.0.0.1:0",
    "log_level": "warn",
    "authority_host": "https://localhost:1",
    "sources": {"uami": {"type": "imds", "endpoint": "http://127.0.0.1:1",
                         "client_id": "aaaaaaaa-0000-0000-0000-000000000001"}},
    "targets": [{"tenant_id": ")") +
                           kTenant + R"(", "client_id": ")" + kApp +
                           R"(", "source": "uami", "default": true}]
  })";
  fb::ConfigLoad load = fb::parse_config(text);
  if (!load.config) {
    for (const auto& e : load.errors) std::fprintf(stderr, "bench config: %s\n", e.c_str());
    throw std::runtime_error("bench config rejected");
  }
  return std::make_shared<const fb::Config>(std::move(*load.config));
}

void BM_HitPathUserSpace(benchmark::State& state) {
  asio::io_context ioc;
  fb::SystemClock clock;
  fb::Logger log(fb::LogLevel::warn);
  fb::Metrics metrics;
  auto tls = fb::make_client_tls_context("");
  fb::HttpClient client(ioc.get_executor(), *tls, fb::ClientLimits{});
  auto config = bench_config();
  fb::Broker broker(ioc.get_executor(), config, client, clock, log, metrics);
  const fb::Token token = make_token(clock);
  const std::string key =
      fb::Broker::token_key(config->targets.front(), "https://graph.microsoft.com/.default");
  run_get(ioc, broker.cache(), key, token);

  fb::RouterSettings settings;
  fb::FrontDoor front_door(settings, broker, metrics, log);
  const fb::ParseLimits limits;
  std::size_t body_bytes = 0;
  for (auto _ : state) {
    fb::ParseResult parsed = fb::parse_request(kTypicalRequest, limits);
    fb::RouteDecision d = fb::route_request(parsed.request.view, settings);
    std::optional<fb::FrontDoor::Immediate> now = front_door.answer_now(d);
    if (!now || !now->cached) {
      state.SkipWithError("not a cache hit");
      return;
    }
    metrics.count_request(route_name(d.route), now->reply.status);
    body_bytes = now->reply.body.size();
    benchmark::DoNotOptimize(now->reply.body.data());
  }
  state.counters["body_bytes"] = static_cast<double>(body_bytes);
}
BENCHMARK(BM_HitPathUserSpace);

}  // namespace

BENCHMARK_MAIN();
