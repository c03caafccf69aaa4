// The HTTP/1.1 front door: TCP and Unix-domain listeners, one coroutine per connection, limits on
// header and body size, connection count and every read and write, graceful drain.
//
// Thread safety: io_context thread only.
#pragma once

#include "ficbroker/front_door/request.hpp"
#include "ficbroker/util/asio.hpp"
#include "ficbroker/util/log.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace ficbroker {

class Metrics;  // core/metrics.hpp: the transport only counts into it

struct ServerLimits {
  std::size_t max_header_bytes = 8 * 1024;
  std::size_t max_body_bytes = 16 * 1024;
  std::size_t max_connections = 4096;
  std::chrono::milliseconds header_timeout{10000};  // first request on a connection
  std::chrono::milliseconds idle_timeout{60000};    // waiting for the next keep-alive request
  std::chrono::milliseconds write_timeout{10000};
};

class HttpServer {
 public:
  /// Answers one parsed request. The view's strings live until the returned awaitable completes.
  using Handler = std::function<asio::awaitable<Reply>(RequestView)>;

  HttpServer(asio::any_io_executor executor, Handler handler, ServerLimits limits, Logger& log,
             Metrics& metrics);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// Binds a TCP listener and starts accepting. Returns the bound port (useful with port 0).
  /// Throws on failure (start-up only).
  std::uint16_t listen_tcp(const std::string& host, std::uint16_t port);
  /// Binds a Unix-domain listener (mode 0660); peers whose uid is not in `allowed_uids` (when
  /// non-empty) are disconnected before anything is read. Throws on failure.
  void listen_unix(const std::string& path, std::vector<std::uint32_t> allowed_uids);
  /// Serves an inherited listening socket (systemd socket activation), TCP or Unix; the uid
  /// allow-list applies to a Unix one. Returns its address ("host:port" or "unix:path"). Throws
  /// when `fd` is not a listening socket.
  std::string adopt_listener(int fd, const std::vector<std::uint32_t>& allowed_uids);

  /// Stops accepting and closes idle connections; busy ones finish their current request.
  void stop();
  std::size_t open_connections() const noexcept;

 private:
  std::uint16_t serve_tcp(std::unique_ptr<asio::ip::tcp::acceptor> acceptor);
  void serve_unix(std::unique_ptr<asio::local::stream_protocol::acceptor> acceptor,
                  std::vector<std::uint32_t> allowed_uids);

  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace ficbroker
