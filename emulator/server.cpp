#include "server.hpp"

#include "ficbroker/util/asio.hpp"

#include "service.hpp"
#include "tls_material.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <openssl/ssl.h>

#include <cstdio>
#include <ctime>
#include <exception>
#include <optional>
#include <stdexcept>
#include <system_error>

namespace ficbroker::emulator {
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

namespace {

// State shared by the listeners and every session. Sessions hold a shared_ptr, so it outlives
// the Server object until the io_context destroys the last coroutine frame.
struct Shared {
  Shared(Service& svc, ServerOptions opts) : service(svc), options(opts) {}
  Service& service;
  ssl::context ssl_ctx{ssl::context::tls_server};
  ServerOptions options;
  std::size_t active_connections = 0;
};

struct ConnectionCount {
  explicit ConnectionCount(std::shared_ptr<Shared> s) : shared(std::move(s)) {
    ++shared->active_connections;
  }
  ~ConnectionCount() { --shared->active_connections; }
  ConnectionCount(const ConnectionCount&) = delete;
  ConnectionCount& operator=(const ConnectionCount&) = delete;
  std::shared_ptr<Shared> shared;
};

// Counts one request as in progress at the Service until its answer is delivered.
struct InProgress {
  InProgress(Service& s, bool t) : service(s), tls(t) { service.request_begun(tls); }
  ~InProgress() { service.request_ended(tls); }
  InProgress(const InProgress&) = delete;
  InProgress& operator=(const InProgress&) = delete;
  Service& service;
  bool tls;
};

enum class SessionEnd { graceful, peer_closed, aborted };

std::string wall_clock_hms() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02d:%02d:%02d.%03dZ", tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms));
  return buf;
}

void log_error(std::string_view what) {
  std::fprintf(stderr, "%s ficbroker-emulator: %.*s\n", wall_clock_hms().c_str(),
               static_cast<int>(what.size()), what.data());
}

// One line per request. Only the path is printed: query strings and bodies may carry secrets.
void log_request(const Shared& shared, bool tls, std::string_view method, std::string_view target,
                 unsigned status, std::string_view note, long long micros) {
  if (shared.options.quiet) return;
  std::string_view path = target.substr(0, target.find('?'));
  if (path.size() > 200) path = path.substr(0, 200);
  std::printf("%s %s %.*s %.*s -> %u %.*s (%lldus)\n", wall_clock_hms().c_str(),
              tls ? "https" : "http", static_cast<int>(method.size()), method.data(),
              static_cast<int>(path.size()), path.data(), status, static_cast<int>(note.size()),
              note.data(), micros);
}

void log_task_exception(std::string_view task, std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    log_error(std::string(task) + " failed: " + ex.what());
  } catch (...) {
    log_error(std::string(task) + " failed with an unknown exception");
  }
}

std::pair<asio::ip::address, unsigned short> parse_listen_address(const std::string& text) {
  const std::size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 == text.size()) {
    throw std::invalid_argument("listen address must be host:port, got '" + text + "'");
  }
  std::string host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host == "localhost") host = "127.0.0.1";
  const std::string port_text = text.substr(colon + 1);
  if (port_text.find_first_not_of("0123456789") != std::string::npos || port_text.size() > 5 ||
      std::stoul(port_text) > 65535) {
    throw std::invalid_argument("invalid port in '" + text + "'");
  }
  boost::system::error_code ec;
  const asio::ip::address address = asio::ip::make_address(host, ec);
  if (ec) throw std::invalid_argument("invalid IP address in '" + text + "'");
  return {address, static_cast<unsigned short>(std::stoul(port_text))};
}

std::string endpoint_text(const tcp::endpoint& ep) {
  const std::string host = ep.address().to_string();
  return (ep.address().is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(ep.port());
}

// Abort with RST instead of FIN: SO_LINGER with a zero timeout, then close.
void abort_connection(beast::tcp_stream& stream) {
  boost::system::error_code ignored;
  stream.socket().set_option(asio::socket_base::linger(true, 0), ignored);
  stream.socket().close(ignored);
}

template <class Stream>
asio::awaitable<bool> write_plain_error(Stream& stream, const Shared& shared, unsigned version,
                                        unsigned status, std::string_view description) {
  http::response<http::string_body> res;
  res.version(version);
  res.result(status);
  res.set(http::field::server, "ficbroker-emulator");
  res.set(http::field::content_type, "application/json; charset=utf-8");
  res.set(http::field::connection, "close");
  res.body() =
      "{\"error\":\"invalid_request\",\"error_description\":\"" + std::string(description) + "\"}";
  res.prepare_payload();
  beast::get_lowest_layer(stream).expires_after(shared.options.write_timeout);
  auto [ec, n] = co_await http::async_write(stream, res, use_nothrow);
  co_return !ec;
}

// A "hang" fault: never answer, but notice when the client gives up (read completes with EOF or
// an error), so the connection does not outlive the client. Bounded by hang_limit.
template <class Stream>
asio::awaitable<void> hang_until_client_leaves(Stream& stream, const Shared& shared) {
  beast::get_lowest_layer(stream).expires_after(shared.options.hang_limit);
  char scratch[1024];
  for (;;) {
    auto [ec, n] = co_await stream.async_read_some(asio::buffer(scratch), use_nothrow);
    if (ec) co_return;
  }
}

HttpRequest to_service_request(http::request<http::string_body>&& req, bool tls) {
  HttpRequest in;
  in.method = std::string(req.method_string());
  in.target = std::string(req.target());
  in.headers.reserve(16);
  for (const auto& field : req) {
    in.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  }
  in.body = std::move(req.body());
  in.tls = tls;
  return in;
}

template <class Stream>
asio::awaitable<SessionEnd> serve_requests(Stream& stream, std::shared_ptr<Shared> shared,
                                           bool tls) {
  auto& lowest = beast::get_lowest_layer(stream);
  const ServerOptions& opt = shared->options;
  beast::flat_buffer buffer(opt.header_limit + opt.body_limit + 4096);

  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(opt.header_limit));
    parser.body_limit(opt.body_limit);

    // One deadline for the whole request (headers and body).
    lowest.expires_after(opt.read_timeout);
    auto [header_ec, header_n] =
        co_await http::async_read_header(stream, buffer, parser, use_nothrow);
    if (header_ec == http::error::end_of_stream) co_return SessionEnd::peer_closed;
    if (header_ec == http::error::header_limit) {
      co_await write_plain_error(stream, *shared, 11, 431, "Request headers too large");
      co_return SessionEnd::aborted;
    }
    if (header_ec == http::error::body_limit) {
      co_await write_plain_error(stream, *shared, 11, 413, "Request body too large");
      co_return SessionEnd::aborted;
    }
    if (header_ec) co_return SessionEnd::aborted;

    // curl and some SDKs send "Expect: 100-continue" for larger bodies and wait for this.
    const unsigned version = parser.get().version();
    if (version == 11 && beast::iequals(parser.get()[http::field::expect], "100-continue")) {
      http::response<http::empty_body> cont{http::status::continue_, version};
      auto [cont_ec, cont_n] = co_await http::async_write(stream, cont, use_nothrow);
      if (cont_ec) co_return SessionEnd::aborted;
    }
    if (!parser.is_done()) {
      auto [body_ec, body_n] = co_await http::async_read(stream, buffer, parser, use_nothrow);
      if (body_ec == http::error::body_limit) {
        co_await write_plain_error(stream, *shared, version, 413, "Request body too large");
        co_return SessionEnd::aborted;
      }
      if (body_ec) co_return SessionEnd::aborted;
    }

    http::request<http::string_body> req = parser.release();
    const bool keep_alive = req.keep_alive();
    const std::string method(req.method_string());
    const std::string target(req.target());

    const auto started = std::chrono::steady_clock::now();
    const InProgress in_progress(shared->service, tls);
    HttpResponse out;
    try {
      out = shared->service.handle(to_service_request(std::move(req), tls));
    } catch (const std::exception& e) {
      log_error(std::string("internal error: ") + e.what());
      out = HttpResponse{};
      out.status = 500;
      out.body = "{\"error\":\"server_error\",\"error_description\":\"Internal emulator error\"}";
      out.note = "internal error";
    }
    const long long micros = std::chrono::duration_cast<std::chrono::microseconds>(
                                 std::chrono::steady_clock::now() - started)
                                 .count();
    log_request(*shared, tls, method, target, out.status, out.note, micros);

    if (out.delay.count() > 0) {
      asio::steady_timer timer(co_await asio::this_coro::executor, out.delay);
      co_await timer.async_wait(use_nothrow);
    }

    switch (out.delivery) {
      case Delivery::reset:
        abort_connection(lowest);
        co_return SessionEnd::aborted;
      case Delivery::hang:
        co_await hang_until_client_leaves(stream, *shared);
        co_return SessionEnd::aborted;
      case Delivery::truncate: {
        std::string raw =
            "HTTP/1.1 200 OK\r\nServer: ficbroker-emulator\r\nContent-Type: " + out.content_type +
            "\r\nContent-Length: " + std::to_string(out.body.size() * 2 + 64) +
            "\r\nX-Emulator-Time-Us: " + std::to_string(micros) + "\r\n\r\n" + out.body;
        lowest.expires_after(opt.write_timeout);
        co_await asio::async_write(stream, asio::buffer(raw), use_nothrow);
        // Close without a TLS close_notify: the client sees the body cut short.
        boost::system::error_code ignored;
        lowest.socket().shutdown(tcp::socket::shutdown_both, ignored);
        lowest.close();
        co_return SessionEnd::aborted;
      }
      case Delivery::interim: {
        // RFC 9110 15.2: any number of 1xx answers may precede the final one.
        const std::string interim =
            "HTTP/1.1 103 Early Hints\r\nLink: </emulated.css>; rel=preload\r\n\r\n"
            "HTTP/1.1 100 Continue\r\n\r\n";
        lowest.expires_after(opt.write_timeout);
        auto [interim_ec, interim_n] =
            co_await asio::async_write(stream, asio::buffer(interim), use_nothrow);
        if (interim_ec) co_return SessionEnd::aborted;
        break;
      }
      case Delivery::normal:
        break;
    }

    http::response<http::string_body> res;
    res.version(version);
    res.result(out.status);
    res.set(http::field::server, "ficbroker-emulator");
    res.set(http::field::content_type, out.content_type);
    res.set("X-Emulator-Time-Us", std::to_string(micros));
    for (const auto& [name, value] : out.headers) res.insert(name, value);
    res.body() = std::move(out.body);
    res.keep_alive(keep_alive);
    res.prepare_payload();

    lowest.expires_after(opt.write_timeout);
    auto [write_ec, write_n] = co_await http::async_write(stream, res, use_nothrow);
    if (write_ec) co_return SessionEnd::aborted;
    if (!keep_alive) co_return SessionEnd::graceful;
  }
}

asio::awaitable<void> plain_session(tcp::socket socket, std::shared_ptr<Shared> shared) {
  ConnectionCount count(shared);
  beast::tcp_stream stream(std::move(socket));
  const SessionEnd end = co_await serve_requests(stream, shared, false);
  if (end != SessionEnd::aborted) {
    boost::system::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }
}

asio::awaitable<void> tls_session(tcp::socket socket, std::shared_ptr<Shared> shared) {
  ConnectionCount count(shared);
  ssl::stream<beast::tcp_stream> stream(beast::tcp_stream(std::move(socket)), shared->ssl_ctx);
  beast::get_lowest_layer(stream).expires_after(shared->options.handshake_timeout);
  auto [hs_ec] = co_await stream.async_handshake(ssl::stream_base::server, use_nothrow);
  if (hs_ec) {
    if (!shared->options.quiet) log_error("TLS handshake failed: " + hs_ec.message());
    co_return;
  }
  const SessionEnd end = co_await serve_requests(stream, shared, true);
  if (end != SessionEnd::aborted) {
    // Send close_notify; a peer that already went away makes this fail fast, which is fine.
    beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(5));
    co_await stream.async_shutdown(use_nothrow);
  }
}

asio::awaitable<void> accept_loop(tcp::acceptor acceptor, std::shared_ptr<Shared> shared,
                                  bool tls) {
  const auto executor = acceptor.get_executor();
  for (;;) {
    if (shared->active_connections >= shared->options.max_connections) {
      // Leave further connections in the kernel backlog until sessions finish.
      asio::steady_timer wait(executor, std::chrono::milliseconds(20));
      co_await wait.async_wait(use_nothrow);
      continue;
    }
    auto [ec, socket] = co_await acceptor.async_accept(use_nothrow);
    if (ec == asio::error::operation_aborted) co_return;
    if (ec) {
      // e.g. EMFILE: back off instead of spinning on a failing accept().
      log_error("accept failed: " + ec.message());
      asio::steady_timer backoff(executor, std::chrono::milliseconds(50));
      co_await backoff.async_wait(use_nothrow);
      continue;
    }
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    auto done = [](std::exception_ptr e) { log_task_exception("session", e); };
    if (tls) {
      asio::co_spawn(executor, tls_session(std::move(socket), shared), done);
    } else {
      asio::co_spawn(executor, plain_session(std::move(socket), shared), done);
    }
  }
}

tcp::acceptor open_acceptor(asio::io_context& ioc, const std::string& address) {
  const auto [ip, port] = parse_listen_address(address);
  const tcp::endpoint ep(ip, port);
  tcp::acceptor acceptor(ioc);
  boost::system::error_code ec;
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec && ep.address().is_v6()) acceptor.set_option(asio::ip::v6_only(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error(address + ": " + ec.message());
  return acceptor;
}

}  // namespace

struct Server::Impl {
  Impl(asio::io_context& io, Service& service, ServerOptions options)
      : ioc(io), shared(std::make_shared<Shared>(service, options)) {}
  asio::io_context& ioc;
  std::shared_ptr<Shared> shared;
  std::optional<tcp::acceptor> http_acceptor;
  std::optional<tcp::acceptor> https_acceptor;
  tcp::endpoint http_endpoint;
  tcp::endpoint https_endpoint;
};

Server::Server(asio::io_context& ioc, Service& service, const TlsMaterial& tls,
               ServerOptions options)
    : impl_(std::make_unique<Impl>(ioc, service, options)) {
  ssl::context& ctx = impl_->shared->ssl_ctx;
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                  ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                  ssl::context::single_dh_use);
  if (SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION) != 1) {
    throw std::runtime_error("cannot require TLS 1.2");
  }
  const std::string chain = tls.leaf_cert_pem + tls.ca_cert_pem;
  ctx.use_certificate_chain(asio::buffer(chain));
  ctx.use_private_key(asio::buffer(tls.leaf_key_pem), ssl::context::pem);
}

Server::~Server() = default;

void Server::bind(const std::string& http_address, const std::string& https_address) {
  impl_->http_acceptor.emplace(open_acceptor(impl_->ioc, http_address));
  impl_->https_acceptor.emplace(open_acceptor(impl_->ioc, https_address));
  impl_->http_endpoint = impl_->http_acceptor->local_endpoint();
  impl_->https_endpoint = impl_->https_acceptor->local_endpoint();
}

std::string Server::http_endpoint() const { return endpoint_text(impl_->http_endpoint); }
std::string Server::https_endpoint() const { return endpoint_text(impl_->https_endpoint); }

void Server::start() {
  if (!impl_->http_acceptor || !impl_->https_acceptor) {
    throw std::logic_error("Server::start() before bind()");
  }
  auto done = [](std::exception_ptr e) { log_task_exception("listener", e); };
  asio::co_spawn(impl_->ioc, accept_loop(std::move(*impl_->http_acceptor), impl_->shared, false),
                 done);
  asio::co_spawn(impl_->ioc, accept_loop(std::move(*impl_->https_acceptor), impl_->shared, true),
                 done);
  impl_->http_acceptor.reset();
  impl_->https_acceptor.reset();
}

}  // namespace ficbroker::emulator
