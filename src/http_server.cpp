#include "ficbroker/http_server.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <list>

namespace ficbroker {
namespace http = beast::http;
using tcp = asio::ip::tcp;
using unix_socket = asio::local::stream_protocol;

namespace {

std::optional<std::string_view> header(const http::request<http::string_body>& req,
                                       http::field field) {
  const auto it = req.find(field);
  if (it == req.end()) return std::nullopt;
  return std::string_view(it->value().data(), it->value().size());
}

std::optional<std::string_view> header(const http::request<http::string_body>& req,
                                       std::string_view name) {
  const auto it = req.find(beast::string_view(name.data(), name.size()));
  if (it == req.end()) return std::nullopt;
  return std::string_view(it->value().data(), it->value().size());
}

}  // namespace

struct HttpServer::Impl : std::enable_shared_from_this<Impl> {
  // A live connection, so stop() can close the ones that are waiting for a request.
  struct Session {
    std::function<void()> close;
    bool busy = false;
  };

  asio::any_io_executor executor;
  Handler handler;
  ServerLimits limits;
  Logger& log;
  Metrics& metrics;
  std::vector<std::unique_ptr<tcp::acceptor>> tcp_acceptors;
  std::vector<std::unique_ptr<unix_socket::acceptor>> unix_acceptors;
  std::list<Session> sessions;
  bool stopping = false;

  Impl(asio::any_io_executor ex, Handler h, ServerLimits l, Logger& lg, Metrics& m)
      : executor(std::move(ex)), handler(std::move(h)), limits(l), log(lg), metrics(m) {}

  static http::response<http::string_body> make_response(const Reply& reply, unsigned version,
                                                         bool keep_alive) {
    http::response<http::string_body> res{static_cast<http::status>(reply.status), version};
    res.set(http::field::content_type, reply.content_type);
    res.set(http::field::cache_control, "no-store");
    if (reply.retry_after_seconds > 0) {
      res.set(http::field::retry_after, std::to_string(reply.retry_after_seconds));
    }
    res.keep_alive(keep_alive);
    res.body() = reply.body;
    res.prepare_payload();
    return res;
  }

  auto log_exit(const char* what) {
    return [self = shared_from_this(), what](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        self->log.error("task_failed", {{"task", what}, {"what", ex.what()}});
      }
    };
  }

  template <class Protocol>
  asio::awaitable<void> run_session(typename Protocol::socket socket) {
    beast::basic_stream<Protocol, asio::any_io_executor, beast::unlimited_rate_policy> stream(
        std::move(socket));
    auto self = shared_from_this();
    sessions.push_back(Session{});
    auto me = std::prev(sessions.end());
    me->close = [&stream] { stream.close(); };
    metrics.set_connections(static_cast<std::int64_t>(sessions.size()));

    beast::flat_buffer buffer(limits.max_header_bytes + limits.max_body_bytes);
    bool first = true;
    while (!stopping) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(limits.max_header_bytes));
      parser.body_limit(limits.max_body_bytes);
      stream.expires_after(first ? limits.header_timeout : limits.idle_timeout);
      first = false;
      me->busy = false;
      auto [read_ec, read_bytes] = co_await http::async_read(stream, buffer, parser, use_nothrow);
      if (read_ec) {
        unsigned status = 0;
        if (read_ec == http::error::header_limit) {
          status = 431;
        } else if (read_ec == http::error::body_limit) {
          status = 413;
        } else if (read_ec.category() == make_error_code(http::error::end_of_stream).category() &&
                   read_ec != http::error::end_of_stream && read_ec != http::error::partial_message) {
          status = 400;
        }
        if (status != 0) {
          // Tell a broken client why, then hang up: its stream position is unknown now.
          Reply reply = error_reply(status, "invalid_request",
                                    status == 431   ? "request headers too large"
                                    : status == 413 ? "request body too large"
                                                    : "malformed HTTP request",
                                    Route::none);
          metrics.count_request(Route::none, status);
          auto res = make_response(reply, 11, false);
          stream.expires_after(limits.write_timeout);
          co_await http::async_write(stream, res, use_nothrow);
        }
        break;
      }
      me->busy = true;
      const auto started = std::chrono::steady_clock::now();
      auto& req = parser.get();
      RequestView view;
      view.method = std::string_view(req.method_string().data(), req.method_string().size());
      view.target = std::string_view(req.target().data(), req.target().size());
      view.host = header(req, http::field::host);
      view.metadata = header(req, "Metadata");
      view.identity_header = header(req, "X-IDENTITY-HEADER");
      view.secret = header(req, "secret");
      view.forwarded = req.find("X-Forwarded-For") != req.end() ||
                       req.find(http::field::forwarded) != req.end();
      view.content_type = header(req, http::field::content_type).value_or(std::string_view{});
      view.body = req.body();
      Reply reply = co_await handler(view);
      const bool keep_alive = req.keep_alive() && !stopping;
      auto res = make_response(reply, req.version(), keep_alive);
      if (req.method() == http::verb::head) res.body().clear();
      metrics.observe_request(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
      stream.expires_after(limits.write_timeout);
      auto [write_ec, written] = co_await http::async_write(stream, res, use_nothrow);
      if (write_ec || !keep_alive) break;
    }
    error_code ignored;
    stream.socket().shutdown(Protocol::socket::shutdown_send, ignored);
    sessions.erase(me);
    metrics.set_connections(static_cast<std::int64_t>(sessions.size()));
  }

  template <class Protocol>
  asio::awaitable<void> reject_overload(typename Protocol::socket socket) {
    // Over the connection limit: a short, canned answer beats a silent hang.
    beast::basic_stream<Protocol, asio::any_io_executor, beast::unlimited_rate_policy> stream(
        std::move(socket));
    Reply reply = error_reply(503, "temporarily_unavailable",
                              "too many connections; retry shortly", Route::none, 1);
    auto res = make_response(reply, 11, false);
    stream.expires_after(std::chrono::seconds(1));
    co_await http::async_write(stream, res, use_nothrow);
  }

  void spawn_session_tcp(tcp::socket socket) {
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    if (sessions.size() >= limits.max_connections) {
      metrics.count_connection_rejected();
      asio::co_spawn(executor, reject_overload<tcp>(std::move(socket)), log_exit("overload"));
      return;
    }
    asio::co_spawn(executor, run_session<tcp>(std::move(socket)), log_exit("session"));
  }

  asio::awaitable<void> accept_tcp(tcp::acceptor& acceptor) {
    auto self = shared_from_this();
    while (!stopping) {
      auto [ec, socket] = co_await acceptor.async_accept(use_nothrow);
      if (ec == asio::error::operation_aborted || stopping) co_return;
      if (ec) {
        // EMFILE and friends: back off instead of spinning on a failing accept().
        log.warn("accept_failed", {{"error", ec.message()}});
        asio::steady_timer backoff(executor, std::chrono::milliseconds(50));
        co_await backoff.async_wait(use_nothrow);
        continue;
      }
      spawn_session_tcp(std::move(socket));
    }
  }

  asio::awaitable<void> accept_unix(unix_socket::acceptor& acceptor,
                                    std::vector<std::uint32_t> allowed_uids) {
    auto self = shared_from_this();
    while (!stopping) {
      auto [ec, socket] = co_await acceptor.async_accept(use_nothrow);
      if (ec == asio::error::operation_aborted || stopping) co_return;
      if (ec) {
        asio::steady_timer backoff(executor, std::chrono::milliseconds(50));
        co_await backoff.async_wait(use_nothrow);
        continue;
      }
      if (!allowed_uids.empty()) {
        ucred cred{};
        socklen_t len = sizeof cred;
        const bool ok =
            ::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
            std::find(allowed_uids.begin(), allowed_uids.end(), cred.uid) != allowed_uids.end();
        if (!ok) {
          log.warn("peer_refused", {{"uid", static_cast<std::int64_t>(cred.uid)}});
          metrics.count_connection_rejected();
          continue;  // the socket closes as it goes out of scope
        }
      }
      if (sessions.size() >= limits.max_connections) {
        metrics.count_connection_rejected();
        asio::co_spawn(executor, reject_overload<unix_socket>(std::move(socket)),
                       log_exit("overload"));
        continue;
      }
      asio::co_spawn(executor, run_session<unix_socket>(std::move(socket)), log_exit("session"));
    }
  }
};

HttpServer::HttpServer(asio::any_io_executor executor, Handler handler, ServerLimits limits,
                       Logger& log, Metrics& metrics)
    : impl_(std::make_shared<Impl>(std::move(executor), std::move(handler), limits, log,
                                   metrics)) {}

HttpServer::~HttpServer() { stop(); }

std::uint16_t HttpServer::listen_tcp(const std::string& host, std::uint16_t port) {
  const auto address = asio::ip::make_address(host);
  auto acceptor = std::make_unique<tcp::acceptor>(impl_->executor);
  const tcp::endpoint endpoint(address, port);
  acceptor->open(endpoint.protocol());
  acceptor->set_option(tcp::acceptor::reuse_address(true));
  acceptor->bind(endpoint);
  acceptor->listen(asio::socket_base::max_listen_connections);
  const auto bound = acceptor->local_endpoint().port();
  auto& ref = *acceptor;
  impl_->tcp_acceptors.push_back(std::move(acceptor));
  asio::co_spawn(impl_->executor, impl_->accept_tcp(ref), impl_->log_exit("accept"));
  return bound;
}

void HttpServer::listen_unix(const std::string& path, std::vector<std::uint32_t> allowed_uids) {
  ::unlink(path.c_str());
  auto acceptor = std::make_unique<unix_socket::acceptor>(impl_->executor);
  const unix_socket::endpoint endpoint(path);
  acceptor->open(endpoint.protocol());
  acceptor->bind(endpoint);
  ::chmod(path.c_str(), 0660);
  acceptor->listen(asio::socket_base::max_listen_connections);
  auto& ref = *acceptor;
  impl_->unix_acceptors.push_back(std::move(acceptor));
  asio::co_spawn(impl_->executor, impl_->accept_unix(ref, std::move(allowed_uids)),
                 impl_->log_exit("accept"));
}

void HttpServer::stop() {
  if (!impl_ || impl_->stopping) return;
  impl_->stopping = true;
  error_code ignored;
  for (auto& a : impl_->tcp_acceptors) a->close(ignored);
  for (auto& a : impl_->unix_acceptors) a->close(ignored);
  for (auto& s : impl_->sessions) {
    if (!s.busy) s.close();
  }
}

std::size_t HttpServer::open_connections() const noexcept { return impl_->sessions.size(); }

}  // namespace ficbroker
