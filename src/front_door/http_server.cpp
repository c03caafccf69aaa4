#include "ficbroker/front_door/http_server.hpp"

#include "ficbroker/core/metrics.hpp"
#include "ficbroker/front_door/accept_backoff.hpp"
#include "ficbroker/front_door/http_parser.hpp"
#include "ficbroker/front_door/router.hpp"
#include "ficbroker/util/task.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <list>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace ficbroker {
using tcp = asio::ip::tcp;
using unix_socket = asio::local::stream_protocol;
using SessionClock = std::chrono::steady_clock;

namespace {

std::string_view reason_phrase(unsigned status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

void append_number(std::string& out, std::uint64_t n) {
  char buf[24];
  const auto [ptr, ec] = std::to_chars(buf, buf + sizeof buf, n);
  out.append(buf, ptr);
}

// The response head, built into a string whose capacity the connection keeps between requests.
void build_head(std::string& head, const Reply& reply, bool keep_alive, bool http10) {
  head.clear();
  head.append(http10 ? "HTTP/1.0 " : "HTTP/1.1 ");
  append_number(head, reply.status);
  head.push_back(' ');
  head.append(reason_phrase(reply.status));
  head.append("\r\nContent-Type: ");
  head.append(reply.content_type);
  head.append("\r\nContent-Length: ");
  append_number(head, reply.body.size());
  head.append("\r\nCache-Control: no-store\r\n");
  if (reply.retry_after_seconds > 0) {
    head.append("Retry-After: ");
    append_number(head, static_cast<std::uint64_t>(reply.retry_after_seconds));
    head.append("\r\n");
  }
  if (!keep_alive) {
    head.append("Connection: close\r\n");
  } else if (http10) {
    head.append("Connection: keep-alive\r\n");
  }
  head.append("\r\n");
}

}  // namespace

struct HttpServer::Impl : std::enable_shared_from_this<Impl> {
  // A live connection: its deadline is enforced by one watchdog for all connections, so no
  // read or write arms a timer of its own.
  struct Session {
    std::function<void()> close;
    SessionClock::time_point deadline = SessionClock::time_point::max();
    bool busy = false;
  };

  asio::any_io_executor executor;
  Handler handler;
  ServerLimits limits;
  ParseLimits parse_limits;
  Logger& log;
  Metrics& metrics;
  std::vector<std::unique_ptr<tcp::acceptor>> tcp_acceptors;
  std::vector<std::unique_ptr<unix_socket::acceptor>> unix_acceptors;
  std::list<Session> sessions;
  asio::steady_timer watchdog;
  bool watchdog_running = false;
  bool stopping = false;

  Impl(asio::any_io_executor ex, Handler h, ServerLimits l, Logger& lg, Metrics& m)
      : executor(ex), handler(std::move(h)), limits(l), log(lg), metrics(m), watchdog(ex) {
    parse_limits.max_header_bytes = limits.max_header_bytes;
    parse_limits.max_body_bytes = limits.max_body_bytes;
  }

  asio::awaitable<void> run_watchdog() {
    auto self = shared_from_this();
    while (!stopping || !sessions.empty()) {
      watchdog.expires_after(std::chrono::milliseconds(200));
      co_await watchdog.async_wait(use_nothrow);
      const auto now = SessionClock::now();
      for (auto& s : sessions) {
        if (!s.busy && s.deadline < now) s.close();
      }
      if (stopping && sessions.empty()) break;
    }
  }

  void ensure_watchdog() {
    if (watchdog_running) return;
    watchdog_running = true;
    asio::co_spawn(
        executor, run_watchdog(),
        [self = shared_from_this(),
         exit = on_task_exit(log, "watchdog", TaskRole::must_not_die)](std::exception_ptr e) {
          self->watchdog_running = false;
          exit(e);
        });
  }

  template <class Socket>
  asio::awaitable<void> run_session(Socket socket) {
    auto self = shared_from_this();
    sessions.push_back(Session{});
    const auto me = std::prev(sessions.end());
    me->close = [&socket] {
      error_code ignored;
      socket.close(ignored);
    };
    me->deadline = SessionClock::now() + limits.header_timeout;
    metrics.set_connections(static_cast<std::int64_t>(sessions.size()));

    // Start small and grow up to the limits: most requests are a few hundred bytes, and a burst
    // of connections should not cost 24 KiB each.
    const std::size_t capacity = limits.max_header_bytes + limits.max_body_bytes;
    std::vector<char> storage(std::min<std::size_t>(2048, capacity));
    std::size_t used = 0;
    std::string head;
    head.reserve(256);
    while (true) {
      ParseResult parsed = parse_request(std::string_view(storage.data(), used), parse_limits);
      if (parsed.status == ParseStatus::incomplete) {
        if (stopping && used == 0) break;
        if (used == storage.size()) storage.resize(std::min(storage.size() * 2, capacity));
        auto [ec, n] = co_await socket.async_read_some(
            asio::buffer(storage.data() + used, storage.size() - used), use_nothrow);
        if (ec) break;  // closed by the peer, or by the watchdog at the deadline
        // A request has started: all of it must arrive within the header timeout (slowloris).
        if (used == 0) me->deadline = SessionClock::now() + limits.header_timeout;
        used += n;
        continue;
      }
      if (parsed.status != ParseStatus::complete) {
        // Tell a broken client why, then hang up: its position in the stream is unknown.
        const unsigned status = http_status_for(parsed.status);
        Reply reply = error_reply(status, "invalid_request", parsed.reason, Route::none);
        metrics.count_request(route_name(Route::none), status);
        build_head(head, reply, false, false);
        me->deadline = SessionClock::now() + limits.write_timeout;
        const std::array buffers{asio::buffer(head), asio::buffer(reply.body)};
        co_await asio::async_write(socket, buffers, use_nothrow);
        break;
      }
      me->busy = true;
      const auto started = SessionClock::now();
      const ParsedRequest& request = parsed.request;
      Reply reply = co_await handler(request.view);
      me->busy = false;
      const bool keep_alive = request.keep_alive && !stopping;
      build_head(head, reply, keep_alive, request.http10);
      metrics.observe_request(std::chrono::duration<double>(SessionClock::now() - started).count());
      me->deadline = SessionClock::now() + limits.write_timeout;
      std::array buffers{asio::buffer(head), asio::buffer(reply.body)};
      if (request.head) buffers[1] = asio::buffer(reply.body.data(), 0);
      auto [write_ec, written] = co_await asio::async_write(socket, buffers, use_nothrow);
      if (write_ec || !keep_alive) break;
      // Keep whatever the client pipelined after this request.
      const std::size_t rest = used - request.total_bytes;
      if (rest > 0) std::memmove(storage.data(), storage.data() + request.total_bytes, rest);
      used = rest;
      me->deadline = SessionClock::now() + (used > 0 ? limits.header_timeout : limits.idle_timeout);
    }
    error_code ignored;
    socket.shutdown(Socket::shutdown_send, ignored);
    socket.close(ignored);
    sessions.erase(me);
    metrics.set_connections(static_cast<std::int64_t>(sessions.size()));
  }

  template <class Socket>
  asio::awaitable<void> reject_overload(Socket socket) {
    // Over the connection limit: a short, canned answer beats a silent hang. The write is small
    // enough for the socket buffer, so it completes at once or not at all.
    Reply reply = error_reply(503, "temporarily_unavailable", "too many connections; retry shortly",
                              Route::none, 1);
    std::string head;
    build_head(head, reply, false, false);
    error_code ec;
    socket.non_blocking(true, ec);
    const std::array buffers{asio::buffer(head), asio::buffer(reply.body)};
    socket.write_some(buffers, ec);
    socket.close(ec);
    co_return;
  }

  template <class Socket>
  void start_session(Socket socket) {
    if (sessions.size() >= limits.max_connections) {
      metrics.count_connection_rejected();
      asio::co_spawn(executor, reject_overload(std::move(socket)),
                     on_task_exit(log, "overload", TaskRole::may_end));
      return;
    }
    ensure_watchdog();
    asio::co_spawn(executor, run_session(std::move(socket)),
                   on_task_exit(log, "session", TaskRole::may_end));
  }

  // One accept loop for every listener; `admit` decides, before anything is read, whether a peer
  // may talk to us (the Unix socket's uid allow-list).
  template <class Acceptor, class Admit>
  asio::awaitable<void> accept_loop(Acceptor& acceptor, Admit admit) {
    auto self = shared_from_this();
    AcceptBackoff backoff;
    asio::steady_timer pause(executor);
    while (!stopping) {
      auto [ec, socket] = co_await acceptor.async_accept(use_nothrow);
      if (ec == asio::error::operation_aborted || stopping) co_return;
      if (ec) {
        // EMFILE and friends: back off instead of spinning on a failing accept(), and say so
        // at a bounded rate.
        const auto step = backoff.failed(SessionClock::now());
        if (step.log) {
          log.warn("accept_failed",
                   {{"error", ec.message()}, {"suppressed", step.suppressed_since_last_log}});
        }
        pause.expires_after(step.delay);
        co_await pause.async_wait(use_nothrow);
        continue;
      }
      backoff.succeeded();
      if (admit(socket)) start_session(std::move(socket));
    }
  }

  bool admit_unix_peer(unix_socket::socket& socket, const std::vector<std::uint32_t>& allowed) {
    if (allowed.empty()) return true;
    ucred cred{};
    socklen_t len = sizeof cred;
    const bool ok =
        ::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
        std::find(allowed.begin(), allowed.end(), cred.uid) != allowed.end();
    if (!ok) {
      log.warn("peer_refused", {{"uid", static_cast<std::int64_t>(cred.uid)}});
      metrics.count_connection_rejected();
    }
    return ok;  // a refused socket closes as it goes out of scope, before anything is read
  }
};

HttpServer::HttpServer(asio::any_io_executor executor, Handler handler, ServerLimits limits,
                       Logger& log, Metrics& metrics)
    : impl_(std::make_shared<Impl>(std::move(executor), std::move(handler), limits, log, metrics)) {
}

HttpServer::~HttpServer() { stop(); }

namespace {

bool admit_tcp(tcp::socket& socket) {
  error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  return true;
}

}  // namespace

std::uint16_t HttpServer::serve_tcp(std::unique_ptr<tcp::acceptor> acceptor) {
  const auto bound = acceptor->local_endpoint().port();
  auto& ref = *acceptor;
  impl_->tcp_acceptors.push_back(std::move(acceptor));
  asio::co_spawn(impl_->executor, impl_->accept_loop(ref, admit_tcp),
                 on_task_exit(impl_->log, "accept", TaskRole::must_not_die));
  return bound;
}

void HttpServer::serve_unix(std::unique_ptr<unix_socket::acceptor> acceptor,
                            std::vector<std::uint32_t> allowed_uids) {
  auto& ref = *acceptor;
  impl_->unix_acceptors.push_back(std::move(acceptor));
  auto admit = [impl = impl_.get(), allowed = std::move(allowed_uids)](unix_socket::socket& s) {
    return impl->admit_unix_peer(s, allowed);
  };
  asio::co_spawn(impl_->executor, impl_->accept_loop(ref, std::move(admit)),
                 on_task_exit(impl_->log, "accept", TaskRole::must_not_die));
}

std::uint16_t HttpServer::listen_tcp(const std::string& host, std::uint16_t port) {
  const auto address = asio::ip::make_address(host);
  auto acceptor = std::make_unique<tcp::acceptor>(impl_->executor);
  const tcp::endpoint endpoint(address, port);
  acceptor->open(endpoint.protocol());
  acceptor->set_option(tcp::acceptor::reuse_address(true));
  acceptor->bind(endpoint);
  acceptor->listen(asio::socket_base::max_listen_connections);
  return serve_tcp(std::move(acceptor));
}

void HttpServer::listen_unix(const std::string& path, std::vector<std::uint32_t> allowed_uids) {
  ::unlink(path.c_str());
  auto acceptor = std::make_unique<unix_socket::acceptor>(impl_->executor);
  const unix_socket::endpoint endpoint(path);
  acceptor->open(endpoint.protocol());
  acceptor->bind(endpoint);
  ::chmod(path.c_str(), 0660);
  acceptor->listen(asio::socket_base::max_listen_connections);
  serve_unix(std::move(acceptor), std::move(allowed_uids));
}

std::string HttpServer::adopt_listener(int fd, const std::vector<std::uint32_t>& allowed_uids) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  int listening = 0;
  socklen_t flag_length = sizeof listening;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0 ||
      ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &flag_length) != 0 || !listening) {
    throw std::runtime_error("descriptor " + std::to_string(fd) + " is not a listening socket");
  }
  if (address.ss_family == AF_UNIX) {
    auto acceptor = std::make_unique<unix_socket::acceptor>(impl_->executor);
    acceptor->assign(unix_socket(), fd);
    const std::string path = acceptor->local_endpoint().path();
    serve_unix(std::move(acceptor), allowed_uids);
    return "unix:" + path;
  }
  if (address.ss_family != AF_INET && address.ss_family != AF_INET6) {
    throw std::runtime_error("descriptor " + std::to_string(fd) + " is not a TCP or Unix socket");
  }
  auto acceptor = std::make_unique<tcp::acceptor>(impl_->executor);
  acceptor->assign(address.ss_family == AF_INET ? tcp::v4() : tcp::v6(), fd);
  const auto endpoint = acceptor->local_endpoint();
  const std::string host = endpoint.address().to_string();
  serve_tcp(std::move(acceptor));
  return (endpoint.address().is_v6() ? "[" + host + "]" : host) + ":" +
         std::to_string(endpoint.port());
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
