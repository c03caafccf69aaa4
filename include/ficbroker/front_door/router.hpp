// Request routing as a pure function: from what arrived (method, target, a few headers) to either
// an immediate answer (a 4xx, a probe's 400) or a token query. No I/O and no configuration beyond
// the settings passed in; tested and fuzzed without sockets.
//
// Every door is one row of a constexpr table (router.cpp): its path, the methods it takes, how the
// caller proves it is local, the minimum api-version, which identity selectors it reads and the
// shape of its errors. Adding a door is adding a row and its tests.
#pragma once

#include "ficbroker/core/token_query.hpp"
#include "ficbroker/front_door/request.hpp"

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ficbroker {

enum class Route {
  none,
  imds_token,        // GET /metadata/identity/oauth2/token (IMDS)
  broker_token,      // GET /token?resource=|scope=&tenant= (ficbroker's own)
  app_service_2019,  // GET /msi/token?api-version=2019-08-01 + X-IDENTITY-HEADER
  app_service_2017,  // GET /msi/token?api-version=2017-09-01 + secret header
  msi_form_post,     // POST resource=… (MSI_ENDPOINT / Cloud Shell style) + Metadata: true
  healthz,
  readyz,
  metrics,
};

/// What the front door does with a decided route.
enum class RouteKind {
  operations,  // healthz, readyz, metrics: no query, no request log line
  token,       // answers a TokenQuery from the broker
};

/// The route's label in metrics and logs ("other" for Route::none).
std::string_view route_name(Route route) noexcept;
/// Kind of a route; Route::none counts as an operations route (it never reaches the broker).
RouteKind route_kind(Route route) noexcept;
/// True for routes whose answers (errors included) use App Service's shape.
bool is_app_service_route(Route route) noexcept;

struct RouteDecision {
  Route route = Route::none;
  std::optional<Reply> reply;  // set: answer this and stop
  TokenQuery query;            // for token routes without a reply
  /// Values of a pattern row's `{placeholder}` segments, in path order (no current row has any).
  std::vector<std::pair<std::string_view, std::string>> path_params;
};

struct RouterSettings {
  std::string identity_header;  // empty: the App Service routes are disabled
  bool transparent = false;
  std::vector<std::string> allowed_hosts;  // lower case, with or without :port
  bool metrics_listener = false;           // /metrics has its own listener (metrics_listen)
};

RouteDecision route_request(const RequestView& request, const RouterSettings& settings);

/// Matches a normalised path against a row's pattern: literal segments match themselves,
/// `{x}` matches one non-empty segment, and a final `{rest}` matches one or more segments.
/// On a match, appends each placeholder's value (without braces) to `params` when given.
bool match_path_pattern(std::string_view pattern, std::string_view path,
                        std::vector<std::pair<std::string_view, std::string>>* params = nullptr);

/// The most parameters (query and form together) a request may carry.
inline constexpr std::size_t kMaxRequestParameters = 64;

/// `{"error":…,"error_description":…}`, plus `statusCode`/`message` on App Service routes.
Reply error_reply(unsigned status, std::string_view error, std::string_view description,
                  Route route, int retry_after_seconds = 0);

/// Constant-time comparison for secrets.
bool secret_equals(std::string_view a, std::string_view b) noexcept;

}  // namespace ficbroker
