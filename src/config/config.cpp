#include "ficbroker/config/config.hpp"

#include "ficbroker/util/encoding.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <sys/stat.h>
#include <tuple>
#include <vector>

namespace ficbroker {
namespace json = boost::json;

namespace {

class Validator {
 public:
  explicit Validator(ConfigLoad& load) : load_(load) {}

  void error(const std::string& key, const std::string& what) {
    load_.errors.push_back(key + ": " + what);
  }
  void warning(const std::string& key, const std::string& what) {
    load_.warnings.push_back(key + ": " + what);
  }

  void reject_unknown(const json::object& obj, const std::string& prefix,
                      std::initializer_list<std::string_view> known) {
    reject_unknown(obj, prefix, std::vector<std::string_view>(known));
  }
  void reject_unknown(const json::object& obj, const std::string& prefix,
                      const std::vector<std::string_view>& known) {
    for (const auto& kv : obj) {
      bool found = false;
      for (auto k : known) found = found || kv.key() == k;
      if (!found) error(prefix + std::string(kv.key()), "unknown key");
    }
  }

  std::optional<std::string> string_at(const json::object& obj, std::string_view key,
                                       const std::string& path) {
    const auto* v = obj.if_contains(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) {
      error(path, "must be a string");
      return std::nullopt;
    }
    return std::string(v->get_string());
  }

  std::optional<bool> bool_at(const json::object& obj, std::string_view key,
                              const std::string& path) {
    const auto* v = obj.if_contains(key);
    if (!v) return std::nullopt;
    if (!v->is_bool()) {
      error(path, "must be true or false");
      return std::nullopt;
    }
    return v->get_bool();
  }

  std::optional<std::int64_t> int_at(const json::object& obj, std::string_view key,
                                     const std::string& path, std::int64_t min, std::int64_t max) {
    const auto* v = obj.if_contains(key);
    if (!v) return std::nullopt;
    std::int64_t n = 0;
    if (v->is_int64()) {
      n = v->get_int64();
    } else if (v->is_uint64() && v->get_uint64() <= static_cast<std::uint64_t>(max)) {
      n = static_cast<std::int64_t>(v->get_uint64());
    } else {
      error(path, "must be an integer");
      return std::nullopt;
    }
    if (n < min || n > max) {
      error(path, "must be between " + std::to_string(min) + " and " + std::to_string(max));
      return std::nullopt;
    }
    return n;
  }

  std::vector<std::string> strings_at(const json::object& obj, std::string_view key,
                                      const std::string& path) {
    std::vector<std::string> out;
    const auto* v = obj.if_contains(key);
    if (!v) return out;
    if (!v->is_array()) {
      error(path, "must be an array of strings");
      return out;
    }
    for (std::size_t i = 0; i < v->get_array().size(); ++i) {
      const auto& item = v->get_array()[i];
      if (!item.is_string() || item.get_string().empty()) {
        error(path + "[" + std::to_string(i) + "]", "must be a non-empty string");
        continue;
      }
      out.emplace_back(item.get_string());
    }
    return out;
  }

  /// An upstream URL: https anywhere, plain http only to loopback or link-local hosts.
  std::optional<Url> upstream_url(const std::string& text, const std::string& path,
                                  bool allow_path) {
    auto url = parse_url(text);
    if (!url) {
      error(path, "'" + text + "' is not an http(s) URL of the form scheme://host[:port][/path]");
      return std::nullopt;
    }
    if (!url->is_https() && !is_loopback_or_link_local(url->host)) {
      error(path, "plain http is only allowed to loopback or link-local hosts; use https for '" +
                      url->host + "'");
      return std::nullopt;
    }
    if (!allow_path && url->path != "/") {
      error(path, "must not have a path (got '" + url->path + "')");
      return std::nullopt;
    }
    return url;
  }

 private:
  ConfigLoad& load_;
};

bool is_guid(std::string_view s) {
  if (s.size() != 36) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!std::isxdigit(static_cast<unsigned char>(c))) {
      return false;
    }
  }
  return true;
}

bool is_tenant(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  for (char c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') return false;
  }
  return true;
}

bool parse_listen(std::string_view text, std::string& host, std::uint16_t& port) {
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return false;
    }
    host = std::string(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return false;
    host = std::string(text.substr(0, colon));
    port_text = text.substr(colon + 1);
    if (host.find(':') != std::string::npos) return false;  // IPv6 needs brackets: "[::1]:80"
  }
  unsigned value = 0;
  const auto [ptr, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
  if (ec != std::errc{} || ptr != port_text.data() + port_text.size() || value > 65535 ||
      host.empty()) {
    return false;
  }
  port = static_cast<std::uint16_t>(value);
  return true;
}

bool readable_by_others(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && (st.st_mode & (S_IROTH | S_IWOTH)) != 0;
}

std::optional<std::string> read_small_file(const std::string& path, std::size_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::string data;
  data.resize(limit + 1);
  in.read(data.data(), static_cast<std::streamsize>(data.size()));
  data.resize(static_cast<std::size_t>(in.gcount()));
  if (data.size() > limit) return std::nullopt;
  return data;
}

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  std::size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

// What a source type's parse function reads from: the source's JSON object and its key prefix.
struct SourceInput {
  Validator& v;
  const json::object& obj;
  const std::string& prefix;
  const EnvLookup& env;

  std::optional<std::string> string(std::string_view key) {
    return v.string_at(obj, key, prefix + "." + std::string(key));
  }
};

void parse_endpoint(SourceInput& in, std::optional<std::string> fallback, bool allow_path,
                    SourceConfig& source) {
  auto endpoint = in.string("endpoint");
  if (!endpoint) endpoint = std::move(fallback);
  if (!endpoint) {
    in.v.error(in.prefix + ".endpoint", "missing, and IDENTITY_ENDPOINT is not set");
  } else if (auto url = in.v.upstream_url(*endpoint, in.prefix + ".endpoint", allow_path)) {
    source.endpoint = *url;
  }
}

void parse_identity_ids(SourceInput& in, SourceConfig& source) {
  // All three may be given: callers can then select the identity by any of them. Upstream is
  // asked with one (client_id, else object_id, else resource_id).
  for (auto [key, field] :
       {std::pair{"client_id", &source.client_id}, std::pair{"object_id", &source.object_id},
        std::pair{"resource_id", &source.resource_id}}) {
    if (auto s = in.string(key)) {
      if (s->empty()) {
        in.v.error(in.prefix + "." + key, "must not be empty");
      } else {
        *field = *s;
      }
    }
  }
}

void parse_token_path(SourceInput& in, std::optional<std::string> fallback,
                      std::string_view missing, SourceConfig& source) {
  auto path = in.string("path");
  if (!path) path = std::move(fallback);
  if (!path || path->empty()) {
    in.v.error(in.prefix + ".path", std::string(missing));
  } else {
    source.path = *path;
  }
}

void parse_passthrough(SourceInput& in, SourceConfig& source) {
  if (!in.obj.contains("passthrough_resources")) return;
  source.passthrough_resources =
      in.v.strings_at(in.obj, "passthrough_resources", in.prefix + ".passthrough_resources");
}

void parse_imds(SourceInput& in, SourceConfig& source) {
  parse_endpoint(in, "http://169.254.169.254", false, source);
  parse_identity_ids(in, source);
  parse_passthrough(in, source);
}

void parse_app_service(SourceInput& in, SourceConfig& source) {
  parse_endpoint(in, in.env("IDENTITY_ENDPOINT"), true, source);
  auto header = in.string("header");
  if (!header) header = in.env("IDENTITY_HEADER");
  if (!header || header->empty()) {
    in.v.error(in.prefix + ".header", "missing, and IDENTITY_HEADER is not set");
  } else {
    source.header = *header;
  }
  parse_identity_ids(in, source);
  parse_passthrough(in, source);
}

void parse_workload_identity(SourceInput& in, SourceConfig& source) {
  parse_token_path(in, in.env("AZURE_FEDERATED_TOKEN_FILE"),
                   "missing, and AZURE_FEDERATED_TOKEN_FILE is not set", source);
}

void parse_file(SourceInput& in, SourceConfig& source) {
  parse_token_path(in, std::nullopt, "missing", source);
}

// One row per source type: adding a type means adding a row (and its TokenSource).
struct SourceTypeSpec {
  std::string_view name;
  SourceType type;
  std::vector<std::string_view> keys;  // every key the type accepts
  void (*parse)(SourceInput&, SourceConfig&);
};

const std::vector<SourceTypeSpec>& source_types() {
  static const std::vector<SourceTypeSpec> specs{
      {"imds",
       SourceType::imds,
       {"type", "endpoint", "client_id", "object_id", "resource_id", "passthrough_resources"},
       parse_imds},
      {"app_service",
       SourceType::app_service,
       {"type", "endpoint", "header", "client_id", "object_id", "resource_id",
        "passthrough_resources"},
       parse_app_service},
      {"workload_identity",
       SourceType::workload_identity,
       {"type", "path"},
       parse_workload_identity},
      {"file", SourceType::file, {"type", "path"}, parse_file},
  };
  return specs;
}

const SourceTypeSpec* find_source_type(std::string_view name) {
  for (const auto& spec : source_types()) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

void parse_source(Validator& v, const std::string& name, const json::value& value,
                  const EnvLookup& env, Config& config) {
  const std::string prefix = "sources." + name;
  if (!value.is_object()) {
    v.error(prefix, "must be an object");
    return;
  }
  const auto& obj = value.get_object();
  const auto type = v.string_at(obj, "type", prefix + ".type");
  if (!type) {
    if (!obj.contains("type")) {
      v.error(prefix + ".type", "missing; one of imds, app_service, workload_identity, file");
    }
    return;
  }
  const SourceTypeSpec* spec = find_source_type(*type);
  if (!spec) {
    v.error(prefix + ".type",
            "'" + *type + "' is not one of imds, app_service, workload_identity, file");
    return;
  }
  v.reject_unknown(obj, prefix + ".", spec->keys);
  SourceConfig source;
  source.name = name;
  source.type = spec->type;
  SourceInput in{v, obj, prefix, env};
  spec->parse(in, source);
  config.sources.emplace(name, std::move(source));
}

void parse_target(Validator& v, std::size_t index, const json::value& value, Config& config,
                  const std::optional<Url>& global_authority) {
  const std::string prefix = "targets[" + std::to_string(index) + "]";
  if (!value.is_object()) {
    v.error(prefix, "must be an object");
    return;
  }
  const auto& obj = value.get_object();
  v.reject_unknown(obj, prefix + ".",
                   {"tenant_id", "client_id", "source", "default", "cloud", "authority_host",
                    "exchange_audience", "prewarm", "allowed_resources"});
  TargetConfig target;
  bool ok = true;
  if (auto s = v.string_at(obj, "tenant_id", prefix + ".tenant_id")) {
    if (!is_tenant(*s)) {
      v.error(prefix + ".tenant_id", "'" + *s + "' is not a tenant id (GUID) or domain");
      ok = false;
    }
    target.tenant_id = ascii_lower(*s);
  } else {
    if (!obj.contains("tenant_id")) v.error(prefix + ".tenant_id", "missing");
    ok = false;
  }
  if (auto s = v.string_at(obj, "client_id", prefix + ".client_id")) {
    if (!is_guid(*s)) {
      v.error(prefix + ".client_id", "'" + *s + "' is not an application (client) id GUID");
      ok = false;
    }
    target.client_id = ascii_lower(*s);
  } else {
    if (!obj.contains("client_id")) v.error(prefix + ".client_id", "missing");
    ok = false;
  }
  if (auto s = v.string_at(obj, "source", prefix + ".source")) {
    target.source = *s;
    if (!config.sources.contains(*s)) {
      v.error(prefix + ".source", "'" + *s + "' is not a key of sources");
      ok = false;
    }
  } else if (config.sources.size() == 1) {
    target.source = config.sources.begin()->first;
  } else {
    if (!obj.contains("source")) {
      v.error(prefix + ".source", "missing (required when there is more than one source)");
    }
    ok = false;
  }
  target.is_default = v.bool_at(obj, "default", prefix + ".default").value_or(false);
  if (auto cloud = v.string_at(obj, "cloud", prefix + ".cloud")) {
    if (*cloud == "public") {
      target.cloud = Cloud::public_cloud;
    } else if (*cloud == "usgov") {
      target.cloud = Cloud::usgov;
    } else if (*cloud == "china") {
      target.cloud = Cloud::china;
    } else {
      v.error(prefix + ".cloud", "'" + *cloud + "' is not one of public, usgov, china");
      ok = false;
    }
  }
  target.exchange_audience = std::string(exchange_audience_for(target.cloud));
  if (auto s = v.string_at(obj, "exchange_audience", prefix + ".exchange_audience")) {
    target.exchange_audience = *s;
  }
  if (auto s = v.string_at(obj, "authority_host", prefix + ".authority_host")) {
    if (auto url = v.upstream_url(*s, prefix + ".authority_host", false)) {
      target.authority_host = *url;
    } else {
      ok = false;
    }
  } else if (global_authority && !obj.contains("cloud")) {
    target.authority_host = *global_authority;
  } else {
    target.authority_host = *parse_url(authority_host_for(target.cloud));
  }
  target.prewarm = v.strings_at(obj, "prewarm", prefix + ".prewarm");
  target.allowed_resources = v.strings_at(obj, "allowed_resources", prefix + ".allowed_resources");
  if (ok) config.targets.push_back(std::move(target));
}

}  // namespace

const TargetConfig* Config::default_target() const {
  for (const auto& t : targets) {
    if (t.is_default) return &t;
  }
  return targets.size() == 1 ? &targets.front() : nullptr;
}

std::string_view source_type_name(SourceType type) {
  for (const auto& spec : source_types()) {
    if (spec.type == type) return spec.name;
  }
  return "unknown";
}

namespace {

// Every member of SourceConfig, by a structured binding: adding a member stops this compiling
// until it is listed here, so a new field cannot be silently left out of the comparison.
auto minting_fields(const SourceConfig& s) {
  const auto& [name, type, endpoint, header, client_id, object_id, resource_id, path,
               passthrough_resources] = s;
  // A label and a policy: neither changes whom the source mints for (the policy is checked at
  // every request, so a cached token is never served past a tightened list).
  (void)name;
  (void)passthrough_resources;
  return std::tie(type, endpoint, header, client_id, object_id, resource_id, path);
}

}  // namespace

bool same_minting_identity(const SourceConfig& a, const SourceConfig& b) {
  return minting_fields(a) == minting_fields(b);
}

const SourceConfig* Config::source(std::string_view name) const {
  const auto it = sources.find(std::string(name));
  return it == sources.end() ? nullptr : &it->second;
}

EnvLookup process_env() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* value = std::getenv(std::string(name).c_str());
    if (!value) return std::nullopt;
    return std::string(value);
  };
}

std::string_view exchange_audience_for(Cloud cloud) {
  switch (cloud) {
    case Cloud::usgov:
      return "api://AzureADTokenExchangeUSGov";
    case Cloud::china:
      return "api://AzureADTokenExchangeChina";
    case Cloud::public_cloud:
      break;
  }
  return "api://AzureADTokenExchange";
}

std::string_view authority_host_for(Cloud cloud) {
  switch (cloud) {
    case Cloud::usgov:
      return "https://login.microsoftonline.us";
    case Cloud::china:
      return "https://login.chinacloudapi.cn";
    case Cloud::public_cloud:
      break;
  }
  return "https://login.microsoftonline.com";
}

namespace {

void parse_listener(Validator& v, const json::object& obj, Config& config) {
  config.allow_remote = v.bool_at(obj, "allow_remote", "allow_remote").value_or(false);
  const auto* listen = obj.if_contains("listen");
  if (listen && listen->is_null()) {
    // Only the Unix socket: its uid allow-list is then the one way in.
    config.listen_tcp = false;
    return;
  }
  auto text = v.string_at(obj, "listen", "listen");
  if (!text) return;
  auto address = parse_listen_address(*text);
  if (!address) {
    v.error("listen", "'" + *text + "' is not host:port (IPv6 as [addr]:port), or null");
  } else if (!config.allow_remote && !is_loopback(address->host)) {
    v.error("listen", "'" + address->host +
                          "' is not a loopback address; set \"allow_remote\": true to expose "
                          "tokens beyond this host");
  } else {
    config.listen_host = address->host;
    config.listen_port = address->port;
  }
}

void parse_metrics_listen(Validator& v, const json::object& obj, Config& config) {
  auto text = v.string_at(obj, "metrics_listen", "metrics_listen");
  if (!text) return;
  auto address = parse_listen_address(*text);
  if (!address) {
    v.error("metrics_listen", "'" + *text + "' is not host:port (IPv6 as [addr]:port)");
  } else if (!config.allow_remote && !is_loopback(address->host)) {
    v.error("metrics_listen", "'" + address->host +
                                  "' is not a loopback address; set \"allow_remote\": true to "
                                  "expose metrics beyond this host");
  } else {
    config.metrics_host = address->host;
    config.metrics_port = address->port;
  }
}

void parse_identity_header(Validator& v, const json::object& obj, Config& config) {
  const auto header = v.string_at(obj, "identity_header", "identity_header");
  const auto header_file = v.string_at(obj, "identity_header_file", "identity_header_file");
  if (header && header_file) {
    v.error("identity_header", "give identity_header or identity_header_file, not both");
    return;
  }
  if (header) {
    config.identity_header = *header;
  } else if (header_file) {
    config.identity_header_file = *header_file;
    auto secret = read_small_file(*header_file, 4096);
    if (!secret) {
      v.error("identity_header_file", "cannot read '" + *header_file + "' (or larger than 4 KiB)");
      return;
    }
    config.identity_header = trim(*secret);
    if (readable_by_others(*header_file)) {
      v.warning("identity_header_file", "'" + *header_file + "' is readable by other users");
    }
  } else {
    return;
  }
  if (config.identity_header.size() < 16) {
    v.error(header ? "identity_header" : "identity_header_file",
            "the secret must be at least 16 characters");
  }
}

const json::object* section(Validator& v, const json::object& obj, std::string_view key) {
  const auto* value = obj.if_contains(key);
  if (!value) return nullptr;
  if (!value->is_object()) {
    v.error(std::string(key), "must be an object");
    return nullptr;
  }
  return &value->get_object();
}

void parse_cache(Validator& v, const json::object& obj, Config& config) {
  const auto* c = section(v, obj, "cache");
  if (!c) return;
  v.reject_unknown(
      *c, "cache.",
      {"min_validity_seconds", "idle_ttl_seconds", "max_entries", "max_entries_per_target",
       "max_in_flight", "max_in_flight_per_host", "max_queued", "max_queue_wait_ms"});
  auto& cache = config.cache;
  if (auto n = v.int_at(*c, "min_validity_seconds", "cache.min_validity_seconds", 0, 3600)) {
    cache.min_validity = std::chrono::seconds(*n);
  }
  if (auto n = v.int_at(*c, "idle_ttl_seconds", "cache.idle_ttl_seconds", 1, 30 * 86400)) {
    cache.idle_ttl = std::chrono::seconds(*n);
  }
  auto count = [&](std::string_view key, std::int64_t min, std::int64_t max, std::size_t& out) {
    if (auto n = v.int_at(*c, key, "cache." + std::string(key), min, max)) {
      out = static_cast<std::size_t>(*n);
    }
  };
  count("max_entries", 1, 10'000'000, cache.max_entries);
  count("max_entries_per_target", 1, 10'000'000, cache.max_entries_per_target);
  count("max_in_flight", 1, 10'000, cache.max_in_flight);
  count("max_in_flight_per_host", 1, 10'000, cache.max_in_flight_per_host);
  count("max_queued", 0, 100'000, cache.max_queued);
  if (auto n = v.int_at(*c, "max_queue_wait_ms", "cache.max_queue_wait_ms", 0, 60'000)) {
    cache.max_queue_wait = std::chrono::milliseconds(*n);
  }
}

void parse_server(Validator& v, const json::object& obj, Config& config) {
  const auto* s = section(v, obj, "server");
  if (!s) return;
  v.reject_unknown(*s, "server.",
                   {"max_connections", "header_timeout_ms", "idle_timeout_ms", "write_timeout_ms"});
  if (auto n = v.int_at(*s, "max_connections", "server.max_connections", 1, 1'000'000)) {
    config.server.max_connections = static_cast<std::size_t>(*n);
  }
  constexpr std::int64_t kHour = 3'600'000;
  if (auto n = v.int_at(*s, "header_timeout_ms", "server.header_timeout_ms", 10, kHour)) {
    config.server.header_timeout = std::chrono::milliseconds(*n);
  }
  if (auto n = v.int_at(*s, "idle_timeout_ms", "server.idle_timeout_ms", 10, kHour)) {
    config.server.idle_timeout = std::chrono::milliseconds(*n);
  }
  if (auto n = v.int_at(*s, "write_timeout_ms", "server.write_timeout_ms", 10, kHour)) {
    config.server.write_timeout = std::chrono::milliseconds(*n);
  }
}

void parse_unix_socket(Validator& v, const json::object& obj, Config& config) {
  const auto* u = section(v, obj, "unix_socket");
  if (!u) {
    if (!config.listen_tcp) v.error("listen", "null turns TCP off; it needs a unix_socket");
    return;
  }
  v.reject_unknown(*u, "unix_socket.", {"path", "allowed_uids"});
  if (auto p = v.string_at(*u, "path", "unix_socket.path")) config.unix_socket.path = *p;
  if (config.unix_socket.path.empty()) v.error("unix_socket.path", "missing");
  const auto* uids = u->if_contains("allowed_uids");
  if (!uids) return;
  if (!uids->is_array()) {
    v.error("unix_socket.allowed_uids", "must be an array of user ids");
    return;
  }
  for (std::size_t i = 0; i < uids->get_array().size(); ++i) {
    const auto& uid = uids->get_array()[i];
    if (uid.is_int64() && uid.get_int64() >= 0 && uid.get_int64() <= 0xFFFFFFFF) {
      config.unix_socket.allowed_uids.push_back(static_cast<std::uint32_t>(uid.get_int64()));
    } else {
      v.error("unix_socket.allowed_uids[" + std::to_string(i) + "]", "must be a user id");
    }
  }
}

void parse_sources(Validator& v, const json::object& obj, const EnvLookup& env, Config& config) {
  const auto* sources = obj.if_contains("sources");
  if (!sources) {
    v.error("sources", "missing; at least one source of assertions is required");
  } else if (!sources->is_object() || sources->get_object().empty()) {
    v.error("sources", "must be a non-empty object of named sources");
  } else {
    for (const auto& kv : sources->get_object()) {
      parse_source(v, std::string(kv.key()), kv.value(), env, config);
    }
  }
}

void parse_targets(Validator& v, const json::object& obj, Config& config,
                   const std::optional<Url>& global_authority) {
  const auto* targets = obj.if_contains("targets");
  if (!targets) {
    v.error("targets", "missing; at least one target is required");
    return;
  }
  if (!targets->is_array() || targets->get_array().empty()) {
    v.error("targets", "must be a non-empty array");
    return;
  }
  const auto& arr = targets->get_array();
  for (std::size_t i = 0; i < arr.size(); ++i) {
    parse_target(v, i, arr[i], config, global_authority);
  }
  std::set<std::pair<std::string, std::string>> seen;
  int defaults = 0;
  for (const auto& t : config.targets) {
    if (!seen.emplace(t.tenant_id, t.client_id).second) {
      v.error("targets", "tenant " + t.tenant_id + " with app " + t.client_id + " appears twice");
    }
    if (t.is_default) ++defaults;
  }
  if (defaults > 1) v.error("targets", "more than one target has \"default\": true");
}

void parse_globals(Validator& v, const json::object& obj, Config& config,
                   std::optional<Url>& global_authority) {
  config.transparent = v.bool_at(obj, "transparent", "transparent").value_or(false);
  config.allowed_hosts = v.strings_at(obj, "allowed_hosts", "allowed_hosts");
  for (auto& h : config.allowed_hosts) h = ascii_lower(h);
  if (auto s = v.string_at(obj, "authority_host", "authority_host")) {
    global_authority = v.upstream_url(*s, "authority_host", false);
  }
  config.authority_host =
      global_authority.value_or(*parse_url("https://login.microsoftonline.com"));
  if (auto s = v.string_at(obj, "ca_file", "ca_file"); s && !s->empty()) {
    std::ifstream probe(*s);
    if (!probe) v.error("ca_file", "cannot read '" + *s + "'");
    config.ca_file = *s;
  }
  if (auto level = v.string_at(obj, "log_level", "log_level")) {
    if (*level != "debug" && *level != "info" && *level != "warn" && *level != "error") {
      v.error("log_level", "'" + *level + "' is not one of debug, info, warn, error");
    } else {
      config.log_level = *level;
    }
  }
}

}  // namespace

std::optional<ListenAddress> parse_listen_address(std::string_view text) {
  ListenAddress address;
  if (!parse_listen(text, address.host, address.port)) return std::nullopt;
  return address;
}

ConfigLoad parse_config(std::string_view text, const EnvLookup& env) {
  ConfigLoad load;
  Validator v(load);
  json::parse_options options;
  options.allow_comments = true;
  options.allow_trailing_commas = true;
  boost::system::error_code ec;
  json::value root = json::parse(text, ec, {}, options);
  if (ec) {
    v.error("(document)", "not valid JSON: " + ec.message());
    return load;
  }
  if (!root.is_object()) {
    v.error("(document)", "must be a JSON object");
    return load;
  }
  const auto& obj = root.get_object();
  v.reject_unknown(obj, "",
                   {"listen", "metrics_listen", "allow_remote", "allowed_hosts", "transparent",
                    "authority_host", "ca_file", "identity_header", "identity_header_file",
                    "log_level", "cache", "server", "unix_socket", "sources", "targets"});
  Config config;
  std::optional<Url> global_authority;
  parse_listener(v, obj, config);
  parse_metrics_listen(v, obj, config);
  parse_globals(v, obj, config, global_authority);
  parse_identity_header(v, obj, config);
  parse_cache(v, obj, config);
  parse_server(v, obj, config);
  parse_unix_socket(v, obj, config);
  parse_sources(v, obj, env, config);
  parse_targets(v, obj, config, global_authority);
  if (load.errors.empty()) load.config = std::move(config);
  return load;
}

std::vector<std::string> keys_needing_restart(const Config& running, const Config& fresh) {
  std::vector<std::string> keys;
  if (running.listen_tcp != fresh.listen_tcp || running.listen_host != fresh.listen_host ||
      running.listen_port != fresh.listen_port || running.allow_remote != fresh.allow_remote) {
    keys.emplace_back("listen");
  }
  if (running.metrics_host != fresh.metrics_host || running.metrics_port != fresh.metrics_port) {
    keys.emplace_back("metrics_listen");
  }
  if (running.unix_socket != fresh.unix_socket) keys.emplace_back("unix_socket");
  if (running.ca_file != fresh.ca_file) keys.emplace_back("ca_file");
  if (running.cache != fresh.cache) keys.emplace_back("cache");
  if (running.server != fresh.server) keys.emplace_back("server");
  return keys;
}

ConfigLoad load_config_file(const std::string& path, const EnvLookup& env) {
  const auto text = read_small_file(path, 1 << 20);
  if (!text) {
    ConfigLoad load;
    load.errors.push_back(path + ": cannot read the file (missing, unreadable or over 1 MiB)");
    return load;
  }
  ConfigLoad load = parse_config(*text, env);
  if (readable_by_others(path) && load.config && !load.config->identity_header.empty() &&
      load.config->identity_header_file.empty()) {
    load.warnings.push_back(path + ": holds identity_header but is readable by other users");
  }
  return load;
}

}  // namespace ficbroker
