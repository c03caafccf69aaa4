#include "ficbroker/core/broker.hpp"

#include "ficbroker/upstream/exchange.hpp"

#include <boost/asio/co_spawn.hpp>

#include <random>

namespace ficbroker {
namespace {

constexpr char kSep = '\x1f';

std::string_view error_class(const UpstreamError& e) {
  switch (e.kind) {
    case UpstreamError::Kind::permanent:
      return "permanent";
    case UpstreamError::Kind::throttled:
      return "throttled";
    case UpstreamError::Kind::assertion_rejected:
      return "assertion_rejected";
    case UpstreamError::Kind::transient:
      break;
  }
  return "transient";
}

double seconds_since(const Clock& clock, SteadyTime start) {
  return std::chrono::duration<double>(clock.now() - start).count();
}

// What a failed prewarm fetch says in the log: the OAuth error code, never a token.
std::string prewarm_error(const std::exception_ptr& e, const BrokerAnswer& answer) {
  if (e) return "internal_error";
  if (!answer) return "invalid_request";
  const UpstreamError& error = answer->result.error();
  return error.error.empty() ? "server_error" : error.error;
}

CacheSettings cache_settings(const Config& config) {
  CacheSettings s;
  s.policy.min_validity = config.cache.min_validity;
  s.idle_ttl = config.cache.idle_ttl;
  s.max_entries = config.cache.max_entries;
  s.max_entries_per_group = config.cache.max_entries_per_target;
  s.fetch_bounds.max_in_flight = config.cache.max_in_flight;
  s.fetch_bounds.max_in_flight_per_host = config.cache.max_in_flight_per_host;
  s.fetch_bounds.max_queued = config.cache.max_queued;
  s.fetch_bounds.max_queue_wait = config.cache.max_queue_wait;
  return s;
}

// A caller-chosen key of `target`: bounded with the target's other keys, fetched from its
// authority.
KeyInfo target_key_info(const TargetConfig& target) {
  KeyInfo info;
  info.group.append("t").push_back(kSep);
  info.group.append(target.tenant_id).push_back(kSep);
  info.group.append(target.client_id);
  info.upstream = target.authority_host.host_header();
  return info;
}

TokenCache::Random make_random() {
  auto engine = std::make_shared<std::minstd_rand>(std::random_device{}());
  return [engine] { return std::uniform_real_distribution<double>(0.0, 1.0)(*engine); };
}

}  // namespace

Broker::Broker(asio::any_io_executor executor, std::shared_ptr<const Config> config,
               HttpSender& upstream, const Clock& clock, Logger& log, Metrics& metrics,
               std::unique_ptr<Sleeper> sleeper)
    : executor_(executor),
      config_(std::move(config)),
      upstream_(upstream),
      clock_(clock),
      log_(log),
      metrics_(metrics),
      cache_(executor, clock, cache_settings(*config_), make_random()),
      sleeper_(sleeper ? std::move(sleeper) : std::make_unique<TimerSleeper>(executor)),
      imds_budget_(executor, 20.0, 20, 5),
      prewarm_timer_(executor) {
  build_sources();
}

Broker::~Broker() = default;

void Broker::build_sources() {
  sources_.clear();
  identities_.clear();
  for (const auto& [name, source] : config_->sources) {
    sources_.emplace(name, make_token_source(source, upstream_, clock_));
    learn_identity(name);
  }
  prewarm_keys_.clear();
  cache_.unpin_all();
  for (const auto& target : config_->targets) {
    for (const auto& resource : target.prewarm) {
      prewarm_keys_.push_back(token_key(target, resource_to_scope(resource)));
      cache_.pin(prewarm_keys_.back());
    }
  }
  prewarm_timer_.cancel();  // a reload re-checks at once
}

std::string Broker::token_key(const TargetConfig& target, std::string_view scope) {
  std::string key;
  key.reserve(target.tenant_id.size() + target.client_id.size() + scope.size() + 8);
  key.append("t").push_back(kSep);
  key.append(target.tenant_id).push_back(kSep);
  key.append(target.client_id).push_back(kSep);
  key.append(scope);
  return key;
}

std::string Broker::assertion_key(const TargetConfig& target) {
  std::string key = "a";
  key.push_back(kSep);
  key.append(target.source).push_back(kSep);
  key.append(target.exchange_audience);
  return key;
}

std::string Broker::managed_identity_key(const SourceConfig& source, std::string_view resource) {
  // By identity, not by source name: a source re-pointed at another identity must not find the
  // old identity's tokens. The identity is the endpoint and the one id upstream is asked with
  // (build_managed_identity_request's order); none is the endpoint's default identity.
  std::string key = "m";
  key.push_back(kSep);
  key.append(source_type_name(source.type)).push_back(' ');
  key.append(source.endpoint.scheme).append("://").append(source.endpoint.host_header());
  key.append(source.endpoint.path);
  if (!source.client_id.empty()) {
    key.append(" client_id=").append(source.client_id);
  } else if (!source.object_id.empty()) {
    key.append(" object_id=").append(source.object_id);
  } else if (!source.resource_id.empty()) {
    key.append(" resource_id=").append(source.resource_id);
  }
  key.push_back(kSep);
  key.append(resource);
  return key;
}

void Broker::learn_identity(const std::string& source_name) {
  const auto it = sources_.find(source_name);
  if (it == sources_.end() || !it->second->mints_managed_identity_tokens()) return;
  identities_.insert_or_assign(source_name, it->second->identity_ids());
}

std::string_view Broker::plain_client_id(const SourceConfig& source) const {
  const auto it = identities_.find(source.name);
  return it == identities_.end() ? std::string_view(source.client_id)
                                 : std::string_view(it->second.client_id);
}

std::optional<BrokerAnswer> Broker::try_cached(const TokenQuery& query) {
  ResolveResult r = resolve_query(query, *config_, identities_);
  if (!r) return BrokerAnswer(r.error());
  if (r->target) {
    if (const Token* token = cache_.find(token_key(*r->target, query.scope))) {
      return TokenAnswer{*token, r->target->client_id};
    }
  } else if (const Token* token = cache_.find(managed_identity_key(*r->source, query.resource))) {
    return TokenAnswer{*token, std::string(plain_client_id(*r->source))};
  }
  return std::nullopt;
}

asio::awaitable<BrokerAnswer> Broker::answer(TokenQuery query) {
  // The config may be replaced while this coroutine waits; keep the one it resolved against.
  const std::shared_ptr<const Config> config = config_;
  ResolveResult r = resolve_query(query, *config, identities_);
  if (!r) co_return r.error();
  if (r->target) {
    TargetConfig target = *r->target;
    std::string key = token_key(target, query.scope);
    // Named, not temporaries: GCC 12 can destroy temporaries of a co_await expression twice.
    TokenCache::Fetch fetch = [this, target, scope = query.scope] {
      return fetch_exchanged(target, scope);
    };
    KeyInfo info = target_key_info(target);
    TokenResult result = co_await cache_.get(std::move(key), std::move(fetch), std::move(info));
    co_return TokenAnswer{std::move(result), target.client_id};
  }
  const SourceConfig source = *r->source;
  std::string key = managed_identity_key(source, query.resource);
  TokenCache::Fetch fetch = [this, name = source.name, resource = query.resource] {
    return fetch_from_source(name, resource);
  };
  KeyInfo info;
  info.group = "m" + std::string(1, kSep) + source.name;
  info.upstream = source.endpoint.host_header();
  TokenResult result = co_await cache_.get(std::move(key), std::move(fetch), std::move(info));
  co_return TokenAnswer{std::move(result), std::string(plain_client_id(source))};
}

asio::awaitable<TokenResult> Broker::fetch_from_source_once(const std::string& source_name,
                                                            const std::string& resource) {
  const auto it = sources_.find(source_name);
  const auto* config = config_->source(source_name);
  if (it == sources_.end() || !config) {
    co_return UpstreamError::permanent("invalid_request",
                                       "source '" + source_name + "' is no longer configured");
  }
  // Held across the fetch: a reload replaces sources_ while this one may be suspended in it.
  const std::shared_ptr<TokenSource> source = it->second;
  const bool imds = source->under_imds_budget();
  const std::string_view kind = source->label();  // static storage: outlives a reload
  // Turns per identity, assertions apart from plain tokens: a caller flooding one identity with
  // plain-token requests cannot starve the assertion every target's exchange needs.
  if (imds)
    co_await imds_budget_.acquire(source_name + (is_exchange_audience(resource) ? "#a" : "#p"));
  const auto start = clock_.now();
  TokenResult result = co_await source->fetch(resource);
  if (imds) imds_budget_.release();
  if (result) learn_identity(source_name);
  metrics_.observe_upstream(kind, "", seconds_since(clock_, start));
  if (!result) {
    const UpstreamError& e = result.error();
    metrics_.count_upstream_failure(kind, error_class(e));
    log_.warn("upstream_failure", {{"upstream", kind},
                                   {"source", source_name},
                                   {"resource", resource},
                                   {"status", e.upstream_status},
                                   {"error", e.error},
                                   {"description", e.description}});
  }
  co_return result;
}

asio::awaitable<FetchStep> Broker::take_step(FetchState& state, const UpstreamError& error) {
  FetchStep step = next_step(state, error, clock_.now(), stopped_, retry_);
  if (step.action == FetchStep::Action::wait) {
    co_await sleeper_->sleep_for(step.delay);
    // stop() cut the wait short: the fetch ends here instead of calling upstream again.
    if (stopped_) step = next_step(state, error, clock_.now(), true, retry_);
  }
  co_return step;
}

asio::awaitable<TokenResult> Broker::fetch_from_source(std::string source_name,
                                                       std::string resource) {
  FetchState state = FetchState::for_source(source_name, clock_.now());
  for (;;) {
    TokenResult result = co_await fetch_from_source_once(source_name, resource);
    if (result) co_return result;
    FetchStep step = co_await take_step(state, result.error());
    if (step.action == FetchStep::Action::give_up) co_return std::move(step.error);
  }
}

asio::awaitable<TokenResult> Broker::fetch_assertion(TargetConfig target) {
  const auto it = sources_.find(target.source);
  if (it != sources_.end() && !it->second->cacheable()) {
    co_return co_await fetch_from_source(target.source, target.exchange_audience);
  }
  std::string key = assertion_key(target);
  TokenCache::Fetch fetch = [this, name = target.source, audience = target.exchange_audience] {
    return fetch_from_source(name, audience);
  };
  KeyInfo info;
  info.internal = true;  // one per configured source and audience
  co_return co_await cache_.get(std::move(key), std::move(fetch), std::move(info));
}

asio::awaitable<TokenResult> Broker::exchange_once(const TargetConfig& target,
                                                   const std::string& scope,
                                                   std::string assertion) {
  const auto start = clock_.now();
  std::string scope_copy = scope;
  TokenResult result = co_await exchange_assertion(upstream_, target, std::move(scope_copy),
                                                   std::move(assertion), clock_);
  metrics_.observe_upstream("entra", target.tenant_id, seconds_since(clock_, start));
  if (result) {
    log_.info("token_minted", {{"tenant", target.tenant_id},
                               {"app", target.client_id},
                               {"scope", scope},
                               {"token", fingerprint(result->access_token)},
                               {"expires_on", result->expires_on}});
    co_return result;
  }
  const UpstreamError& e = result.error();
  metrics_.count_upstream_failure("entra", error_class(e));
  log_.warn("upstream_failure", {{"upstream", "entra"},
                                 {"tenant", target.tenant_id},
                                 {"app", target.client_id},
                                 {"scope", scope},
                                 {"status", e.upstream_status},
                                 {"error", e.error},
                                 {"aadsts", e.aadsts},
                                 {"correlation_id", e.correlation_id}});
  co_return result;
}

asio::awaitable<TokenResult> Broker::fetch_exchanged(TargetConfig target, std::string scope) {
  FetchState state = FetchState::for_exchange(target.tenant_id, target.client_id, clock_.now());
  for (;;) {
    TokenResult assertion = co_await fetch_assertion(target);
    if (!assertion) co_return assertion.error();
    std::string assertion_token = assertion->access_token;
    TokenResult result = co_await exchange_once(target, scope, std::move(assertion_token));
    if (result) co_return result;
    FetchStep step = co_await take_step(state, result.error());
    if (step.forget_assertion) cache_.invalidate(assertion_key(target));
    if (step.action == FetchStep::Action::give_up) co_return std::move(step.error);
  }
}

asio::awaitable<void> Broker::run_prewarm() {
  std::chrono::seconds backoff{1};
  while (!stopped_) {
    bool all_ready = true;
    const std::shared_ptr<const Config> config = config_;
    for (const auto& target : config->targets) {
      for (const auto& resource : target.prewarm) {
        if (cache_.all_servable({token_key(target, resource_to_scope(resource))})) continue;
        all_ready = false;
        TokenQuery query;
        query.resource = resource;
        query.scope = resource_to_scope(resource);
        query.tenant = target.tenant_id;
        query.selector = SelectorKind::client_id;
        query.selector_value = target.client_id;
        query.selector_name = "client_id";
        // Joins the in-flight fetch if one is running; the cache keeps it single.
        asio::co_spawn(
            executor_, answer(std::move(query)),
            [this, tenant = target.tenant_id, resource](std::exception_ptr e, BrokerAnswer answer) {
              if (!e && answer && answer->result) return;
              log_.warn("prewarm_failed", {{"tenant", tenant},
                                           {"resource", resource},
                                           {"error", prewarm_error(e, answer)}});
            });
      }
    }
    backoff =
        all_ready ? std::chrono::seconds(30) : std::min(backoff * 2, std::chrono::seconds(30));
    prewarm_timer_.expires_after(all_ready ? std::chrono::seconds(30) : backoff / 2);
    co_await prewarm_timer_.async_wait(use_nothrow);
  }
}

void Broker::stop() {
  stopped_ = true;
  sleeper_->wake_all();
  prewarm_timer_.cancel();
  cache_.stop();
}

bool Broker::ready() const { return cache_.all_servable(prewarm_keys_); }

void Broker::reload(std::shared_ptr<const Config> config) {
  // A source whose minting identity changed (or that is gone) must serve nothing it cached:
  // its assertions (keyed by source name) and its plain tokens (keyed by identity) go.
  SourceIdentities kept;  // what unchanged sources learned stays known
  for (const auto& [name, old_source] : config_->sources) {
    const auto* new_source = config->source(name);
    if (new_source && same_minting_identity(old_source, *new_source)) {
      if (const auto it = identities_.find(name); it != identities_.end()) kept.insert(*it);
      continue;
    }
    std::string assertions = "a";
    assertions.push_back(kSep);
    assertions.append(name).push_back(kSep);
    cache_.invalidate_prefix(assertions);
    cache_.invalidate_prefix(managed_identity_key(old_source, ""));
  }
  // Tokens are keyed by tenant, app and scope. A target whose source, authority or exchange
  // audience changed would otherwise keep serving tokens minted the old way: forget those.
  for (const auto& old_target : config_->targets) {
    bool unchanged = false;
    for (const auto& t : config->targets) {
      if (t.tenant_id == old_target.tenant_id && t.client_id == old_target.client_id) {
        const auto* old_source = config_->source(old_target.source);
        const auto* new_source = config->source(t.source);
        unchanged = t.source == old_target.source &&
                    t.authority_host.host_header() == old_target.authority_host.host_header() &&
                    t.authority_host.scheme == old_target.authority_host.scheme &&
                    t.exchange_audience == old_target.exchange_audience && old_source &&
                    new_source && same_minting_identity(*old_source, *new_source);
      }
    }
    if (!unchanged) {
      cache_.invalidate_prefix(token_key(old_target, ""));
      cache_.invalidate(assertion_key(old_target));
    }
  }
  config_ = std::move(config);
  build_sources();
  for (auto& [name, ids] : kept) {
    if (identities_.contains(name)) identities_.insert_or_assign(name, std::move(ids));
  }
}

}  // namespace ficbroker
