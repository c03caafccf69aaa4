#include "http.hpp"

#include "ficbroker/util/encoding.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <sys/socket.h>
#include <sys/time.h>

namespace ficbroker::testing {
namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;

Response http_request(const std::string& host, unsigned short port, const std::string& method,
                      const std::string& target, const Headers& headers, const std::string& body,
                      std::chrono::milliseconds timeout) {
  asio::io_context ioc;
  beast::tcp_stream stream(ioc);
  stream.expires_after(timeout);
  stream.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  http::request<http::string_body> req{http::string_to_verb(method), target, 11};
  req.set(http::field::host, host + ":" + std::to_string(port));
  bool has_host = false;
  for (const auto& [name, value] : headers) {
    if (iequals(name, "host")) {
      has_host = true;
      req.set(http::field::host, value);
    } else {
      req.insert(name, value);
    }
  }
  (void)has_host;
  if (!body.empty() || method == "POST") {
    req.body() = body;
    req.prepare_payload();
  }
  http::write(stream, req);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(16 << 20);
  http::read(stream, buffer, parser);
  Response out;
  out.status = parser.get().result_int();
  out.body = parser.get().body();
  for (const auto& field : parser.get()) {
    out.headers[ascii_lower(std::string(field.name_string()))] = std::string(field.value());
  }
  return out;
}

std::string raw_exchange(unsigned short port, const std::string& bytes,
                         std::chrono::milliseconds timeout) {
  asio::io_context ioc;
  beast::tcp_stream stream(ioc);
  stream.expires_after(timeout);
  stream.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  // Blocking reads ignore the stream's timer: bound them with SO_RCVTIMEO instead.
  const auto usec = std::chrono::duration_cast<std::chrono::microseconds>(timeout).count();
  timeval tv{static_cast<time_t>(usec / 1000000), static_cast<suseconds_t>(usec % 1000000)};
  ::setsockopt(stream.socket().native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  asio::write(stream, asio::buffer(bytes));
  std::string out;
  char buf[4096];
  boost::system::error_code ec;
  for (;;) {
    const auto n = stream.read_some(asio::buffer(buf), ec);
    out.append(buf, n);
    if (ec) break;
  }
  return out;
}

}  // namespace ficbroker::testing
