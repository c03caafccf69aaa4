// The upstream HTTP/1.1 client (IMDS, App Service, Entra). Verifies TLS peers (chain and host
// name, with SNI), bounds every phase with a deadline and every response with a size limit, keeps
// idle connections for reuse, and never follows redirects.
//
// Thread safety: use from the io_context thread only.
#pragma once

#include "ficbroker/upstream/http_sender.hpp"
#include "ficbroker/util/asio.hpp"
#include "ficbroker/util/url.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace boost::asio::ssl {
class context;
}

namespace ficbroker {

struct ClientLimits {
  std::chrono::milliseconds connect_timeout{3000};   // DNS + TCP connect + TLS handshake
  std::chrono::milliseconds request_timeout{10000};  // the whole call, connect included
  std::size_t max_response_body = 256 * 1024;
  std::size_t max_response_header = 16 * 1024;
  std::size_t max_idle_per_host = 4;
  std::chrono::seconds idle_keepalive{30};
};

/// Where HTTPS calls go through a CONNECT tunnel. Plain-http calls (IMDS, App Service, loopback)
/// never do: IMDS must not be reached through a proxy.
struct ProxySettings {
  std::optional<Url> https_proxy;     // http://host:port
  std::vector<std::string> no_proxy;  // hosts, domain suffixes (".example.com"), or "*"
};

/// Reads HTTPS_PROXY/https_proxy and NO_PROXY/no_proxy. A proxy URL that is not
/// `http://host[:port]` is ignored (and reported through `error`).
ProxySettings proxy_from_env(const std::function<std::optional<std::string>(std::string_view)>& env,
                             std::string* error = nullptr);

/// Whether a request to `target` goes through the proxy.
bool use_proxy(const ProxySettings& proxy, const Url& target);

/// Builds the one TLS client context: system trust store plus `ca_file` (PEM) when given.
/// Throws on failure (start-up only).
std::unique_ptr<asio::ssl::context> make_client_tls_context(const std::string& ca_file);

class HttpClient final : public HttpSender {
 public:
  HttpClient(asio::any_io_executor executor, asio::ssl::context& tls, ClientLimits limits,
             ProxySettings proxy = {});
  ~HttpClient() override;
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  asio::awaitable<result<HttpResponse>> send(HttpRequest request) override;

  /// Number of TCP connections opened so far (for tests of keep-alive reuse).
  std::uint64_t connections_opened() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ficbroker
