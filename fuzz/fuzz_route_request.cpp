// fuzz_route_request: route_request() and resolve_target() on synthetic requests.
//
// Input format (text, so that seeds are readable and the dictionary applies):
//   METHOD SP TARGET [SP anything]\n
//   Header-Name: value\n          (Host, Metadata, X-IDENTITY-HEADER, secret, X-Forwarded-For,
//   ...                            Content-Type; X-Fuzz-Settings: <digit> picks router settings)
//   \n
//   body (the rest, raw)
// Lines may end in CRLF or LF. The first occurrence of a header wins; others are ignored.
//
// Invariants: no crash or sanitizer report; every reply is a well-formed JSON error (see
// check_error_reply); a token query only comes out of a request that passed the security gates
// (Host present, no X-Forwarded-For, Metadata: true or the right secret, an allowed method); the
// query is well formed; resolve_target gives exactly one of target / source / error, and a target
// with allowed_resources only for one of them.
#include "ficbroker/config/config.hpp"
#include "ficbroker/core/target_resolution.hpp"
#include "ficbroker/front_door/front_door.hpp"
#include "ficbroker/front_door/router.hpp"
#include "ficbroker/util/encoding.hpp"
#include "ficbroker/util/token.hpp"

#include "fuzz_common.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace ficbroker::fuzz {
namespace {

// Two sources and three targets, one of them restricted by allowed_resources.
constexpr std::string_view kConfig = R"json({
  // Fixed configuration for fuzz_route_request.
  "listen": "127.0.0.1:8181",
  "identity_header": "fuzz-identity-header-0123456789",
  "allowed_hosts": ["ficbroker.svc.cluster.local", "broker.internal:8181"],
  "sources": {
    "uami": {
      "type": "imds",
      "endpoint": "http://169.254.169.254",
      "client_id": "aaaaaaaa-0000-0000-0000-000000000001",
      "object_id": "bbbbbbbb-0000-0000-0000-000000000001"
    },
    "platform": {
      "type": "app_service",
      "endpoint": "http://127.0.0.1:41741/msi/token",
      "header": "platform-identity-header",
      "resource_id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/Platform-UAMI"
    }
  },
  "targets": [
    {
      "tenant_id": "22222222-2222-2222-2222-222222222222",
      "client_id": "cccccccc-0000-0000-0000-000000000001",
      "source": "uami",
      "default": true,
      "prewarm": ["https://cognitiveservices.azure.com"]
    },
    {
      "tenant_id": "33333333-3333-3333-3333-333333333333",
      "client_id": "cccccccc-0000-0000-0000-000000000001",
      "source": "uami",
      "allowed_resources": ["https://graph.microsoft.com", "https://vault.azure.net"]
    },
    {
      "tenant_id": "contoso.onmicrosoft.com",
      "client_id": "dddddddd-0000-0000-0000-000000000002",
      "source": "platform",
      "cloud": "usgov",
    },
  ],
})json";

const Config& config() {
  static const Config cfg = [] {
    auto load =
        parse_config(kConfig, [](std::string_view) { return std::optional<std::string>{}; });
    if (!load.config) {
      for (const auto& e : load.errors) std::fprintf(stderr, "fuzz config: %s\n", e.c_str());
      std::abort();
    }
    return std::move(*load.config);
  }();
  return cfg;
}

// Router settings as the daemon derives them from the config, varied by X-Fuzz-Settings bits:
// 1 = no identity_header (App Service routes disabled), 2 = transparent, 4 = no allowed_hosts.
RouterSettings settings_for(unsigned variant) {
  const Config& cfg = config();
  RouterSettings s;
  s.identity_header = (variant & 1) ? std::string{} : cfg.identity_header;
  s.transparent = (variant & 2) != 0 || cfg.transparent;
  if ((variant & 4) == 0) s.allowed_hosts = cfg.allowed_hosts;
  return s;
}

std::string_view trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

// Takes one line off `in` (without its LF and a CR before it).
std::string_view take_line(std::string_view& in) {
  const auto lf = in.find('\n');
  std::string_view line = in.substr(0, lf);
  in = lf == std::string_view::npos ? std::string_view{} : in.substr(lf + 1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

struct Synthetic {
  RequestView view;
  unsigned variant = 0;
};

Synthetic parse_input(std::string_view in) {
  Synthetic s;
  RequestView& v = s.view;
  std::string_view line = take_line(in);
  const auto sp = line.find(' ');
  v.method = line.substr(0, sp);
  if (sp != std::string_view::npos) {
    const std::string_view rest = line.substr(sp + 1);
    v.target = rest.substr(0, rest.find(' '));
  }
  bool have_content_type = false;
  bool have_variant = false;
  while (!in.empty()) {
    line = take_line(in);
    if (line.empty()) break;
    const auto colon = line.find(':');
    const std::string_view name = line.substr(0, colon);
    const std::string_view value =
        colon == std::string_view::npos ? std::string_view{} : trim(line.substr(colon + 1));
    if (iequals(name, "host")) {
      if (!v.host) v.host = value;
    } else if (iequals(name, "metadata")) {
      if (!v.metadata) v.metadata = value;
    } else if (iequals(name, "x-identity-header")) {
      if (!v.identity_header) v.identity_header = value;
    } else if (iequals(name, "secret")) {
      if (!v.secret) v.secret = value;
    } else if (iequals(name, "x-forwarded-for") || iequals(name, "forwarded")) {
      v.forwarded = true;
    } else if (iequals(name, "content-type")) {
      if (!have_content_type) v.content_type = value;
      have_content_type = true;
    } else if (iequals(name, "x-fuzz-settings")) {
      if (!have_variant && !value.empty()) s.variant = static_cast<unsigned char>(value[0]) & 7;
      have_variant = true;
    }
  }
  v.body = in;
  return s;
}

bool is_token_route(Route r) { return r != Route::none && route_kind(r) == RouteKind::token; }

std::string describe(const RequestView& v) {
  return "method=" + printable(v.method) + " target=" + printable(v.target) +
         " host=" + (v.host ? printable(*v.host) : "(none)");
}

void check_query(const RouteDecision& d, const RequestView& v, const RouterSettings& s) {
  const std::string ctx = describe(v);
  const TokenQuery& q = d.query;
  // The security gates.
  FUZZ_CHECK("token-needs-host", v.host.has_value(), ctx);
  FUZZ_CHECK("token-refuses-forwarded", !v.forwarded, ctx);
  const bool post = v.method == "POST";
  FUZZ_CHECK("token-method",
             v.method == "GET" ||
                 (post && (d.route == Route::msi_form_post || d.route == Route::app_service_2019 ||
                           d.route == Route::app_service_2017)),
             ctx);
  switch (d.route) {
    case Route::imds_token:
    case Route::broker_token:
    case Route::msi_form_post:
      FUZZ_CHECK("token-needs-metadata", v.metadata && iequals(*v.metadata, "true"), ctx);
      break;
    case Route::app_service_2019:
      FUZZ_CHECK("token-needs-identity-header",
                 !s.identity_header.empty() && v.identity_header &&
                     *v.identity_header == s.identity_header,
                 ctx);
      break;
    case Route::app_service_2017:
      FUZZ_CHECK("token-needs-secret",
                 !s.identity_header.empty() && v.secret && *v.secret == s.identity_header, ctx);
      break;
    default:
      break;
  }
  // The query's shape.
  const std::string qctx =
      ctx + " resource=" + printable(q.resource) + " scope=" + printable(q.scope);
  FUZZ_CHECK("query-resource-nonempty", !q.resource.empty(), qctx);
  FUZZ_CHECK("query-resource-shape",
             q.resource.size() <= 1024 && q.resource.find_first_of(" \t\r\n") == std::string::npos,
             qctx);
  // Entra is asked for the resource the allowlist saw: scope = resource + "/.default", or the
  // resource itself when it already ends in "/.default".
  FUZZ_CHECK("query-scope-matches-resource",
             q.scope == q.resource + "/.default" ||
                 (q.resource.ends_with("/.default") && q.scope == q.resource),
             qctx);
  FUZZ_CHECK("query-tenant-lower", q.tenant == ascii_lower(q.tenant), qctx);
  FUZZ_CHECK(
      "query-selector",
      (q.selector == SelectorKind::none) == (q.selector_value.empty() && q.selector_name.empty()),
      qctx);
}

void check_resolution(const Resolution& r, const TokenQuery& q, Route route) {
  const Config& cfg = config();
  const std::string ctx = "resource=" + printable(q.resource) + " tenant=" + printable(q.tenant) +
                          " selector=" + printable(q.selector_value);
  const int set = (r.target != nullptr) + (r.source != nullptr) + (r.error.has_value());
  FUZZ_CHECK("resolve-exactly-one", set == 1, ctx);
  if (r.error) {
    check_error_reply(*r.error, route, "resolve_target");
    return;
  }
  if (r.target) {
    const bool inside =
        r.target >= cfg.targets.data() && r.target < cfg.targets.data() + cfg.targets.size();
    FUZZ_CHECK("resolve-target-from-config", inside, ctx);
    if (!inside) return;
    if (!q.tenant.empty()) FUZZ_CHECK("resolve-tenant", r.target->tenant_id == q.tenant, ctx);
    if (q.selector == SelectorKind::client_id) {
      FUZZ_CHECK("resolve-client-id", r.target->client_id == ascii_lower(q.selector_value), ctx);
    }
    if (!r.target->allowed_resources.empty()) {
      bool allowed = false;
      for (const auto& a : r.target->allowed_resources) allowed = allowed || a == q.resource;
      FUZZ_CHECK("resolve-allowed-resources", allowed, ctx);
    }
    const SourceConfig* source = cfg.source(r.target->source);
    FUZZ_CHECK("resolve-target-source", source != nullptr, ctx);
  }
  if (r.source) {
    FUZZ_CHECK("resolve-source-mints",
               r.source->type == SourceType::imds || r.source->type == SourceType::app_service,
               ctx);
    FUZZ_CHECK("resolve-source-needs-selector", q.selector != SelectorKind::none, ctx);
  }
}

}  // namespace
}  // namespace ficbroker::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)ficbroker::fuzz::config();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ficbroker;
  using namespace ficbroker::fuzz;
  // Views straight into libFuzzer's exactly-sized buffer: ASan sees any read past the end.
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const Synthetic s = parse_input(input);
  const RouterSettings settings = settings_for(s.variant);

  const RouteDecision d = route_request(s.view, settings);
  if (d.reply) {
    check_error_reply(*d.reply, d.route, "route_request");
    return 0;
  }
  FUZZ_CHECK("route-set", d.route != Route::none, describe(s.view));
  if (!is_token_route(d.route)) {
    FUZZ_CHECK("health-method", s.view.method == "GET" || s.view.method == "HEAD",
               describe(s.view));
    return 0;
  }
  check_query(d, s.view, settings);
  check_resolution(resolve_target(d.query, d.route, config(), configured_identities(config())),
                   d.query, d.route);
  return 0;
}
