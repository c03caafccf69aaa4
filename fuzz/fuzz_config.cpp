// fuzz_config: parse_config() on arbitrary text (JSON with comments and trailing commas).
//
// Invariants: no crash or sanitizer report; exactly one of `config` and a non-empty `errors`; every
// error and warning is a non-empty "key: what" line; an accepted config is internally consistent
// (targets name existing sources, at most one default, ids normalised, upstream URLs https or
// loopback/link-local http, the identity header secret long enough) and routes a plain request.
//
// Note: identity_header_file and ca_file name files that parse_config opens. run.sh runs the
// fuzzers with stdin from /dev/null so that a path such as /dev/stdin cannot block.
#include "ficbroker/config/config.hpp"
#include "ficbroker/core/target_resolution.hpp"
#include "ficbroker/front_door/front_door.hpp"
#include "ficbroker/front_door/router.hpp"
#include "ficbroker/util/encoding.hpp"
#include "ficbroker/util/url.hpp"

#include "fuzz_common.hpp"

#include <cstddef>
#include <cstdint>
#include <string>

namespace ficbroker::fuzz {
namespace {

// A fixed fake environment: what App Service and AKS workload identity would set.
std::optional<std::string> fake_env(std::string_view name) {
  if (name == "IDENTITY_ENDPOINT") return std::string("http://127.0.0.1:41741/msi/token");
  if (name == "IDENTITY_HEADER") return std::string("853b9a84-5bfa-4b22-a3f3-0b9a43d9ad8a");
  if (name == "AZURE_FEDERATED_TOKEN_FILE") {
    return std::string("/var/run/secrets/azure/tokens/azure-identity-token");
  }
  return std::nullopt;
}

bool is_lower(std::string_view s) { return ascii_lower(s) == s; }

void check_url(const Url& url, const std::string& ctx) {
  FUZZ_CHECK("config-url-scheme", url.scheme == "https" || url.scheme == "http", ctx);
  FUZZ_CHECK("config-url-plain-http", url.is_https() || is_loopback_or_link_local(url.host),
             ctx + " host=" + printable(url.host));
  FUZZ_CHECK("config-url-host", !url.host.empty() && is_lower(url.host), ctx);
  FUZZ_CHECK("config-url-port", url.port != 0, ctx);
  FUZZ_CHECK("config-url-path", !url.path.empty() && url.path.front() == '/', ctx);
  (void)url.host_header();
}

void check_config(const Config& cfg) {
  FUZZ_CHECK("config-sources", !cfg.sources.empty(), "no sources");
  FUZZ_CHECK("config-targets", !cfg.targets.empty(), "no targets");
  FUZZ_CHECK("config-listen", !cfg.listen_host.empty(), "empty listen host");
  if (!cfg.allow_remote) {
    FUZZ_CHECK("config-listen-loopback", is_loopback(cfg.listen_host),
               "listen host " + printable(cfg.listen_host));
  }
  FUZZ_CHECK("config-identity-header",
             cfg.identity_header.empty() || cfg.identity_header.size() >= 16,
             "identity_header of " + std::to_string(cfg.identity_header.size()) + " bytes");
  for (const auto& h : cfg.allowed_hosts) {
    FUZZ_CHECK("config-allowed-hosts", !h.empty() && is_lower(h), printable(h));
  }
  check_url(cfg.authority_host, "authority_host");
  for (const auto& [name, source] : cfg.sources) {
    const std::string ctx = "sources." + printable(name);
    FUZZ_CHECK("config-source-name", source.name == name, ctx);
    switch (source.type) {
      case SourceType::imds:
        check_url(source.endpoint, ctx + ".endpoint");
        FUZZ_CHECK("config-imds-path", source.endpoint.path == "/", ctx);
        break;
      case SourceType::app_service:
        check_url(source.endpoint, ctx + ".endpoint");
        FUZZ_CHECK("config-app-service-header", !source.header.empty(), ctx);
        break;
      case SourceType::workload_identity:
      case SourceType::file:
        FUZZ_CHECK("config-source-path", !source.path.empty(), ctx);
        break;
    }
  }
  int defaults = 0;
  for (std::size_t i = 0; i < cfg.targets.size(); ++i) {
    const auto& t = cfg.targets[i];
    const std::string ctx = "targets[" + std::to_string(i) + "]";
    FUZZ_CHECK("config-target-source", cfg.source(t.source) != nullptr, ctx);
    FUZZ_CHECK("config-target-ids",
               !t.tenant_id.empty() && is_lower(t.tenant_id) && t.client_id.size() == 36 &&
                   is_lower(t.client_id),
               ctx);
    FUZZ_CHECK("config-target-audience", !t.exchange_audience.empty(), ctx);
    check_url(t.authority_host, ctx + ".authority_host");
    FUZZ_CHECK("config-target-authority-path", t.authority_host.path == "/", ctx);
    for (const auto& r : t.allowed_resources)
      FUZZ_CHECK("config-allowed-resources", !r.empty(), ctx);
    for (const auto& r : t.prewarm) FUZZ_CHECK("config-prewarm", !r.empty(), ctx);
    for (std::size_t j = 0; j < i; ++j) {
      FUZZ_CHECK("config-target-unique",
                 cfg.targets[j].tenant_id != t.tenant_id || cfg.targets[j].client_id != t.client_id,
                 ctx);
    }
    defaults += t.is_default;
  }
  FUZZ_CHECK("config-one-default", defaults <= 1, std::to_string(defaults) + " defaults");
  const TargetConfig* def = cfg.default_target();
  if (defaults == 1 || cfg.targets.size() == 1) {
    FUZZ_CHECK("config-default-target", def != nullptr, "no default target");
  }

  // The accepted config drives the router as the daemon would.
  RouterSettings settings;
  settings.identity_header = cfg.identity_header;
  settings.transparent = cfg.transparent;
  settings.allowed_hosts = cfg.allowed_hosts;
  RequestView view;
  view.method = "GET";
  view.target =
      "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net";
  view.host = "127.0.0.1:8181";
  view.metadata = "true";
  const RouteDecision d = route_request(view, settings);
  FUZZ_CHECK("config-routes-plain-request", !d.reply && d.route == Route::imds_token,
             d.reply ? d.reply->body : std::string("wrong route"));
  const Resolution r = resolve_target(d.query, d.route, cfg, configured_identities(cfg));
  const int set = (r.target != nullptr) + (r.source != nullptr) + r.error.has_value();
  FUZZ_CHECK("config-resolve-exactly-one", set == 1, "resolve_target");
  if (r.error) check_error_reply(*r.error, d.route, "resolve_target");
  FUZZ_CHECK("config-resolve-default", (r.target == def) || r.error.has_value(), "default");
}

}  // namespace
}  // namespace ficbroker::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ficbroker;
  using namespace ficbroker::fuzz;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const ConfigLoad load = parse_config(text, EnvLookup(fake_env));
  FUZZ_CHECK("config-xor-errors", load.config.has_value() != !load.errors.empty(),
             std::string(load.config ? "config and " : "no config and ") +
                 std::to_string(load.errors.size()) + " errors");
  for (const auto& e : load.errors) {
    FUZZ_CHECK("config-error-text", !e.empty() && e.find(": ") != std::string::npos, printable(e));
  }
  for (const auto& w : load.warnings) {
    FUZZ_CHECK("config-warning-text", !w.empty() && w.find(": ") != std::string::npos,
               printable(w));
  }
  if (load.config) check_config(*load.config);
  return 0;
}
