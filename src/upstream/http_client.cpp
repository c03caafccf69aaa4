#include "ficbroker/upstream/http_client.hpp"

#include "ficbroker/util/encoding.hpp"
#include "ficbroker/util/error.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <openssl/ssl.h>

#include <deque>
#include <map>
#include <stdexcept>

namespace ficbroker {
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

namespace {

using Deadline = std::chrono::steady_clock::time_point;

struct Connection {
  std::unique_ptr<beast::tcp_stream> plain;
  std::unique_ptr<ssl::stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;
  Deadline idle_since{};

  explicit Connection(std::size_t buffer_limit) : buffer(buffer_limit) {}
  beast::tcp_stream& lowest() { return tls ? tls->next_layer() : *plain; }
};

struct ResolveState {
  explicit ResolveState(asio::any_io_executor ex) : done(std::move(ex)) {
    done.expires_at(Deadline::max());
  }
  asio::steady_timer done;
  bool finished = false;
  error_code ec;
  tcp::resolver::results_type results;
};

// getaddrinfo ignores cancellation, so the lookup runs as its own task and the caller waits on a
// deadline instead; a lookup that outlives its caller just finishes into a state nobody reads.
asio::awaitable<void> resolve_into(std::shared_ptr<ResolveState> state, std::string host,
                                   std::string port) {
  tcp::resolver resolver(co_await asio::this_coro::executor);
  auto [ec, results] = co_await resolver.async_resolve(host, port, use_nothrow);
  state->ec = ec;
  state->results = std::move(results);
  state->finished = true;
  state->done.cancel();
}

// More interim (1xx) answers than this before the final one is an upstream that misbehaves.
constexpr int kMaxInterimResponses = 8;

error_code map_error(const error_code& ec) {
  if (ec == beast::error::timeout) return make_error_code(errc::upstream_timeout);
  if (ec == http::error::body_limit || ec == http::error::header_limit ||
      ec == http::error::buffer_overflow) {
    return make_error_code(errc::too_large);
  }
  return ec;
}

// A reused keep-alive connection the server had already closed fails like this before any byte of
// the response arrives; such a request is retried once on a fresh connection.
bool is_stale_connection(const error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == ssl::error::stream_truncated;
}

// OpenSSL's SSL_set_tlsext_host_name is a macro with an old-style cast.
bool set_sni(SSL* ssl_handle, const std::string& host) {
  return SSL_set_tlsext_host_name(ssl_handle, host.c_str()) == 1;
}

}  // namespace

ProxySettings proxy_from_env(const std::function<std::optional<std::string>(std::string_view)>& env,
                             std::string* error) {
  ProxySettings settings;
  auto proxy = env("HTTPS_PROXY");
  if (!proxy || proxy->empty()) proxy = env("https_proxy");
  if (proxy && !proxy->empty()) {
    auto url = parse_url(*proxy);
    if (url && !url->is_https()) {
      settings.https_proxy = url;
    } else if (error) {
      *error = "HTTPS_PROXY must be http://host[:port] (no credentials); ignoring it";
    }
  }
  auto no_proxy = env("NO_PROXY");
  if (!no_proxy || no_proxy->empty()) no_proxy = env("no_proxy");
  if (no_proxy) {
    std::string_view list = *no_proxy;
    while (!list.empty()) {
      const auto comma = list.find(',');
      std::string entry = ascii_lower(list.substr(0, comma));
      entry.erase(0, entry.find_first_not_of(" \t"));
      entry.erase(entry.find_last_not_of(" \t") + 1);
      if (!entry.empty()) settings.no_proxy.push_back(entry);
      if (comma == std::string_view::npos) break;
      list.remove_prefix(comma + 1);
    }
  }
  return settings;
}

bool use_proxy(const ProxySettings& proxy, const Url& target) {
  if (!proxy.https_proxy || !target.is_https() || is_loopback_or_link_local(target.host)) {
    return false;
  }
  for (const auto& entry : proxy.no_proxy) {
    if (entry == "*") return false;
    std::string_view e = entry;
    if (!e.empty() && e.front() == '.') e.remove_prefix(1);
    // host:port entries match the port too
    if (const auto colon = e.rfind(':'); colon != std::string_view::npos &&
                                         e.find(']') == std::string_view::npos &&
                                         e.find(':') == colon) {
      if (e.substr(colon + 1) != std::to_string(target.port)) continue;
      e = e.substr(0, colon);
    }
    const std::string_view host = target.host;
    if (host == e) return false;
    if (host.size() > e.size() && host.ends_with(e) && host[host.size() - e.size() - 1] == '.') {
      return false;
    }
  }
  return true;
}

std::unique_ptr<ssl::context> make_client_tls_context(const std::string& ca_file) {
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                   ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  ctx->set_default_verify_paths();
  if (!ca_file.empty()) ctx->load_verify_file(ca_file);
  ctx->set_verify_mode(ssl::verify_peer);
  return ctx;
}

struct HttpClient::Impl {
  asio::any_io_executor executor;
  ssl::context& tls;
  ClientLimits limits;
  ProxySettings proxy;
  std::map<std::string, std::deque<std::unique_ptr<Connection>>> idle;
  std::uint64_t opened = 0;

  static std::string pool_key(const Url& url) {
    return url.scheme + "://" + url.host + ":" + std::to_string(url.port);
  }

  std::unique_ptr<Connection> take_idle(const std::string& key) {
    auto it = idle.find(key);
    if (it == idle.end()) return nullptr;
    const auto now = std::chrono::steady_clock::now();
    while (!it->second.empty()) {
      auto conn = std::move(it->second.back());
      it->second.pop_back();
      if (now - conn->idle_since < limits.idle_keepalive) return conn;
    }
    return nullptr;
  }

  void put_idle(const std::string& key, std::unique_ptr<Connection> conn) {
    auto& list = idle[key];
    if (list.size() >= limits.max_idle_per_host) return;
    conn->idle_since = std::chrono::steady_clock::now();
    list.push_back(std::move(conn));
  }

  asio::awaitable<result<tcp::resolver::results_type>> resolve(const Url& url, Deadline deadline) {
    error_code ec;
    const auto address = asio::ip::make_address(url.host, ec);
    if (!ec) {
      co_return tcp::resolver::results_type::create(tcp::endpoint(address, url.port), url.host,
                                                    std::to_string(url.port));
    }
    auto state = std::make_shared<ResolveState>(executor);
    // A lookup that ends in an exception (a bug, or bad_alloc) still wakes its caller, with an
    // error instead of a hang until the deadline.
    asio::co_spawn(executor, resolve_into(state, url.host, std::to_string(url.port)),
                   [state](std::exception_ptr e) {
                     if (!e || state->finished) return;
                     state->ec = make_error_code(errc::bad_upstream_response);
                     state->finished = true;
                     state->done.cancel();
                   });
    state->done.expires_at(deadline);
    co_await state->done.async_wait(use_nothrow);
    if (!state->finished) co_return make_error_code(errc::upstream_timeout);
    if (state->ec) co_return state->ec;
    co_return state->results;
  }

  // Opens a CONNECT tunnel through the proxy to `url`; the stream then speaks to the target.
  asio::awaitable<error_code> open_tunnel(beast::tcp_stream& stream, const Url& url,
                                          Deadline deadline) {
    const std::string authority = url.host_header().find(':') == std::string::npos
                                      ? url.host_header() + ":" + std::to_string(url.port)
                                      : url.host_header();
    const std::string request =
        "CONNECT " + authority + " HTTP/1.1\r\nHost: " + authority + "\r\n\r\n";
    stream.expires_at(deadline);
    auto [write_ec, written] =
        co_await asio::async_write(stream, asio::buffer(request), use_nothrow);
    if (write_ec) co_return map_error(write_ec);
    // Read the proxy's answer byte-wise up to the blank line: nothing of the tunnel may be
    // consumed into a buffer the TLS layer would not see.
    std::string head;
    char c = 0;
    while (head.size() < 8192 && !head.ends_with("\r\n\r\n")) {
      auto [read_ec, n] = co_await stream.async_read_some(asio::buffer(&c, 1), use_nothrow);
      if (read_ec) co_return map_error(read_ec);
      head.push_back(c);
    }
    if (!head.ends_with("\r\n\r\n") ||
        !(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"))) {
      co_return make_error_code(asio::error::connection_refused);
    }
    co_return error_code{};
  }

  asio::awaitable<result<std::unique_ptr<Connection>>> connect(const Url& url, Deadline deadline) {
    const auto connect_deadline =
        std::min(deadline, std::chrono::steady_clock::now() + limits.connect_timeout);
    const bool proxied = use_proxy(proxy, url);
    const Url& first_hop = proxied ? *proxy.https_proxy : url;
    auto endpoints = co_await resolve(first_hop, connect_deadline);
    if (!endpoints) co_return endpoints.error();
    auto conn = std::make_unique<Connection>(limits.max_response_header + limits.max_response_body);
    beast::tcp_stream stream(executor);
    stream.expires_at(connect_deadline);
    auto [ec, endpoint] = co_await stream.async_connect(*endpoints, use_nothrow);
    if (ec) co_return map_error(ec);
    ++opened;
    error_code ignored;
    stream.socket().set_option(tcp::no_delay(true), ignored);
    if (proxied) {
      if (auto tunnel_ec = co_await open_tunnel(stream, url, connect_deadline)) co_return tunnel_ec;
    }
    if (!url.is_https()) {
      conn->plain = std::make_unique<beast::tcp_stream>(std::move(stream));
      co_return conn;
    }
    conn->tls = std::make_unique<ssl::stream<beast::tcp_stream>>(std::move(stream), tls);
    error_code host_ec;
    asio::ip::make_address(url.host, host_ec);
    if (host_ec && !set_sni(conn->tls->native_handle(), url.host)) {
      co_return make_error_code(asio::error::invalid_argument);
    }
    conn->tls->set_verify_callback(ssl::host_name_verification(url.host));
    conn->tls->next_layer().expires_at(connect_deadline);
    auto [hs_ec] = co_await conn->tls->async_handshake(ssl::stream_base::client, use_nothrow);
    if (hs_ec) co_return map_error(hs_ec);
    co_return conn;
  }

  template <class Stream>
  asio::awaitable<result<HttpResponse>> exchange(Stream& stream, Connection& conn,
                                                 const HttpRequest& request, Deadline deadline,
                                                 bool& keep_alive) {
    http::request<http::string_body> req;
    req.method(http::string_to_verb(request.method));
    req.target(request.target.empty() ? request.url.path : request.target);
    req.version(11);
    req.set(http::field::host, request.url.host_header());
    req.set(http::field::user_agent, "ficbroker/0.1");
    for (const auto& [name, value] : request.headers) req.set(name, value);
    req.keep_alive(true);
    if (!request.body.empty() || req.method() == http::verb::post) {
      req.body() = request.body;
      req.prepare_payload();
    }
    conn.lowest().expires_at(deadline);
    auto [write_ec, written] = co_await http::async_write(stream, req, use_nothrow);
    if (write_ec) co_return write_ec;

    // Interim answers (103 Early Hints, a stray 100 Continue) come before the real one (RFC 9110
    // 15.2): skip them, or the real answer would stay in the connection for the next caller.
    for (int interim = 0; interim <= kMaxInterimResponses; ++interim) {
      http::response_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(limits.max_response_header));
      parser.body_limit(limits.max_response_body);
      auto [read_ec, read] = co_await http::async_read(stream, conn.buffer, parser, use_nothrow);
      if (read_ec) co_return read_ec;
      auto res = parser.release();
      const unsigned status = res.result_int();
      if (status == 101) co_return make_error_code(errc::bad_upstream_response);  // not HTTP now
      if (status >= 100 && status < 200) continue;
      HttpResponse out;
      out.status = status;
      out.retry_after = std::string(res[http::field::retry_after]);
      out.content_type = std::string(res[http::field::content_type]);
      out.body = std::move(res.body());
      // Bytes after the answer were not asked for: a connection holding them is not reused.
      keep_alive = res.keep_alive() && conn.buffer.size() == 0;
      co_return out;
    }
    co_return make_error_code(errc::bad_upstream_response);
  }

  asio::awaitable<result<HttpResponse>> send(HttpRequest request) {
    const auto deadline = std::chrono::steady_clock::now() + limits.request_timeout;
    const std::string key = pool_key(request.url);
    for (int attempt = 0; attempt < 2; ++attempt) {
      auto conn = take_idle(key);
      const bool reused = conn != nullptr;
      if (!conn) {
        auto connected = co_await connect(request.url, deadline);
        if (!connected) co_return connected.error();
        conn = std::move(*connected);
      }
      bool keep_alive = false;
      // Not a ?: expression: GCC 12 destroys the result of a co_await inside a conditional
      // operator twice.
      result<HttpResponse> response = make_error_code(asio::error::not_connected);
      if (conn->tls) {
        response = co_await exchange(*conn->tls, *conn, request, deadline, keep_alive);
      } else {
        response = co_await exchange(*conn->plain, *conn, request, deadline, keep_alive);
      }
      if (response) {
        if (keep_alive) put_idle(key, std::move(conn));
        co_return response;
      }
      if (!(reused && is_stale_connection(response.error()))) {
        co_return map_error(response.error());
      }
    }
    co_return make_error_code(asio::error::connection_reset);
  }
};

HttpClient::HttpClient(asio::any_io_executor executor, ssl::context& tls, ClientLimits limits,
                       ProxySettings proxy)
    : impl_(
          std::make_unique<Impl>(Impl{std::move(executor), tls, limits, std::move(proxy), {}, 0})) {
}

HttpClient::~HttpClient() = default;

asio::awaitable<result<HttpResponse>> HttpClient::send(HttpRequest request) {
  return impl_->send(std::move(request));
}

std::uint64_t HttpClient::connections_opened() const noexcept { return impl_->opened; }

}  // namespace ficbroker
