// Request routing as a pure function: from what arrived (method, target, a few headers) to either
// an immediate answer (a 4xx, a probe's 400) or a token query. No I/O, no config lookups beyond
// the settings passed in; tested and fuzzed without sockets.
#pragma once

#include "ficbroker/config/config.hpp"

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
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

/// True for routes whose answers (errors included) use App Service's shape.
bool is_app_service_route(Route route) noexcept;

/// The parts of an HTTP request routing looks at. Views into the request; absent headers are
/// nullopt.
struct RequestView {
  std::string_view method;
  std::string_view target;
  std::optional<std::string_view> host;
  std::optional<std::string_view> metadata;
  std::optional<std::string_view> identity_header;  // X-IDENTITY-HEADER
  std::optional<std::string_view> secret;           // secret (App Service 2017)
  bool forwarded = false;                           // X-Forwarded-For present
  std::string_view content_type;
  std::string_view body;
};

enum class SelectorKind { none, client_id, object_id, resource_id };

struct TokenQuery {
  std::string resource;  // as the caller sent it; echoed back
  std::string scope;     // what is asked of Entra
  std::string tenant;    // optional: names a target's tenant
  SelectorKind selector = SelectorKind::none;
  std::string selector_value;
  std::string selector_name;  // the parameter the caller used, for error texts
};

/// An HTTP answer decided without I/O.
struct Reply {
  unsigned status = 200;
  std::string body;
  int retry_after_seconds = 0;  // 0: no Retry-After header
  const char* content_type = "application/json; charset=utf-8";
};

struct RouteDecision {
  Route route = Route::none;
  std::optional<Reply> reply;  // set: answer this and stop
  TokenQuery query;            // for token routes without a reply
};

struct RouterSettings {
  std::string identity_header;  // empty: the App Service routes are disabled
  bool transparent = false;
  std::vector<std::string> allowed_hosts;  // lower case, with or without :port
};

RouteDecision route_request(const RequestView& request, const RouterSettings& settings);

/// `{"error":…,"error_description":…}`, plus `statusCode`/`message` on App Service routes.
Reply error_reply(unsigned status, std::string_view error, std::string_view description,
                  Route route, int retry_after_seconds = 0);

/// Which target (or, for a selector naming a source's own identity, which source) a query goes
/// to. Exactly one of `target`/`source` is set unless `error` is.
struct Resolution {
  const TargetConfig* target = nullptr;
  const SourceConfig* source = nullptr;  // plain managed-identity token from this source
  std::optional<Reply> error;
};
/// The identity ids of each source that mints plain managed-identity tokens, by source name: the
/// configured ones and those learned from tokens (the Broker keeps it from its sources).
using SourceIdentities = std::map<std::string, IdentityIds, std::less<>>;
Resolution resolve_target(const TokenQuery& query, Route route, const Config& config,
                          const SourceIdentities& identities);
/// The source whose identity a selector names (ids compare case-insensitively), or nullptr.
const SourceConfig* source_for_selector(SelectorKind selector, std::string_view value,
                                        const Config& config, const SourceIdentities& identities);

/// Constant-time comparison for secrets.
bool secret_equals(std::string_view a, std::string_view b) noexcept;

}  // namespace ficbroker
