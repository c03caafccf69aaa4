#include "ficbroker/front_door/front_door.hpp"

#include "ficbroker/core/target_resolution.hpp"
#include "ficbroker/front_door/response.hpp"

namespace ficbroker {
namespace {

std::string_view outcome_of(bool cached, const Reply& reply) {
  if (reply.status != 200) return "error";
  return cached ? "hit" : "miss";
}

}  // namespace

Reply unresolved_reply(const Unresolved& unresolved, Route route) {
  return error_reply(400, "invalid_request", unresolved.description, route);
}

Resolution resolve_target(const TokenQuery& query, Route route, const Config& config,
                          const SourceIdentities& identities) {
  Resolution out;
  const ResolveResult r = resolve_query(query, config, identities);
  if (!r) {
    out.error = unresolved_reply(r.error(), route);
    return out;
  }
  out.target = r->target;
  out.source = r->source;
  return out;
}

Reply upstream_error_reply(const UpstreamError& error, Route route) {
  return error_reply(http_status(error), error.error.empty() ? "server_error" : error.error,
                     error.description, route, error.retry_after_seconds);
}

Reply answer_reply(const BrokerAnswer& answer, const TokenQuery& query, Route route,
                   std::int64_t now_epoch) {
  if (!answer) return unresolved_reply(answer.error(), route);
  if (!answer->result) return upstream_error_reply(answer->result.error(), route);
  Reply r;
  r.body = format_token_body(*answer->result, query.resource,
                             query.selector == SelectorKind::client_id
                                 ? std::string_view(query.selector_value)
                                 : std::string_view(answer->client_id),
                             now_epoch);
  return r;
}

FrontDoor::FrontDoor(const RouterSettings& settings, Broker& broker, Metrics& metrics, Logger& log)
    : settings_(settings), broker_(broker), metrics_(metrics), log_(log) {}

Reply FrontDoor::operations_reply(Route route) const {
  Reply reply;
  switch (route) {
    case Route::healthz:
      reply.body = R"({"status":"ok"})";
      break;
    case Route::readyz:
      if (broker_.ready()) {
        reply.body = R"({"status":"ready"})";
      } else {
        reply = error_reply(503, "not_ready", "prewarm tokens are not all cached yet",
                            Route::readyz, 1);
      }
      break;
    case Route::metrics:
      reply.body = metrics_.render(broker_.cache(), broker_.ready());
      reply.content_type = "text/plain; version=0.0.4; charset=utf-8";
      break;
    default:
      // The router answers every other route itself; a new operations row needs a case here.
      reply = error_reply(404, "not_found", "no such endpoint", route);
      break;
  }
  return reply;
}

std::optional<FrontDoor::Immediate> FrontDoor::answer_now(RouteDecision& decision) {
  if (decision.reply) return Immediate{std::move(*decision.reply), false};
  if (route_kind(decision.route) == RouteKind::operations) {
    return Immediate{operations_reply(decision.route), false};
  }
  auto hit = broker_.try_cached(decision.query);
  if (!hit) return std::nullopt;
  Immediate now{answer_reply(*hit, decision.query, decision.route, broker_.clock().epoch_seconds()),
                false};
  now.cached = now.reply.status == 200;
  return now;
}

asio::awaitable<Reply> FrontDoor::serve_operations(RequestView view) {
  const auto started = std::chrono::steady_clock::now();
  RouteDecision decision = route_request(view, settings_);
  if (!decision.reply && route_kind(decision.route) != RouteKind::operations) {
    decision.reply =
        error_reply(404, "not_found", "this listener serves /metrics, /healthz and /readyz only",
                    decision.route);
  }
  Immediate now = *answer_now(decision);  // operations routes and refusals never wait
  record(decision, now.reply, false, started);
  co_return std::move(now.reply);
}

asio::awaitable<Reply> FrontDoor::serve(RequestView view) {
  const auto started = std::chrono::steady_clock::now();
  RouteDecision decision = route_request(view, settings_);
  if (decision.route == Route::metrics && settings_.metrics_listener && !decision.reply) {
    decision.reply = error_reply(404, "not_found",
                                 "/metrics is served on the metrics_listen address", Route::none);
  }
  std::optional<Immediate> now = answer_now(decision);
  if (now) {
    record(decision, now->reply, now->cached, started);
    co_return std::move(now->reply);
  }
  TokenQuery query = decision.query;  // the slow path; the original stays for the log
  BrokerAnswer answer = co_await broker_.answer(std::move(query));
  Reply reply =
      answer_reply(answer, decision.query, decision.route, broker_.clock().epoch_seconds());
  record(decision, reply, false, started);
  co_return reply;
}

void FrontDoor::record(const RouteDecision& decision, const Reply& reply, bool cached,
                       std::chrono::steady_clock::time_point started) {
  metrics_.count_request(route_name(decision.route), reply.status);
  // Probes and scrapes would drown the log; refusals (Route::none included) are logged.
  const bool quiet =
      decision.route != Route::none && route_kind(decision.route) == RouteKind::operations;
  if (quiet || !log_.enabled(LogLevel::info)) return;
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::steady_clock::now() - started)
                          .count();
  log_.info("request", {{"route", route_name(decision.route)},
                        {"status", reply.status},
                        {"latency_us", static_cast<std::int64_t>(micros)},
                        {"tenant", decision.query.tenant},
                        {"resource", decision.query.resource},
                        {"cache", outcome_of(cached, reply)}});
}

}  // namespace ficbroker
