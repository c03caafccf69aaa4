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
};

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
};

struct UnixSocketConfig {
  std::string path;                         // empty: no Unix-domain listener
  std::vector<std::uint32_t> allowed_uids;  // empty: any peer
};

struct Config {
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 8181;
  bool allow_remote = false;
  bool transparent = false;  // also accept Host: 169.254.169.254 (iptables redirect)
  std::vector<std::string> allowed_hosts;
  Url authority_host;  // default for targets
  std::string ca_file;
  std::string identity_header;  // resolved secret (from identity_header or identity_header_file)
  std::string identity_header_file;
  std::string log_level = "info";
  CacheConfig cache;
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

/// The FIC audience and authority host of a cloud.
std::string_view exchange_audience_for(Cloud cloud);
std::string_view authority_host_for(Cloud cloud);

}  // namespace ficbroker
