// A running emulator (IMDS + App Service + Entra over TLS) and a running ficbroker wired to it.
#pragma once

#include "http.hpp"
#include "process.hpp"

#include <boost/json.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace ficbroker::testing {

// Identities of the emulator's built-in world.
inline constexpr const char* kHomeTenant = "11111111-1111-1111-1111-111111111111";
inline constexpr const char* kTenantA = "22222222-2222-2222-2222-222222222222";
inline constexpr const char* kTenantB = "33333333-3333-3333-3333-333333333333";
inline constexpr const char* kTenantNoApp = "44444444-4444-4444-4444-444444444444";
inline constexpr const char* kApp = "cccccccc-0000-0000-0000-000000000001";
inline constexpr const char* kAppWrongFic = "cccccccc-0000-0000-0000-000000000002";
inline constexpr const char* kUamiClientId = "aaaaaaaa-0000-0000-0000-000000000001";
inline constexpr const char* kUamiObjectId = "bbbbbbbb-0000-0000-0000-000000000001";
inline constexpr const char* kIdentityHeader = "integration-identity-header-0123456789";

class Emulator {
 public:
  explicit Emulator(const TempDir& dir, std::vector<std::string> extra_args = {});
  unsigned short http_port() const { return http_port_; }
  unsigned short https_port() const { return https_port_; }
  const std::string& ca_file() const { return ca_file_; }
  boost::json::object stats() const;
  void reset() const;
  /// POSTs a fault rule (see the emulator's control API).
  void fault(const boost::json::object& rule) const;
  void settings(const boost::json::object& settings) const;
  std::string oidc_token(const boost::json::object& request) const;
  ChildProcess& process() { return process_; }

 private:
  ChildProcess process_;
  unsigned short http_port_ = 0;
  unsigned short https_port_ = 0;
  std::string ca_file_;
};

class Broker {
 public:
  /// Starts ficbroker; `launcher` is prepended to its command line (e.g. prlimit with limits).
  /// port() is 0 when it listens on a Unix socket only.
  Broker(const TempDir& dir, const std::string& config_json, const std::string& name = "broker",
         std::vector<std::string> launcher = {});
  unsigned short port() const { return port_; }
  Response get(const std::string& target, const Headers& headers = {}) const;
  Response get_with_metadata(const std::string& target) const;
  ChildProcess& process() { return process_; }
  std::string log() const { return read_file(log_path_); }
  const std::string& config_path() const { return config_path_; }

 private:
  ChildProcess process_;
  unsigned short port_ = 0;
  std::string log_path_;
  std::string config_path_;
};

/// The default broker config for `emulator`: the UAMI as IMDS source, targets in tenants A and B,
/// a target whose app's FIC does not trust the UAMI, one in a tenant without the app.
std::string default_config(const Emulator& emulator, const std::string& extra_top_level = "");

/// Decodes a JWT's claims (test-side, independent of ficbroker's decoder).
boost::json::object jwt_claims(const std::string& token);

class BrokerTest : public ::testing::Test {
 protected:
  void SetUp() override;
  TempDir dir_;
  std::optional<Emulator> emulator_;
  std::optional<Broker> broker_;
};

// ---- helpers shared by the suites ------------------------------------------------------------

inline constexpr const char* kGraph = "https://graph.microsoft.com";
inline constexpr const char* kVault = "https://vault.azure.net";

/// ficbroker's own route: /token?resource=R[&tenant=T].
std::string token_target(const std::string& resource, const std::string& tenant = "");

/// A string member of a JSON object, or "" when it is absent or not a string.
std::string str(const boost::json::object& o, const char* key);

/// The access_token of a token answer, or "" when the body is not one.
std::string access_token(const Response& r);

double seconds_since(std::chrono::steady_clock::time_point start);

/// The broker's /metrics text.
std::string metrics_of(const Broker& broker);

/// A counter from the emulator's /_emulator/stats answer (0 when absent).
std::int64_t stat_count(const boost::json::object& stats, const char* key);

/// default_config() as a JSON object, to be changed and serialised by a test.
boost::json::object default_config_object(const Emulator& emulator);

/// Removes every fault rule (DELETE /_emulator/faults).
void clear_faults(const Emulator& emulator);

/// A binary run to completion, its stdout and stderr kept apart.
struct ProcessResult {
  int exit_code = -1;  // -1: killed after the timeout; 128 + N: ended by signal N
  std::string out;
  std::string err;
};
ProcessResult run_process(const std::vector<std::string>& argv,
                          std::chrono::milliseconds timeout = std::chrono::seconds(30));

/// The status code of a raw HTTP response ("HTTP/1.1 431 ..."); 0 when there is none.
unsigned raw_status(const std::string& raw);

/// The value of one sample in Prometheus text exposition, e.g.
/// metric_value(text, "ficbroker_cache_hits_total") or
/// metric_value(text, "ficbroker_requests_total{route=\"token\",status=\"200\"}").
std::optional<double> metric_value(const std::string& metrics, const std::string& series);

/// The JSON-lines log records whose "event" is `event` (lines that are not JSON are skipped).
std::vector<boost::json::object> log_events(const std::string& log, const std::string& event);

/// Polls `condition` every `interval` until it holds or `timeout` passes; returns its last value.
bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
                std::chrono::milliseconds interval = std::chrono::milliseconds(50));

}  // namespace ficbroker::testing
