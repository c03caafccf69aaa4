// The emulator's request → response logic for every endpoint (IMDS, App Service, Entra, control
// API). Transport-free: the server turns bytes into an HttpRequest, calls Service::handle, and
// carries out the HttpResponse (including delays and connection-level faults).
#pragma once

#include "jwt_signer.hpp"
#include "world.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ficbroker::emulator {

struct HttpRequest {
  std::string method;  ///< "GET", "POST", ...
  std::string target;  ///< origin-form: "/path?query"
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool tls = false;  ///< arrived on the HTTPS listener

  /// The first header with that name (case-insensitive), or nullptr.
  const std::string* header(std::string_view name) const;
};

/// How the server must deliver a response.
enum class Delivery {
  normal,    ///< write it
  reset,     ///< abort the connection (RST) instead of answering
  truncate,  ///< announce a Content-Length larger than the body, send the body, close
  hang,      ///< never answer; wait until the client closes
  interim,   ///< write interim 1xx responses first, then this one
};

struct HttpResponse {
  unsigned status = 200;
  std::string content_type = "application/json; charset=utf-8";
  std::vector<std::pair<std::string, std::string>> headers;  ///< extra headers
  std::string body;
  Delivery delivery = Delivery::normal;
  std::chrono::milliseconds delay{0};  ///< wait this long before delivering (injected latency)
  std::string note;                    ///< short log note; never contains secrets
};

struct ServiceOptions {
  std::int64_t token_lifetime_s = 3599;      ///< Entra tokens
  std::int64_t mi_token_lifetime_s = 86399;  ///< IMDS / App Service tokens
};

/// State and behaviour of the emulated services. Single-threaded: call from one thread only.
class Service {
 public:
  /// Epoch seconds; injected so tests control time.
  using Clock = std::function<std::int64_t()>;

  /// `entra_key` signs IMDS, App Service and Entra tokens (kid "emu-entra-1"); `oidc_key` signs
  /// tokens of the external OIDC issuer (kid "emu-oidc-1"). The FIC propagation clock starts at
  /// construction.
  Service(World world, ServiceOptions options, RsaKey entra_key, RsaKey oidc_key, Clock clock = {});

  /// Serves one request. Never throws for bad input; throws only on internal failures
  /// (e.g. OpenSSL out of memory).
  HttpResponse handle(const HttpRequest& req);

  /// The transport reports each request from the moment it is handed over until its answer is
  /// written (delays included), so stats can show the peak an upstream client held open at once.
  void request_begun(bool tls);
  void request_ended(bool tls);

  const World& world() const noexcept { return world_; }
  const JwtSigner& entra_signer() const noexcept { return entra_; }
  const JwtSigner& oidc_signer() const noexcept { return oidc_; }

 private:
  enum class Ep { imds, app_service, entra };

  struct EndpointStats {
    std::uint64_t requests = 0;
    std::uint64_t ok = 0;
    std::uint64_t error = 0;
    std::uint64_t faulted = 0;
  };

  struct Settings {
    std::int64_t token_lifetime_s;
    std::int64_t mi_token_lifetime_s;
    std::int64_t delay_ms = 0;
  };

  HttpResponse handle_imds(const HttpRequest& req, std::string_view query);
  HttpResponse handle_app_service(const HttpRequest& req, std::string_view query);
  HttpResponse handle_entra_token(const HttpRequest& req, std::string_view tenant);
  HttpResponse handle_discovery(const HttpRequest& req, std::string_view tenant,
                                bool openid_configuration);
  HttpResponse handle_control(const HttpRequest& req, std::string_view path);

  /// Runs `answer` unless a fault rule for `ep` applies; counts; adds injected delays.
  /// `describe` supplies the values AADSTS texts of injected errors mention.
  template <class Describe, class Answer>
  HttpResponse serve_token_endpoint(Ep ep, const HttpRequest& req, Describe&& describe,
                                    Answer&& answer);
  HttpResponse fault_response(const FaultRule& rule, Ep ep, const HttpRequest& req,
                              const ErrorContext& ctx);
  ErrorContext describe_mi_request(std::string_view query_text, MiEndpoint ep) const;

  HttpResponse mi_token_response(Ep ep, const Identity& id, const std::string& resource);
  std::string mint_mi_token(const Identity& id, const std::string& resource, std::int64_t now);
  HttpResponse entra_error_response(const EntraError& err, const HttpRequest& req);
  HttpResponse stats_response() const;
  HttpResponse settings_response() const;
  HttpResponse oidc_token_response(const HttpRequest& req);

  std::int64_t now() const { return clock_(); }

  World world_;
  ServiceOptions options_;
  JwtSigner entra_;
  JwtSigner oidc_;
  Clock clock_;
  std::int64_t started_at_;
  std::int64_t fic_epoch_;
  Settings settings_;
  FaultQueue faults_;

  EndpointStats imds_stats_;
  EndpointStats app_service_stats_;
  EndpointStats entra_stats_;
  std::map<std::uint32_t, std::uint64_t> entra_errors_by_code_;
  struct InProgress {
    std::uint64_t now = 0;
    std::uint64_t peak = 0;
  };
  InProgress http_in_progress_;
  InProgress https_in_progress_;
  std::uint64_t oidc_tokens_ = 0;
  std::uint64_t discovery_ = 0;
  boost::json::object last_entra_form_;
  std::string last_entra_tenant_;
  boost::json::object last_imds_query_;
  boost::json::object last_app_service_query_;
};

}  // namespace ficbroker::emulator
