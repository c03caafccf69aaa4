#include "ficbroker/front_door/router.hpp"

#include "ficbroker/front_door/response.hpp"
#include "ficbroker/util/encoding.hpp"
#include "ficbroker/util/token.hpp"

#include <array>

namespace ficbroker {
namespace {

constexpr std::string_view kMetadataMissing = "Required metadata header not specified";

// Normalises a raw path strictly: anything that could mean different things to different parsers
// is refused rather than interpreted (a path trick that reached the real IMDS through another
// broker was CVE-2022-23551). Repeated slashes collapse (one SDK sends `//metadata/...`) and one
// trailing slash is dropped.
std::optional<std::string> normalize_path(std::string_view path) {
  if (path.empty() || path.front() != '/') return std::nullopt;
  std::string out;
  out.reserve(path.size());
  for (char c : path) {
    if (c == '\\' || c == '%' || static_cast<unsigned char>(c) < 0x21 ||
        static_cast<unsigned char>(c) >= 0x7F) {
      return std::nullopt;
    }
    if (c == '/' && !out.empty() && out.back() == '/') continue;
    out.push_back(c);
  }
  if (out.size() > 1 && out.back() == '/') out.pop_back();
  // Dot segments: refuse any '.' or '..' segment.
  std::size_t start = 0;
  while (start < out.size()) {
    const auto next = out.find('/', start + 1);
    const auto segment = std::string_view(out).substr(start + 1, next - start - 1);
    if (segment == "." || segment == "..") return std::nullopt;
    if (next == std::string::npos) break;
    start = next;
  }
  return ascii_lower(out);
}

bool host_allowed(std::string_view host, const RouterSettings& settings) {
  std::string lower = ascii_lower(host);
  for (const auto& allowed : settings.allowed_hosts) {
    if (lower == allowed) return true;
  }
  // Strip the port: [v6]:port, v4:port, name:port.
  std::string_view name = lower;
  if (!name.empty() && name.front() == '[') {
    const auto close = name.find(']');
    if (close == std::string_view::npos) return false;
    const auto rest = name.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') return false;
    name = name.substr(1, close - 1);
  } else if (const auto colon = name.rfind(':'); colon != std::string_view::npos) {
    name = name.substr(0, colon);
  }
  if (name.empty()) return false;
  for (const auto& allowed : settings.allowed_hosts) {
    if (name == allowed) return true;
  }
  if (settings.transparent && name == "169.254.169.254") return true;
  return is_loopback(name);
}

struct Params {
  QueryParams items;
  const std::string* get(std::string_view key) const {
    for (const auto& [k, v] : items) {
      if (k == key) return &v;
    }
    return nullptr;
  }
  std::optional<std::string> duplicate() const {
    for (std::size_t i = 0; i < items.size(); ++i) {
      for (std::size_t j = i + 1; j < items.size(); ++j) {
        if (items[i].first == items[j].first) return items[i].first;
      }
    }
    return std::nullopt;
  }
};

bool api_version_at_least(std::string_view version, std::string_view minimum) {
  // Versions are dates (YYYY-MM-DD, optionally with a suffix such as -preview): lexical order works
  // once the shape is checked.
  if (version.size() < 10) return false;
  for (std::size_t i = 0; i < 10; ++i) {
    const bool dash = i == 4 || i == 7;
    if (dash ? version[i] != '-' : !std::isdigit(static_cast<unsigned char>(version[i]))) {
      return false;
    }
  }
  return version.substr(0, 10) >= minimum;
}

struct SelectorName {
  std::string_view name;
  SelectorKind kind;
};
constexpr std::array kImdsSelectors{
    SelectorName{"client_id", SelectorKind::client_id},
    SelectorName{"object_id", SelectorKind::object_id},
    SelectorName{"principal_id", SelectorKind::object_id},
    SelectorName{"msi_res_id", SelectorKind::resource_id},
    SelectorName{"mi_res_id", SelectorKind::resource_id},
};
constexpr std::array kAppServiceSelectors{
    SelectorName{"client_id", SelectorKind::client_id},
    SelectorName{"principal_id", SelectorKind::object_id},
    SelectorName{"object_id", SelectorKind::object_id},
    SelectorName{"mi_res_id", SelectorKind::resource_id},
};
constexpr std::array kLegacySelectors{
    SelectorName{"clientid", SelectorKind::client_id},
    SelectorName{"client_id", SelectorKind::client_id},
};

template <std::size_t N>
std::optional<Reply> read_selector(const Params& params, const std::array<SelectorName, N>& names,
                                   Route route, TokenQuery& query) {
  for (const auto& s : names) {
    const auto* value = params.get(s.name);
    if (!value) continue;
    if (query.selector != SelectorKind::none) {
      return error_reply(400, "invalid_request",
                         "identity selectors are mutually exclusive: give only one of " +
                             query.selector_name + " and " + std::string(s.name),
                         route);
    }
    if (value->empty()) {
      return error_reply(400, "invalid_request", std::string(s.name) + " is empty", route);
    }
    query.selector = s.kind;
    query.selector_value = *value;
    query.selector_name = std::string(s.name);
  }
  return std::nullopt;
}

RouteDecision reply(Route route, Reply r) {
  RouteDecision d;
  d.route = route;
  d.reply = std::move(r);
  return d;
}

}  // namespace

bool is_app_service_route(Route route) noexcept {
  return route == Route::app_service_2019 || route == Route::app_service_2017;
}

bool secret_equals(std::string_view a, std::string_view b) noexcept {
  // Length is not secret (it is fixed by whoever made the secret); the content is.
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

Reply error_reply(unsigned status, std::string_view error, std::string_view description,
                  Route route, int retry_after_seconds) {
  Reply r;
  r.status = status;
  r.retry_after_seconds = retry_after_seconds;
  r.body = format_error_body(status, error, description, is_app_service_route(route));
  return r;
}

RouteDecision route_request(const RequestView& request, const RouterSettings& settings) {
  const auto question = request.target.find('?');
  const auto raw_path = request.target.substr(0, question);
  const auto raw_query =
      question == std::string_view::npos ? std::string_view{} : request.target.substr(question + 1);
  const auto path = normalize_path(raw_path);
  if (!path) {
    return reply(Route::none,
                 error_reply(400, "invalid_request", "the request path is not in canonical form",
                             Route::none));
  }

  Route route = Route::none;
  if (*path == "/metadata/identity/oauth2/token") {
    route = request.method == "POST" ? Route::msi_form_post : Route::imds_token;
  } else if (*path == "/token") {
    route = Route::broker_token;
  } else if (*path == "/msi/token") {
    route = Route::app_service_2019;  // refined by api-version below
  } else if (*path == "/oauth2/token") {
    route = Route::msi_form_post;
  } else if (*path == "/healthz") {
    route = Route::healthz;
  } else if (*path == "/readyz") {
    route = Route::readyz;
  } else if (*path == "/metrics") {
    route = Route::metrics;
  } else {
    return reply(Route::none, error_reply(404, "not_found", "no such endpoint", Route::none));
  }

  if (!request.host || !host_allowed(*request.host, settings)) {
    return reply(route, error_reply(403, "forbidden",
                                    "the Host header must name a loopback address or a configured "
                                    "host",
                                    route));
  }
  if (route == Route::healthz || route == Route::readyz || route == Route::metrics) {
    if (request.method != "GET" && request.method != "HEAD") {
      return reply(route, error_reply(405, "method_not_allowed", "use GET", route));
    }
    RouteDecision d;
    d.route = route;
    return d;
  }

  const bool post = request.method == "POST";
  if (request.method != "GET" &&
      !(post && (route == Route::msi_form_post || route == Route::app_service_2019))) {
    return reply(route,
                 error_reply(405, "method_not_allowed", "this endpoint accepts GET only", route));
  }

  auto query = parse_query(raw_query);
  if (!query) {
    return reply(route, error_reply(400, "invalid_request", "malformed query string", route));
  }
  Params params{std::move(*query)};
  if (post) {
    if (!request.content_type.empty() &&
        !iequals(request.content_type.substr(0, request.content_type.find(';')),
                 "application/x-www-form-urlencoded")) {
      return reply(route, error_reply(415, "invalid_request",
                                      "the body must be application/x-www-form-urlencoded", route));
    }
    auto form = parse_query(request.body);
    if (!form) {
      return reply(route, error_reply(400, "invalid_request", "malformed form body", route));
    }
    for (auto& item : *form) params.items.push_back(std::move(item));
  }
  // The App Service path carries two protocols, told apart by api-version.
  const std::string* api_version = params.get("api-version");
  if (route == Route::app_service_2019 && api_version && *api_version == "2017-09-01") {
    route = Route::app_service_2017;
  }

  if (request.forwarded) {
    return reply(route,
                 error_reply(400, "invalid_request",
                             "requests carrying X-Forwarded-For are refused, as IMDS does", route));
  }

  switch (route) {
    case Route::imds_token:
    case Route::broker_token:
    case Route::msi_form_post:
      if (!request.metadata || !iequals(*request.metadata, "true")) {
        return reply(route, error_reply(400, "invalid_request", kMetadataMissing, route));
      }
      break;
    case Route::app_service_2019:
      if (settings.identity_header.empty()) {
        return reply(route, error_reply(404, "not_found",
                                        "the App Service endpoint is disabled: no identity_header "
                                        "is configured",
                                        route));
      }
      if (!request.identity_header ||
          !secret_equals(*request.identity_header, settings.identity_header)) {
        return reply(route, error_reply(401, "unauthorized",
                                        "X-IDENTITY-HEADER is missing or does not match", route));
      }
      break;
    case Route::app_service_2017:
      if (settings.identity_header.empty()) {
        return reply(route, error_reply(404, "not_found",
                                        "the App Service endpoint is disabled: no identity_header "
                                        "is configured",
                                        route));
      }
      if (!request.secret || !secret_equals(*request.secret, settings.identity_header)) {
        return reply(route, error_reply(401, "unauthorized",
                                        "the secret header is missing or does not match", route));
      }
      break;
    default:
      break;
  }

  if (auto dup = params.duplicate()) {
    return reply(route, error_reply(400, "invalid_request",
                                    "duplicate query parameter '" + *dup + "'", route));
  }

  if (route == Route::imds_token || route == Route::app_service_2019) {
    const std::string_view minimum = route == Route::imds_token ? "2018-02-01" : "2019-08-01";
    if (!api_version) {
      return reply(route, error_reply(400, "invalid_request",
                                      "api-version was not specified in the request", route));
    }
    if (!api_version_at_least(*api_version, minimum)) {
      return reply(route, error_reply(400, "invalid_request",
                                      "api-version '" + *api_version + "' is not supported; use " +
                                          std::string(minimum) + " or later",
                                      route));
    }
  }

  RouteDecision decision;
  decision.route = route;
  TokenQuery& q = decision.query;
  const std::string* resource = params.get("resource");
  const std::string* scope = route == Route::broker_token ? params.get("scope") : nullptr;
  if (resource && scope) {
    return reply(route,
                 error_reply(400, "invalid_request", "give resource or scope, not both", route));
  }
  if (scope) {
    if (scope->empty() || scope->find(' ') != std::string::npos) {
      return reply(route,
                   error_reply(400, "invalid_request",
                               "scope must name exactly one resource's /.default scope", route));
    }
    q.resource = scope_to_resource(*scope);
    q.scope = resource_to_scope(*scope);
    if (q.resource.empty()) {
      return reply(route, error_reply(400, "invalid_request", "scope names no resource", route));
    }
  } else if (resource && !resource->empty()) {
    q.resource = *resource;
    q.scope = resource_to_scope(*resource);
  } else {
    return reply(route,
                 error_reply(400, "invalid_request", "the resource parameter is required", route));
  }
  if (q.resource.size() > 1024 || q.resource.find_first_of(" \t\r\n") != std::string::npos) {
    return reply(route,
                 error_reply(400, "invalid_request", "resource is not a valid identifier", route));
  }
  if (const auto* tenant = params.get("tenant")) q.tenant = ascii_lower(*tenant);

  std::optional<Reply> selector_error;
  switch (route) {
    case Route::app_service_2019:
      selector_error = read_selector(params, kAppServiceSelectors, route, q);
      break;
    case Route::app_service_2017:
      selector_error = read_selector(params, kLegacySelectors, route, q);
      break;
    default:
      selector_error = read_selector(params, kImdsSelectors, route, q);
      break;
  }
  if (selector_error) return reply(route, std::move(*selector_error));
  return decision;
}

const SourceConfig* source_for_selector(SelectorKind selector, std::string_view value,
                                        const Config& config, const SourceIdentities& identities) {
  const std::string wanted = ascii_lower(value);
  if (wanted.empty()) return nullptr;
  for (const auto& [name, ids] : identities) {
    const std::string* id = selector == SelectorKind::client_id     ? &ids.client_id
                            : selector == SelectorKind::object_id   ? &ids.object_id
                            : selector == SelectorKind::resource_id ? &ids.resource_id
                                                                    : nullptr;
    if (!id || ascii_lower(*id) != wanted) continue;
    // Skips a name the config does not have (a lookup not yet rebuilt after a reload).
    if (const auto* source = config.source(name)) return source;
  }
  return nullptr;
}

Resolution resolve_target(const TokenQuery& query, Route route, const Config& config,
                          const SourceIdentities& identities) {
  Resolution r;
  const std::string value = ascii_lower(query.selector_value);
  if (!query.tenant.empty()) {
    const TargetConfig* match = nullptr;
    for (const auto& t : config.targets) {
      if (t.tenant_id != query.tenant) continue;
      if (query.selector == SelectorKind::client_id && t.client_id != value) continue;
      if (!match || t.is_default) match = &t;
    }
    if (!match) {
      std::string what = "unknown tenant '" + query.tenant + "': no target is configured for it";
      if (query.selector == SelectorKind::client_id) {
        what = "no target is configured for tenant '" + query.tenant + "' with client_id '" +
               query.selector_value + "'";
      }
      r.error = error_reply(400, "invalid_request", what, route);
      return r;
    }
    r.target = match;
  } else if (query.selector != SelectorKind::none) {
    if (query.selector == SelectorKind::client_id) {
      for (const auto& t : config.targets) {
        if (t.client_id == value && (!r.target || t.is_default)) r.target = &t;
      }
    }
    if (!r.target) {
      // A selector naming a source's own identity asks for a plain managed-identity token.
      r.source = source_for_selector(query.selector, value, config, identities);
    }
    if (!r.target && !r.source) {
      r.error = error_reply(400, "invalid_request",
                            "unknown " + query.selector_name + " '" + query.selector_value +
                                "': it names neither a target's app nor a source's identity",
                            route);
      return r;
    }
  } else {
    r.target = config.default_target();
    if (!r.target) {
      r.error = error_reply(400, "invalid_request",
                            "no default target is configured; pass tenant= or client_id=", route);
      return r;
    }
  }
  if (r.target && !r.target->allowed_resources.empty()) {
    bool allowed = false;
    for (const auto& res : r.target->allowed_resources) allowed = allowed || res == query.resource;
    if (!allowed) {
      r.error = error_reply(400, "invalid_request",
                            "resource '" + query.resource + "' is not allowed for tenant '" +
                                r.target->tenant_id + "'",
                            route);
      r.target = nullptr;
    }
  }
  return r;
}

}  // namespace ficbroker
