// HTTP and HTTPS listeners for the emulator (Boost.Beast; the only TU that includes Beast/SSL).
#pragma once

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

namespace ficbroker::emulator {

class Service;
struct TlsMaterial;

struct ServerOptions {
  std::chrono::seconds read_timeout{30};   ///< per request, headers + body
  std::chrono::seconds write_timeout{30};  ///< per response
  std::chrono::seconds handshake_timeout{10};
  std::chrono::minutes hang_limit{10};  ///< a "hang" fault gives up after this long
  std::size_t header_limit = 16 * 1024;
  std::size_t body_limit = 64 * 1024;
  std::size_t max_connections = 2000;  ///< accepting pauses above this
  bool quiet = false;                  ///< no per-request log lines
};

/// Owns the two listeners. bind() must be called before start(). All work runs on the
/// io_context passed in (one thread). The Service must outlive the io_context's pending work
/// (declare it before the io_context). Sessions keep their own shared state alive, so the
/// Server object itself may be destroyed before the io_context.
class Server {
 public:
  Server(boost::asio::io_context& ioc, Service& service, const TlsMaterial& tls,
         ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Binds and listens on "host:port" (port 0 = ephemeral; host is an IP literal, "[v6]", or
  /// "localhost"). Throws std::runtime_error / std::invalid_argument on failure.
  void bind(const std::string& http_address, const std::string& https_address);
  /// The bound addresses as "ip:port" ("[ip]:port" for IPv6).
  std::string http_endpoint() const;
  std::string https_endpoint() const;
  /// Starts the accept loops.
  void start();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ficbroker::emulator
