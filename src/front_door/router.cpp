#include "ficbroker/front_door/router.hpp"

#include "ficbroker/front_door/response.hpp"
#include "ficbroker/util/encoding.hpp"
#include "ficbroker/util/token.hpp"
#include "ficbroker/util/url.hpp"

#include <algorithm>
#include <array>
#include <numeric>
#include <span>

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

// Methods a row accepts, as bits.
constexpr unsigned kGet = 1;
constexpr unsigned kHead = 2;
constexpr unsigned kPost = 4;

unsigned method_bit(std::string_view method) {
  // Methods are case-sensitive (RFC 9110): "get" is not GET and gets a 405.
  if (method == "GET") return kGet;
  if (method == "HEAD") return kHead;
  if (method == "POST") return kPost;
  return 0;
}

/// How a caller shows it is a local process that may have a token.
enum class CallerAuth {
  none,
  metadata,         // `Metadata: true` (IMDS; a browser cannot send it cross-origin)
  identity_header,  // X-IDENTITY-HEADER equal to the configured identity_header
  secret_2017,      // App Service 2017-09-01: `secret` equal to the configured identity_header
};

/// Which identity-selector parameters a route reads (each protocol names them differently).
enum class Selectors { none, imds, app_service, legacy };

struct RouteSpec {
  std::string_view path;  // normalised (lower case); may hold `{x}` segments and a `{rest}` tail
  Route route;
  std::string_view name;  // metrics and log label
  RouteKind kind;
  unsigned methods;
  CallerAuth auth;
  std::string_view min_api_version;  // empty: api-version is not required
  // Non-empty: this row stands in for the same path's row when api-version equals this (one path
  // carrying two protocols); such rows are never matched by path alone.
  std::string_view selected_by_api_version;
  Selectors selectors;
  bool accepts_scope;       // scope= as an alternative to resource=
  bool app_service_errors;  // errors add App Service's statusCode/message
};

// clang-format off
constexpr std::array kRoutes{
    //        path                               route                    name                kind                   methods       auth                         min version   selected by   selectors               scope  App Service errors
    RouteSpec{"/metadata/identity/oauth2/token", Route::imds_token,       "imds",             RouteKind::token,      kGet,         CallerAuth::metadata,        "2018-02-01", "",           Selectors::imds,        false, false},
    RouteSpec{"/metadata/identity/oauth2/token", Route::msi_form_post,    "msi_post",         RouteKind::token,      kPost,        CallerAuth::metadata,        "",           "",           Selectors::imds,        false, false},
    RouteSpec{"/token",                          Route::broker_token,     "token",            RouteKind::token,      kGet,         CallerAuth::metadata,        "",           "",           Selectors::imds,        true,  false},
    RouteSpec{"/msi/token",                      Route::app_service_2019, "app_service",      RouteKind::token,      kGet | kPost, CallerAuth::identity_header, "2019-08-01", "",           Selectors::app_service, false, true},
    RouteSpec{"/msi/token",                      Route::app_service_2017, "app_service_2017", RouteKind::token,      kGet | kPost, CallerAuth::secret_2017,     "",           "2017-09-01", Selectors::legacy,      false, true},
    RouteSpec{"/oauth2/token",                   Route::msi_form_post,    "msi_post",         RouteKind::token,      kGet | kPost, CallerAuth::metadata,        "",           "",           Selectors::imds,        false, false},
    RouteSpec{"/healthz",                        Route::healthz,          "healthz",          RouteKind::operations, kGet | kHead, CallerAuth::none,            "",           "",           Selectors::none,        false, false},
    RouteSpec{"/readyz",                         Route::readyz,           "readyz",           RouteKind::operations, kGet | kHead, CallerAuth::none,            "",           "",           Selectors::none,        false, false},
    RouteSpec{"/metrics",                        Route::metrics,          "metrics",          RouteKind::operations, kGet | kHead, CallerAuth::none,            "",           "",           Selectors::none,        false, false},
};
// clang-format on

const RouteSpec* spec_of(Route route) noexcept {
  for (const auto& spec : kRoutes) {
    if (spec.route == route) return &spec;
  }
  return nullptr;
}

using PathParams = std::vector<std::pair<std::string_view, std::string>>;

// The row for a path: the first whose methods include the request's, else the path's first row
// (which then answers 405). Rows selected by api-version are left to select_variant.
const RouteSpec* find_route(std::string_view path, std::string_view method, PathParams& params) {
  const unsigned bit = method_bit(method);
  const RouteSpec* found = nullptr;
  for (const auto& spec : kRoutes) {
    if (!spec.selected_by_api_version.empty() || !match_path_pattern(spec.path, path)) continue;
    if (!found) found = &spec;
    if (spec.methods & bit) {
      found = &spec;
      break;
    }
  }
  if (found) match_path_pattern(found->path, path, &params);
  return found;
}

const RouteSpec& select_variant(const RouteSpec& spec, std::string_view method,
                                const std::string* api_version) {
  if (!api_version) return spec;
  for (const auto& variant : kRoutes) {
    if (!variant.selected_by_api_version.empty() && variant.path == spec.path &&
        variant.selected_by_api_version == *api_version && (variant.methods & method_bit(method))) {
      return variant;
    }
  }
  return spec;
}

// The index of the first parameter whose key appears again later, in O(n log n): a stable sort
// of indices by key keeps each key's first occurrence at the front of its run.
std::optional<std::size_t> first_duplicate(const QueryParams& items) {
  std::vector<std::size_t> order(items.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&items](std::size_t a, std::size_t b) {
    return items[a].first < items[b].first;
  });
  std::optional<std::size_t> first;
  for (std::size_t i = 1; i < order.size(); ++i) {
    if (items[order[i]].first != items[order[i - 1]].first) continue;
    if (!first || order[i - 1] < *first) first = order[i - 1];
  }
  return first;
}

struct Params {
  QueryParams items;
  const std::string* get(std::string_view key) const {
    for (const auto& [k, v] : items) {
      if (k == key) return &v;
    }
    return nullptr;
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

std::span<const SelectorName> selectors_of(Selectors selectors) {
  switch (selectors) {
    case Selectors::imds:
      return kImdsSelectors;
    case Selectors::app_service:
      return kAppServiceSelectors;
    case Selectors::legacy:
      return kLegacySelectors;
    case Selectors::none:
      break;
  }
  return {};
}

std::optional<Reply> read_selector(const Params& params, const RouteSpec& spec, TokenQuery& query) {
  for (const auto& s : selectors_of(spec.selectors)) {
    const auto* value = params.get(s.name);
    if (!value) continue;
    if (query.selector != SelectorKind::none) {
      return error_reply(400, "invalid_request",
                         "identity selectors are mutually exclusive: give only one of " +
                             query.selector_name + " and " + std::string(s.name),
                         spec.route);
    }
    if (value->empty()) {
      return error_reply(400, "invalid_request", std::string(s.name) + " is empty", spec.route);
    }
    query.selector = s.kind;
    query.selector_value = *value;
    query.selector_name = std::string(s.name);
  }
  return std::nullopt;
}

std::optional<Reply> check_host(const RequestView& request, const RouterSettings& settings,
                                Route route) {
  if (request.host && host_allowed(*request.host, settings)) return std::nullopt;
  return error_reply(403, "forbidden",
                     "the Host header must name a loopback address or a configured host", route);
}

std::optional<Reply> check_method(const RequestView& request, const RouteSpec& spec) {
  if (spec.methods & method_bit(request.method)) return std::nullopt;
  return error_reply(
      405, "method_not_allowed",
      spec.kind == RouteKind::operations ? "use GET" : "this endpoint accepts GET only",
      spec.route);
}

// The query string, plus a POST's form body: one parameter list, as IMDS reads them.
std::optional<Reply> read_params(const RequestView& request, std::string_view raw_query,
                                 Route route, Params& params) {
  auto query = parse_query(raw_query);
  if (!query) return error_reply(400, "invalid_request", "malformed query string", route);
  params.items = std::move(*query);
  if (request.method != "POST") return std::nullopt;
  if (!request.content_type.empty() &&
      !iequals(request.content_type.substr(0, request.content_type.find(';')),
               "application/x-www-form-urlencoded")) {
    return error_reply(415, "invalid_request", "the body must be application/x-www-form-urlencoded",
                       route);
  }
  auto form = parse_query(request.body);
  if (!form) return error_reply(400, "invalid_request", "malformed form body", route);
  for (auto& item : *form) params.items.push_back(std::move(item));
  return std::nullopt;
}

std::optional<Reply> check_shared_secret(const std::optional<std::string_view>& sent,
                                         const RouterSettings& settings, Route route,
                                         std::string_view mismatch) {
  if (settings.identity_header.empty()) {
    return error_reply(404, "not_found",
                       "the App Service endpoint is disabled: no identity_header is configured",
                       route);
  }
  if (!sent || !secret_equals(*sent, settings.identity_header)) {
    return error_reply(401, "unauthorized", mismatch, route);
  }
  return std::nullopt;
}

std::optional<Reply> check_auth(const RequestView& request, const RouterSettings& settings,
                                const RouteSpec& spec) {
  switch (spec.auth) {
    case CallerAuth::metadata:
      if (request.metadata && iequals(*request.metadata, "true")) return std::nullopt;
      return error_reply(400, "invalid_request", kMetadataMissing, spec.route);
    case CallerAuth::identity_header:
      return check_shared_secret(request.identity_header, settings, spec.route,
                                 "X-IDENTITY-HEADER is missing or does not match");
    case CallerAuth::secret_2017:
      return check_shared_secret(request.secret, settings, spec.route,
                                 "the secret header is missing or does not match");
    case CallerAuth::none:
      break;
  }
  return std::nullopt;
}

// Checked after authentication, so that an unauthenticated caller learns nothing more.
std::optional<Reply> check_params(const Params& params, Route route) {
  if (params.items.size() > kMaxRequestParameters) {
    return error_reply(
        400, "invalid_request",
        "too many parameters: at most " + std::to_string(kMaxRequestParameters) + " are accepted",
        route);
  }
  if (const auto dup = first_duplicate(params.items)) {
    return error_reply(400, "invalid_request",
                       "duplicate query parameter '" + params.items[*dup].first + "'", route);
  }
  return std::nullopt;
}

std::optional<Reply> check_api_version(const RouteSpec& spec, const std::string* api_version) {
  if (spec.min_api_version.empty()) return std::nullopt;
  if (!api_version) {
    return error_reply(400, "invalid_request", "api-version was not specified in the request",
                       spec.route);
  }
  if (!api_version_at_least(*api_version, spec.min_api_version)) {
    return error_reply(400, "invalid_request",
                       "api-version '" + *api_version + "' is not supported; use " +
                           std::string(spec.min_api_version) + " or later",
                       spec.route);
  }
  return std::nullopt;
}

std::optional<Reply> read_resource(const Params& params, const RouteSpec& spec, TokenQuery& q) {
  const Route route = spec.route;
  const std::string* resource = params.get("resource");
  const std::string* scope = spec.accepts_scope ? params.get("scope") : nullptr;
  if (resource && scope) {
    return error_reply(400, "invalid_request", "give resource or scope, not both", route);
  }
  if (scope) {
    if (scope->empty() || scope->find(' ') != std::string::npos) {
      return error_reply(400, "invalid_request",
                         "scope must name exactly one resource's /.default scope", route);
    }
    q.resource = scope_to_resource(*scope);
    q.scope = resource_to_scope(*scope);
    if (q.resource.empty()) {
      return error_reply(400, "invalid_request", "scope names no resource", route);
    }
  } else if (resource && !resource->empty()) {
    q.resource = *resource;
    q.scope = resource_to_scope(*resource);
  } else {
    return error_reply(400, "invalid_request", "the resource parameter is required", route);
  }
  if (q.resource.size() > 1024 || q.resource.find_first_of(" \t\r\n") != std::string::npos) {
    return error_reply(400, "invalid_request", "resource is not a valid identifier", route);
  }
  if (const auto* tenant = params.get("tenant")) q.tenant = ascii_lower(*tenant);
  return std::nullopt;
}

RouteDecision reply(Route route, Reply r) {
  RouteDecision d;
  d.route = route;
  d.reply = std::move(r);
  return d;
}

}  // namespace

std::string_view route_name(Route route) noexcept {
  const RouteSpec* spec = spec_of(route);
  return spec ? spec->name : "other";
}

RouteKind route_kind(Route route) noexcept {
  const RouteSpec* spec = spec_of(route);
  return spec ? spec->kind : RouteKind::operations;
}

bool is_app_service_route(Route route) noexcept {
  const RouteSpec* spec = spec_of(route);
  return spec && spec->app_service_errors;
}

bool match_path_pattern(std::string_view pattern, std::string_view path, PathParams* params) {
  PathParams found;
  while (!pattern.empty()) {
    if (path.empty() || pattern.front() != '/' || path.front() != '/') return false;
    pattern.remove_prefix(1);
    path.remove_prefix(1);
    const auto literal = pattern.substr(0, pattern.find('/'));
    pattern.remove_prefix(literal.size());
    const bool placeholder = literal.size() > 2 && literal.front() == '{' && literal.back() == '}';
    const bool rest = placeholder && literal == "{rest}" && pattern.empty();
    const auto segment = rest ? path : path.substr(0, path.find('/'));
    if (placeholder ? segment.empty() : segment != literal) return false;
    if (placeholder) found.emplace_back(literal.substr(1, literal.size() - 2), segment);
    path.remove_prefix(segment.size());
  }
  if (!path.empty()) return false;
  if (params) std::move(found.begin(), found.end(), std::back_inserter(*params));
  return true;
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
  const auto raw_query =
      question == std::string_view::npos ? std::string_view{} : request.target.substr(question + 1);
  const auto path = normalize_path(request.target.substr(0, question));
  if (!path) {
    return reply(Route::none,
                 error_reply(400, "invalid_request", "the request path is not in canonical form",
                             Route::none));
  }
  RouteDecision decision;
  const RouteSpec* spec = find_route(*path, request.method, decision.path_params);
  if (!spec) {
    return reply(Route::none, error_reply(404, "not_found", "no such endpoint", Route::none));
  }
  decision.route = spec->route;
  if (auto refused = check_host(request, settings, spec->route)) {
    return reply(spec->route, std::move(*refused));
  }
  if (auto refused = check_method(request, *spec)) return reply(spec->route, std::move(*refused));
  if (spec->kind == RouteKind::operations) return decision;

  Params params;
  if (auto refused = read_params(request, raw_query, spec->route, params)) {
    return reply(spec->route, std::move(*refused));
  }
  const std::string* api_version = params.get("api-version");
  spec = &select_variant(*spec, request.method, api_version);
  decision.route = spec->route;
  if (request.forwarded) {
    return reply(
        spec->route,
        error_reply(400, "invalid_request",
                    "requests carrying X-Forwarded-For are refused, as IMDS does", spec->route));
  }
  auto refused = check_auth(request, settings, *spec);
  if (!refused) refused = check_params(params, spec->route);
  if (!refused) refused = check_api_version(*spec, api_version);
  if (!refused) refused = read_resource(params, *spec, decision.query);
  if (!refused) refused = read_selector(params, *spec, decision.query);
  if (refused) return reply(spec->route, std::move(*refused));
  return decision;
}

}  // namespace ficbroker
