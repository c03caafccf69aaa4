#include "ficbroker/core/broker.hpp"

#include "ficbroker/front_door/response.hpp"
#include "ficbroker/upstream/exchange.hpp"
#include "ficbroker/upstream/http_client.hpp"

#include <boost/asio/co_spawn.hpp>

#include <random>

namespace ficbroker {
namespace {

constexpr char kSep = '\x1f';

std::string_view source_kind(SourceType type) {
  switch (type) {
    case SourceType::imds:
      return "imds";
    case SourceType::app_service:
      return "app_service";
    case SourceType::workload_identity:
    case SourceType::file:
      break;
  }
  return "file";
}

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

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
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
               HttpClient& client, const Clock& clock, Logger& log, Metrics& metrics)
    : executor_(executor),
      config_(std::move(config)),
      client_(client),
      clock_(clock),
      log_(log),
      metrics_(metrics),
      cache_(executor, clock, cache_settings(*config_), make_random()),
      imds_budget_(executor, 20.0, 20, 5),
      prewarm_timer_(executor) {
  build_sources();
}

Broker::~Broker() = default;

void Broker::build_sources() {
  sources_.clear();
  for (const auto& [name, source] : config_->sources) {
    sources_.emplace(name, make_token_source(source, client_, clock_));
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
  std::string key = "m";
  key.push_back(kSep);
  key.append(source.name).push_back(kSep);
  key.append(resource);
  return key;
}

Reply Broker::token_reply(Route, const Token& token, const TokenQuery& query,
                          std::string_view client_id) const {
  Reply r;
  r.body = format_token_body(token, query.resource,
                             query.selector == SelectorKind::client_id
                                 ? std::string_view(query.selector_value)
                                 : client_id,
                             clock_.epoch_seconds());
  return r;
}

Reply Broker::error_from(Route route, const UpstreamError& error) const {
  return error_reply(static_cast<unsigned>(error.status),
                     error.error.empty() ? "server_error" : error.error, error.description, route,
                     error.retry_after_seconds);
}

std::optional<Reply> Broker::try_cached(Route route, const TokenQuery& query) {
  Resolution r = resolve_target(query, route, *config_);
  if (r.error) return std::move(r.error);
  const Token* token = nullptr;
  if (r.target) {
    token = cache_.find(token_key(*r.target, query.scope));
    if (token) return token_reply(route, *token, query, r.target->client_id);
  } else {
    token = cache_.find(managed_identity_key(*r.source, query.resource));
    if (token) return token_reply(route, *token, query, r.source->client_id);
  }
  return std::nullopt;
}

asio::awaitable<Reply> Broker::answer(Route route, TokenQuery query) {
  // The config may be replaced while this coroutine waits; keep the one it resolved against.
  const std::shared_ptr<const Config> config = config_;
  Resolution r = resolve_target(query, route, *config);
  if (r.error) co_return std::move(*r.error);
  if (r.target) {
    TargetConfig target = *r.target;
    std::string key = token_key(target, query.scope);
    // Named, not temporaries: GCC 12 can destroy temporaries of a co_await expression twice.
    TokenCache::Fetch fetch = [this, target, scope = query.scope] {
      return fetch_exchanged(target, scope);
    };
    KeyInfo info = target_key_info(target);
    auto result = co_await cache_.get(std::move(key), std::move(fetch), std::move(info));
    if (!result) co_return error_from(route, result.error());
    co_return token_reply(route, *result, query, target.client_id);
  }
  const SourceConfig source = *r.source;
  std::string key = managed_identity_key(source, query.resource);
  TokenCache::Fetch fetch = [this, name = source.name, resource = query.resource] {
    return fetch_from_source(name, resource);
  };
  KeyInfo info;
  info.group = "m" + std::string(1, kSep) + source.name;
  info.upstream = source.endpoint.host_header();
  auto result = co_await cache_.get(std::move(key), std::move(fetch), std::move(info));
  if (!result) co_return error_from(route, result.error());
  co_return token_reply(route, *result, query, source.client_id);
}

asio::awaitable<void> Broker::sleep_for(std::chrono::milliseconds delay) {
  asio::steady_timer timer(executor_, delay);
  co_await timer.async_wait(use_nothrow);
}

asio::awaitable<TokenResult> Broker::fetch_from_source_once(const std::string& source_name,
                                                            const std::string& resource) {
  const auto it = sources_.find(source_name);
  const auto* config = config_->source(source_name);
  if (it == sources_.end() || !config) {
    UpstreamError e;
    e.kind = UpstreamError::Kind::permanent;
    e.status = 400;
    e.error = "invalid_request";
    e.description = "source '" + source_name + "' is no longer configured";
    co_return e;
  }
  const bool imds = config->type == SourceType::imds;
  const std::string_view kind = source_kind(config->type);
  if (imds) co_await imds_budget_.acquire();
  const auto start = std::chrono::steady_clock::now();
  TokenResult result = co_await it->second->fetch(resource);
  if (imds) imds_budget_.release();
  metrics_.observe_upstream(kind, "", seconds_since(start), result.has_value());
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

asio::awaitable<TokenResult> Broker::fetch_from_source(std::string source_name,
                                                       std::string resource) {
  const auto started = std::chrono::steady_clock::now();
  for (int attempt = 1;; ++attempt) {
    TokenResult result = co_await fetch_from_source_once(source_name, resource);
    if (result) co_return result;
    UpstreamError e = result.error();
    const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    const auto delay =
        retry_.next_delay(Upstream::managed_identity, e, e.upstream_status, attempt, elapsed);
    if (!delay || stopped_) {
      e.description = "source '" + source_name + "' could not get a token: " + e.description;
      co_return e;
    }
    co_await sleep_for(*delay);
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

asio::awaitable<TokenResult> Broker::fetch_exchanged(TargetConfig target, std::string scope) {
  const auto started = std::chrono::steady_clock::now();
  bool fresh_assertion_tried = false;
  for (int attempt = 1;; ++attempt) {
    TokenResult assertion = co_await fetch_assertion(target);
    if (!assertion) co_return assertion.error();
    const auto start = std::chrono::steady_clock::now();
    std::string assertion_token = assertion->access_token;
    std::string scope_copy = scope;
    TokenResult result = co_await exchange_assertion(client_, target, std::move(scope_copy),
                                                     std::move(assertion_token), clock_);
    metrics_.observe_upstream("entra", target.tenant_id, seconds_since(start), result.has_value());
    if (result) {
      log_.info("token_minted", {{"tenant", target.tenant_id},
                                 {"app", target.client_id},
                                 {"scope", scope},
                                 {"token", fingerprint(result->access_token)},
                                 {"expires_on", result->expires_on}});
      co_return result;
    }
    UpstreamError e = result.error();
    metrics_.count_upstream_failure("entra", error_class(e));
    log_.warn("upstream_failure", {{"upstream", "entra"},
                                   {"tenant", target.tenant_id},
                                   {"app", target.client_id},
                                   {"scope", scope},
                                   {"status", e.upstream_status},
                                   {"error", e.error},
                                   {"aadsts", e.aadsts},
                                   {"correlation_id", e.correlation_id}});
    if (e.kind == UpstreamError::Kind::assertion_rejected) {
      // The assertion was outside its valid time (clock skew, a stale MI token): a fresh one
      // may well work — once.
      cache_.invalidate(assertion_key(target));
      if (!fresh_assertion_tried) {
        fresh_assertion_tried = true;
        continue;
      }
      e.kind = UpstreamError::Kind::permanent;
    }
    const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    const auto delay = retry_.next_delay(Upstream::entra, e, e.upstream_status, attempt, elapsed);
    if (!delay || stopped_) {
      e.description = "token exchange in tenant '" + target.tenant_id + "' for app '" +
                      target.client_id + "' failed: " + e.description;
      co_return e;
    }
    co_await sleep_for(*delay);
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
            executor_, answer(Route::broker_token, std::move(query)),
            [this, tenant = target.tenant_id, resource](std::exception_ptr e, Reply reply) {
              if (e || reply.status != 200) {
                log_.warn("prewarm_failed", {{"tenant", tenant},
                                             {"resource", resource},
                                             {"status", e ? 500u : reply.status}});
              }
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
  prewarm_timer_.cancel();
  cache_.stop();
}

bool Broker::ready() const { return cache_.all_servable(prewarm_keys_); }

void Broker::reload(std::shared_ptr<const Config> config) {
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
                    new_source &&
                    old_source->endpoint.host_header() == new_source->endpoint.host_header() &&
                    old_source->client_id == new_source->client_id &&
                    old_source->object_id == new_source->object_id &&
                    old_source->resource_id == new_source->resource_id &&
                    old_source->path == new_source->path;
      }
    }
    if (!unchanged) {
      cache_.invalidate_prefix(token_key(old_target, ""));
      cache_.invalidate(assertion_key(old_target));
    }
  }
  config_ = std::move(config);
  build_sources();
}

}  // namespace ficbroker
