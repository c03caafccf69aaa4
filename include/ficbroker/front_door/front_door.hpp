// The front door: what a parsed request becomes. Routes it (router.hpp), answers the operations
// routes itself, asks the Broker for token routes and turns the Broker's domain answer into HTTP,
// then counts and logs the request. The transport (http_server.hpp) only calls serve().
//
// Thread safety: io_context thread only.
#pragma once

#include "ficbroker/core/broker.hpp"
#include "ficbroker/core/metrics.hpp"
#include "ficbroker/core/target_resolution.hpp"
#include "ficbroker/front_door/request.hpp"
#include "ficbroker/front_door/router.hpp"
#include "ficbroker/util/asio.hpp"
#include "ficbroker/util/log.hpp"

#include <cstdint>
#include <optional>

namespace ficbroker {

/// resolve_query with the error as the HTTP answer a route gives it. Exactly one of
/// `target`/`source` is set unless `error` is.
struct Resolution {
  const TargetConfig* target = nullptr;
  const SourceConfig* source = nullptr;  // plain managed-identity token from this source
  std::optional<Reply> error;
};
Resolution resolve_target(const TokenQuery& query, Route route, const Config& config,
                          const SourceIdentities& identities);

/// The answer to an unresolvable query on `route`.
Reply unresolved_reply(const Unresolved& unresolved, Route route);

/// The answer for an upstream failure: its status, OAuth error and Retry-After. The one place an
/// UpstreamError becomes HTTP.
Reply upstream_error_reply(const UpstreamError& error, Route route);

/// The HTTP answer for a broker answer, with errors in `route`'s shape (Route::none: the plain
/// OAuth shape). client_id echoes the caller's client_id selector when it gave one.
Reply answer_reply(const BrokerAnswer& answer, const TokenQuery& query, Route route,
                   std::int64_t now_epoch);

class FrontDoor {
 public:
  /// Borrows everything; `settings` may change between requests (SIGHUP).
  FrontDoor(const RouterSettings& settings, Broker& broker, Metrics& metrics, Logger& log);

  /// Answers one request: route, dispatch, count, log.
  asio::awaitable<Reply> serve(RequestView view);
  /// The metrics listener's door: the operations routes (/metrics, /healthz, /readyz) only, so a
  /// scraper's port never serves tokens.
  asio::awaitable<Reply> serve_operations(RequestView view);

  struct Immediate {
    Reply reply;
    bool cached = false;  // a token served from the cache
  };
  /// The answer when it needs no upstream work: refusals, operations routes, cache hits and
  /// unresolvable queries. nullopt: a token route that must wait for the broker.
  std::optional<Immediate> answer_now(RouteDecision& decision);

 private:
  Reply operations_reply(Route route) const;
  void record(const RouteDecision& decision, const Reply& reply, bool cached,
              std::chrono::steady_clock::time_point started);

  const RouterSettings& settings_;
  Broker& broker_;
  Metrics& metrics_;
  Logger& log_;
};

}  // namespace ficbroker
