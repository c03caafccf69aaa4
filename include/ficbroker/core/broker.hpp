// The broker: answers routed token queries from the cache, fetching through the sources and the
// Entra exchange on a miss. Owns the sources; borrows the upstream sender, clock, logger and
// metrics. What a fetch does after a failure is decided by next_step (upstream/fetch_plan.hpp).
//
// Thread safety: io_context thread only.
#pragma once

#include "ficbroker/cache/token_cache.hpp"
#include "ficbroker/config/config.hpp"
#include "ficbroker/core/metrics.hpp"
#include "ficbroker/core/target_resolution.hpp"
#include "ficbroker/core/token_query.hpp"
#include "ficbroker/upstream/fetch_plan.hpp"
#include "ficbroker/upstream/http_sender.hpp"
#include "ficbroker/upstream/retry_policy.hpp"
#include "ficbroker/upstream/token_source.hpp"
#include "ficbroker/upstream/upstream_budget.hpp"
#include "ficbroker/util/asio.hpp"
#include "ficbroker/util/clock.hpp"
#include "ficbroker/util/log.hpp"
#include "ficbroker/util/sleeper.hpp"

#include <boost/asio/steady_timer.hpp>

#include <map>
#include <memory>
#include <string>

namespace ficbroker {

/// A token for a resolved query, or why upstream gave none. Formatting it into an HTTP answer is
/// the front door's business.
struct TokenAnswer {
  TokenResult result;     // the token, or why upstream could not give one
  std::string client_id;  // the app (or the source's identity) the token is for
};
/// An unresolvable query (it names no configured target or identity) is not a token answer.
using BrokerAnswer = boost::system::result<TokenAnswer, Unresolved>;

class Broker {
 public:
  /// `upstream`, `clock`, `log` and `metrics` must outlive the broker. Retries wait through
  /// `sleeper`; without one they wait on steady_timers on `executor`.
  Broker(asio::any_io_executor executor, std::shared_ptr<const Config> config, HttpSender& upstream,
         const Clock& clock, Logger& log, Metrics& metrics,
         std::unique_ptr<Sleeper> sleeper = nullptr);
  ~Broker();

  /// The cache-hit path: an answer without suspending (a cached token, or the query is
  /// unresolvable), or nullopt when upstream work is needed.
  std::optional<BrokerAnswer> try_cached(const TokenQuery& query);
  /// The full path: resolves the query's target and answers from cache or upstream.
  asio::awaitable<BrokerAnswer> answer(TokenQuery query);

  /// Keeps every target's prewarm resources cached: fetches them at start and retries (1 s, 2 s
  /// … 30 s) until each is servable; the cache then refreshes them like any other key, and never
  /// drops them as idle. Runs until stop().
  asio::awaitable<void> run_prewarm();
  /// Ends prewarming and the refresher, and every fetch at its next retry (a retry's wait is cut
  /// short): the fetch answers with the error it last got.
  void stop();
  /// True when every prewarm token is cached and servable.
  bool ready() const;

  /// Replaces the configuration (SIGHUP). Cached tokens of targets whose tenant, app, source and
  /// authority are unchanged are kept; the rest are forgotten, and so are the assertions and
  /// plain tokens of every source whose minting identity changed.
  void reload(std::shared_ptr<const Config> config);

  const Config& config() const noexcept { return *config_; }
  const Clock& clock() const noexcept { return clock_; }
  TokenCache& cache() noexcept { return cache_; }

  /// Cache keys, exposed for tests and metrics. Parts are separated by '\x1f'.
  static std::string token_key(const TargetConfig& target, std::string_view scope);
  static std::string assertion_key(const TargetConfig& target);
  static std::string managed_identity_key(const SourceConfig& source, std::string_view resource);

 private:
  asio::awaitable<TokenResult> fetch_exchanged(TargetConfig target, std::string scope);
  asio::awaitable<TokenResult> exchange_once(const TargetConfig& target, const std::string& scope,
                                             std::string assertion);
  asio::awaitable<TokenResult> fetch_assertion(TargetConfig target);
  asio::awaitable<TokenResult> fetch_from_source(std::string source_name, std::string resource);
  asio::awaitable<TokenResult> fetch_from_source_once(const std::string& source_name,
                                                      const std::string& resource);
  asio::awaitable<FetchStep> take_step(FetchState& state, const UpstreamError& error);
  void build_sources();
  /// Records what a minting source's identity answers for (after a fetch it may know more).
  void learn_identity(const std::string& source_name);
  /// The client id a plain token's answer names: configured, else learned from its tokens.
  std::string_view plain_client_id(const SourceConfig& source) const;

  asio::any_io_executor executor_;
  std::shared_ptr<const Config> config_;
  HttpSender& upstream_;
  const Clock& clock_;
  Logger& log_;
  Metrics& metrics_;
  TokenCache cache_;
  std::map<std::string, std::shared_ptr<TokenSource>> sources_;
  SourceIdentities identities_;  // what resolve_target matches selectors against
  std::vector<std::string> prewarm_keys_;
  RetryPolicy retry_;
  std::unique_ptr<Sleeper> sleeper_;
  UpstreamBudget imds_budget_;  // IMDS: 20 requests/s and 5 concurrent per VM
  asio::steady_timer prewarm_timer_;
  bool stopped_ = false;
};

}  // namespace ficbroker
