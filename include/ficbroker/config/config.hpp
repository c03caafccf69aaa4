// ficbroker's configuration: one JSON file (comments and trailing commas allowed), validated as a
// whole at start so that every problem is reported at once, each with the key it concerns.
#pragma once

#include "ficbroker/util/url.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ficbroker {

enum class SourceType { imds, app_service, workload_identity, file };
enum class Cloud { public_cloud, usgov, china };

/// Where assertions (and plain managed-identity tokens) come from.
struct SourceConfig {
  std::string name;
  SourceType type = SourceType::imds;
  Url endpoint;        // imds, app_service
  std::string header;  // app_service: the upstream X-IDENTITY-HEADER secret
  // The user-assigned identity (imds, app_service). Any of them may be set; callers can select the
  // identity by each one given, and upstream is asked with the first of client_id, object_id,
  // resource_id.
  std::string client_id;
  std::string object_id;
  std::string resource_id;
  std::string path;  // workload_identity, file: the token file
  // imds, app_service: the resources plain managed-identity tokens of this identity may be asked
  // for (a selector naming the identity). nullopt: any resource except the FIC exchange audiences
  // (api://AzureADTokenExchange*), whose tokens are the assertion itself.
  std::optional<std::vector<std::string>> passthrough_resources;
};

/// The ids one managed identity is known by; an empty member is not known.
struct IdentityIds {
  std::string client_id;
  std::string object_id;
  std::string resource_id;
};

/// The name a source type has in the configuration ("imds", "workload_identity", ...).
std::string_view source_type_name(SourceType type);

/// True when both describe the same way of minting for the same identity: every field but the
/// name is equal (type, endpoint, header, ids, path). A reload keeps a source's cached tokens only
/// when this holds.
bool same_minting_identity(const SourceConfig& a, const SourceConfig& b);

/// One (resource tenant, multi-tenant app) pair that tokens are minted for.
struct TargetConfig {
  std::string tenant_id;
  std::string client_id;
  std::string source;
  bool is_default = false;
  Cloud cloud = Cloud::public_cloud;
  Url authority_host;
  std::string exchange_audience;  // resource asked of the source: api://AzureADTokenExchange...
  std::vector<std::string> prewarm;
  std::vector<std::string> allowed_resources;  // empty: any
};

struct CacheConfig {
  std::chrono::seconds min_validity{300};          // never hand out a token with less left
  std::chrono::seconds idle_ttl{3600};             // stop refreshing keys nobody asked for
  std::size_t max_entries = 10000;                 // keys callers chose (assertions, prewarm apart)
  std::size_t max_entries_per_target = 1000;       // of those, per target (tenant + app) or source
  std::size_t max_in_flight = 64;                  // upstream fetches at once
  std::size_t max_in_flight_per_host = 16;         // upstream fetches at once to one host
  std::size_t max_queued = 256;                    // caller fetches waiting for a slot
  std::chrono::milliseconds max_queue_wait{1000};  // then the caller gets 503 + Retry-After
  bool operator==(const CacheConfig&) const = default;
};

/// The front door's limits. max_connections is lowered further at start so that it fits
/// RLIMIT_NOFILE with room for upstream sockets and files.
struct ServerConfig {
  std::size_t max_connections = 4096;
  std::chrono::milliseconds header_timeout{10000};  // a request must arrive whole within this
  std::chrono::milliseconds idle_timeout{60000};    // waiting for the next keep-alive request
  std::chrono::milliseconds write_timeout{10000};
  bool operator==(const ServerConfig&) const = default;
};

struct UnixSocketConfig {
  std::string path;                         // empty: no Unix-domain listener
  std::vector<std::uint32_t> allowed_uids;  // empty: any peer
  bool operator==(const UnixSocketConfig&) const = default;
};

struct Config {
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 8181;
  bool listen_tcp = true;  // "listen": null turns the TCP listener off (Unix socket only)
  // "metrics_listen": a separate listener for /metrics, /healthz and /readyz only; /metrics is then
  // no longer served on the token listener. Empty host: none.
  std::string metrics_host;
  std::uint16_t metrics_port = 0;
  bool allow_remote = false;
  bool transparent = false;  // also accept Host: 169.254.169.254 (iptables redirect)
  std::vector<std::string> allowed_hosts;
  Url authority_host;  // default for targets
  std::string ca_file;
  std::string identity_header;  // resolved secret (from identity_header or identity_header_file)
  std::string identity_header_file;
  std::string log_level = "info";
  CacheConfig cache;
  ServerConfig server;
  UnixSocketConfig unix_socket;
  std::map<std::string, SourceConfig> sources;
  std::vector<TargetConfig> targets;

  /// The target marked default, or the only target when there is exactly one.
  const TargetConfig* default_target() const;
  const SourceConfig* source(std::string_view name) const;
};

struct ConfigLoad {
  std::optional<Config> config;
  std::vector<std::string> errors;    // "key: what is wrong"
  std::vector<std::string> warnings;  // e.g. a secret file readable by others
};

/// Reads environment variables (injected so tests do not depend on the process environment).
using EnvLookup = std::function<std::optional<std::string>(std::string_view)>;
EnvLookup process_env();

/// Parses and validates a configuration document. Reads `identity_header_file` when given.
ConfigLoad parse_config(std::string_view text, const EnvLookup& env = process_env());
/// Reads the file and parses it; errors name the file when it cannot be read.
ConfigLoad load_config_file(const std::string& path, const EnvLookup& env = process_env());

struct ListenAddress {
  std::string host;  // without brackets
  std::uint16_t port = 0;
};
/// `host:port`, IPv6 as `[addr]:port`. Syntax only: the loopback rule is the config's.
std::optional<ListenAddress> parse_listen_address(std::string_view text);

/// The keys whose change a running daemon cannot apply on SIGHUP (listeners, TLS trust, cache and
/// server limits); a reload that changes any of them is refused, naming them.
std::vector<std::string> keys_needing_restart(const Config& running, const Config& fresh);

/// The FIC audience and authority host of a cloud.
std::string_view exchange_audience_for(Cloud cloud);
std::string_view authority_host_for(Cloud cloud);

}  // namespace ficbroker
