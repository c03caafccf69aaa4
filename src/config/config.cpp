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

void parse_source(Validator& v, const std::string& name, const json::value& value,
                  const EnvLookup& env, Config& config) {
  const std::string prefix = "sources." + name;
  if (!value.is_object()) {
    v.error(prefix, "must be an object");
    return;
  }
  const auto& obj = value.get_object();
  SourceConfig source;
  source.name = name;
  const auto type = v.string_at(obj, "type", prefix + ".type");
  if (!type) {
    if (!obj.contains("type")) {
      v.error(prefix + ".type", "missing; one of imds, app_service, workload_identity, file");
    }
    return;
  }
  if (*type == "imds") {
    source.type = SourceType::imds;
    v.reject_unknown(obj, prefix + ".",
                     {"type", "endpoint", "client_id", "object_id", "resource_id"});
  } else if (*type == "app_service") {
    source.type = SourceType::app_service;
    v.reject_unknown(obj, prefix + ".",
                     {"type", "endpoint", "header", "client_id", "object_id", "resource_id"});
  } else if (*type == "workload_identity" || *type == "file") {
    source.type = *type == "file" ? SourceType::file : SourceType::workload_identity;
    v.reject_unknown(obj, prefix + ".", {"type", "path"});
  } else {
    v.error(prefix + ".type",
            "'" + *type + "' is not one of imds, app_service, workload_identity, file");
    return;
  }

  if (source.type == SourceType::imds || source.type == SourceType::app_service) {
    std::optional<std::string> endpoint = v.string_at(obj, "endpoint", prefix + ".endpoint");
    if (!endpoint && source.type == SourceType::imds) endpoint = "http://169.254.169.254";
    if (!endpoint && source.type == SourceType::app_service) endpoint = env("IDENTITY_ENDPOINT");
    if (!endpoint) {
      v.error(prefix + ".endpoint", "missing, and IDENTITY_ENDPOINT is not set");
    } else if (auto url = v.upstream_url(*endpoint, prefix + ".endpoint",
                                         source.type == SourceType::app_service)) {
      source.endpoint = *url;
    }
    if (source.type == SourceType::app_service) {
      auto header = v.string_at(obj, "header", prefix + ".header");
      if (!header) header = env("IDENTITY_HEADER");
      if (!header || header->empty()) {
        v.error(prefix + ".header", "missing, and IDENTITY_HEADER is not set");
      } else {
        source.header = *header;
      }
    }
    int selectors = 0;
    for (auto [key, field] :
         {std::pair{"client_id", &source.client_id}, std::pair{"object_id", &source.object_id},
          std::pair{"resource_id", &source.resource_id}}) {
      if (auto s = v.string_at(obj, key, prefix + "." + key)) {
        if (s->empty()) {
          v.error(prefix + "." + key, "must not be empty");
        } else {
          *field = *s;
          ++selectors;
        }
      }
    }
    // All three may be given: callers can then select the identity by any of them. Upstream is
    // asked with one (client_id, else object_id, else resource_id).
    (void)selectors;
  } else {
    auto path = v.string_at(obj, "path", prefix + ".path");
    if (!path && source.type == SourceType::workload_identity) {
      path = env("AZURE_FEDERATED_TOKEN_FILE");
    }
    if (!path || path->empty()) {
      v.error(prefix + ".path", source.type == SourceType::workload_identity
                                    ? "missing, and AZURE_FEDERATED_TOKEN_FILE is not set"
                                    : "missing");
    } else {
      source.path = *path;
    }
  }
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
                   {"listen", "allow_remote", "allowed_hosts", "transparent", "authority_host",
                    "ca_file", "identity_header", "identity_header_file", "log_level", "cache",
                    "unix_socket", "sources", "targets"});
  Config config;

  config.allow_remote = v.bool_at(obj, "allow_remote", "allow_remote").value_or(false);
  config.transparent = v.bool_at(obj, "transparent", "transparent").value_or(false);
  if (auto listen = v.string_at(obj, "listen", "listen")) {
    if (!parse_listen(*listen, config.listen_host, config.listen_port)) {
      v.error("listen", "'" + *listen + "' is not host:port (IPv6 as [addr]:port)");
    } else if (!config.allow_remote && !is_loopback(config.listen_host)) {
      v.error("listen", "'" + config.listen_host +
                            "' is not a loopback address; set \"allow_remote\": true to expose "
                            "tokens beyond this host");
    }
  }
  config.allowed_hosts = v.strings_at(obj, "allowed_hosts", "allowed_hosts");
  for (auto& h : config.allowed_hosts) h = ascii_lower(h);

  std::optional<Url> global_authority;
  if (auto s = v.string_at(obj, "authority_host", "authority_host")) {
    global_authority = v.upstream_url(*s, "authority_host", false);
  }
  config.authority_host =
      global_authority.value_or(*parse_url("https://login.microsoftonline.com"));

  if (auto s = v.string_at(obj, "ca_file", "ca_file")) {
    if (!s->empty()) {
      std::ifstream probe(*s);
      if (!probe) v.error("ca_file", "cannot read '" + *s + "'");
      config.ca_file = *s;
    }
  }

  const auto header = v.string_at(obj, "identity_header", "identity_header");
  const auto header_file = v.string_at(obj, "identity_header_file", "identity_header_file");
  if (header && header_file) {
    v.error("identity_header", "give identity_header or identity_header_file, not both");
  } else if (header) {
    config.identity_header = *header;
  } else if (header_file) {
    config.identity_header_file = *header_file;
    if (auto secret = read_small_file(*header_file, 4096)) {
      config.identity_header = trim(*secret);
      if (readable_by_others(*header_file)) {
        v.warning("identity_header_file", "'" + *header_file + "' is readable by other users");
      }
    } else {
      v.error("identity_header_file", "cannot read '" + *header_file + "' (or larger than 4 KiB)");
    }
  }
  const bool header_read =
      header_file && !header && config.identity_header_file == *header_file &&
      load.errors.end() ==
          std::find_if(load.errors.begin(), load.errors.end(),
                       [](const std::string& e) { return e.starts_with("identity_header_file:"); });
  if ((header && !header_file) || header_read) {
    if (config.identity_header.size() < 16) {
      v.error(header ? "identity_header" : "identity_header_file",
              "the secret must be at least 16 characters");
    }
  }

  if (auto level = v.string_at(obj, "log_level", "log_level")) {
    if (*level != "debug" && *level != "info" && *level != "warn" && *level != "error") {
      v.error("log_level", "'" + *level + "' is not one of debug, info, warn, error");
    } else {
      config.log_level = *level;
    }
  }

  if (const auto* cache = obj.if_contains("cache")) {
    if (!cache->is_object()) {
      v.error("cache", "must be an object");
    } else {
      const auto& c = cache->get_object();
      v.reject_unknown(
          c, "cache.",
          {"min_validity_seconds", "idle_ttl_seconds", "max_entries", "max_entries_per_target",
           "max_in_flight", "max_in_flight_per_host", "max_queued", "max_queue_wait_ms"});
      if (auto n = v.int_at(c, "min_validity_seconds", "cache.min_validity_seconds", 0, 3600)) {
        config.cache.min_validity = std::chrono::seconds(*n);
      }
      if (auto n = v.int_at(c, "idle_ttl_seconds", "cache.idle_ttl_seconds", 1, 30 * 86400)) {
        config.cache.idle_ttl = std::chrono::seconds(*n);
      }
      if (auto n = v.int_at(c, "max_entries", "cache.max_entries", 1, 10'000'000)) {
        config.cache.max_entries = static_cast<std::size_t>(*n);
      }
      if (auto n = v.int_at(c, "max_entries_per_target", "cache.max_entries_per_target", 1,
                            10'000'000)) {
        config.cache.max_entries_per_target = static_cast<std::size_t>(*n);
      }
      if (auto n = v.int_at(c, "max_in_flight", "cache.max_in_flight", 1, 10'000)) {
        config.cache.max_in_flight = static_cast<std::size_t>(*n);
      }
      if (auto n =
              v.int_at(c, "max_in_flight_per_host", "cache.max_in_flight_per_host", 1, 10'000)) {
        config.cache.max_in_flight_per_host = static_cast<std::size_t>(*n);
      }
      if (auto n = v.int_at(c, "max_queued", "cache.max_queued", 0, 100'000)) {
        config.cache.max_queued = static_cast<std::size_t>(*n);
      }
      if (auto n = v.int_at(c, "max_queue_wait_ms", "cache.max_queue_wait_ms", 0, 60'000)) {
        config.cache.max_queue_wait = std::chrono::milliseconds(*n);
      }
    }
  }

  if (const auto* unix_socket = obj.if_contains("unix_socket")) {
    if (!unix_socket->is_object()) {
      v.error("unix_socket", "must be an object");
    } else {
      const auto& u = unix_socket->get_object();
      v.reject_unknown(u, "unix_socket.", {"path", "allowed_uids"});
      if (auto p = v.string_at(u, "path", "unix_socket.path")) config.unix_socket.path = *p;
      if (config.unix_socket.path.empty()) v.error("unix_socket.path", "missing");
      if (const auto* uids = u.if_contains("allowed_uids")) {
        if (!uids->is_array()) {
          v.error("unix_socket.allowed_uids", "must be an array of user ids");
        } else {
          for (std::size_t i = 0; i < uids->get_array().size(); ++i) {
            const auto& uid = uids->get_array()[i];
            if (uid.is_int64() && uid.get_int64() >= 0 && uid.get_int64() <= 0xFFFFFFFF) {
              config.unix_socket.allowed_uids.push_back(
                  static_cast<std::uint32_t>(uid.get_int64()));
            } else {
              v.error("unix_socket.allowed_uids[" + std::to_string(i) + "]", "must be a user id");
            }
          }
        }
      }
    }
  }

  if (const auto* sources = obj.if_contains("sources")) {
    if (!sources->is_object() || sources->get_object().empty()) {
      v.error("sources", "must be a non-empty object of named sources");
    } else {
      for (const auto& kv : sources->get_object()) {
        parse_source(v, std::string(kv.key()), kv.value(), env, config);
      }
    }
  } else {
    v.error("sources", "missing; at least one source of assertions is required");
  }

  if (const auto* targets = obj.if_contains("targets")) {
    if (!targets->is_array() || targets->get_array().empty()) {
      v.error("targets", "must be a non-empty array");
    } else {
      const auto& arr = targets->get_array();
      for (std::size_t i = 0; i < arr.size(); ++i) {
        parse_target(v, i, arr[i], config, global_authority);
      }
    }
  } else {
    v.error("targets", "missing; at least one target is required");
  }

  std::set<std::pair<std::string, std::string>> seen;
  int defaults = 0;
  for (std::size_t i = 0; i < config.targets.size(); ++i) {
    const auto& t = config.targets[i];
    if (!seen.emplace(t.tenant_id, t.client_id).second) {
      v.error("targets", "tenant " + t.tenant_id + " with app " + t.client_id + " appears twice");
    }
    if (t.is_default) ++defaults;
  }
  if (defaults > 1) v.error("targets", "more than one target has \"default\": true");

  if (load.errors.empty()) load.config = std::move(config);
  return load;
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
