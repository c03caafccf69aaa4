// The broker: answers routed token queries from the cache, fetching through the sources and the
// Entra exchange on a miss. Owns the sources; borrows the HTTP client, clock, logger and metrics.
//
// Thread safety: io_context thread only.
#pragma once

#include "ficbroker/cache/token_cache.hpp"
#include "ficbroker/config/config.hpp"
#include "ficbroker/core/metrics.hpp"
#include "ficbroker/front_door/router.hpp"
#include "ficbroker/upstream/retry_policy.hpp"
#include "ficbroker/upstream/token_source.hpp"
#include "ficbroker/upstream/upstream_budget.hpp"
#include "ficbroker/util/asio.hpp"
#include "ficbroker/util/clock.hpp"
#include "ficbroker/util/log.hpp"

#include <boost/asio/steady_timer.hpp>

#include <map>
#include <memory>
#include <string>

namespace ficbroker {

class HttpClient;

class Broker {
 public:
  Broker(asio::any_io_executor executor, std::shared_ptr<const Config> config, HttpClient& client,
         const Clock& clock, Logger& log, Metrics& metrics);
  ~Broker();

  /// The cache-hit path: an answer without suspending, or nullopt when upstream work is needed.
  std::optional<Reply> try_cached(Route route, const TokenQuery& query);
  /// The full path: resolves the query's target and answers from cache or upstream.
  asio::awaitable<Reply> answer(Route route, TokenQuery query);

  /// Keeps every target's prewarm resources cached: fetches them at start and retries (1 s, 2 s
  /// … 30 s) until each is servable; the cache then refreshes them like any other key, and never
  /// drops them as idle. Runs until stop().
  asio::awaitable<void> run_prewarm();
  void stop();
  /// True when every prewarm token is cached and servable.
  bool ready() const;

  /// Replaces the configuration (SIGHUP). Cached tokens of targets whose tenant, app, source and
  /// authority are unchanged are kept; the rest are forgotten, and so are the assertions and
  /// plain tokens of every source whose minting identity changed.
  void reload(std::shared_ptr<const Config> config);

  const Config& config() const noexcept { return *config_; }
  TokenCache& cache() noexcept { return cache_; }

  /// Cache keys, exposed for tests and metrics. Parts are separated by '\x1f'.
  static std::string token_key(const TargetConfig& target, std::string_view scope);
  static std::string assertion_key(const TargetConfig& target);
  static std::string managed_identity_key(const SourceConfig& source, std::string_view resource);

 private:
  asio::awaitable<TokenResult> fetch_exchanged(TargetConfig target, std::string scope);
  asio::awaitable<TokenResult> fetch_assertion(TargetConfig target);
  asio::awaitable<TokenResult> fetch_from_source(std::string source_name, std::string resource);
  asio::awaitable<TokenResult> fetch_from_source_once(const std::string& source_name,
                                                      const std::string& resource);
  asio::awaitable<void> sleep_for(std::chrono::milliseconds delay);
  Reply token_reply(Route route, const Token& token, const TokenQuery& query,
                    std::string_view client_id) const;
  Reply error_from(Route route, const UpstreamError& error) const;
  void build_sources();
  /// Records what a minting source's identity answers for (after a fetch it may know more).
  void learn_identity(const std::string& source_name);
  /// The client id a plain token's answer names: configured, else learned from its tokens.
  std::string_view plain_client_id(const SourceConfig& source) const;

  asio::any_io_executor executor_;
  std::shared_ptr<const Config> config_;
  HttpClient& client_;
  const Clock& clock_;
  Logger& log_;
  Metrics& metrics_;
  TokenCache cache_;
  std::map<std::string, std::unique_ptr<TokenSource>> sources_;
  SourceIdentities identities_;  // what resolve_target matches selectors against
  std::vector<std::string> prewarm_keys_;
  RetryPolicy retry_;
  UpstreamBudget imds_budget_;  // IMDS: 20 requests/s and 5 concurrent per VM
  asio::steady_timer prewarm_timer_;
  bool stopped_ = false;
};

}  // namespace ficbroker
