// `ficbroker probe URL`: a tiny synchronous HTTP GET for container health checks (the runtime
// image has no curl). Blocking I/O is fine here: this is a separate, short-lived process.
#include "ficbroker/app/daemon.hpp"
#include "ficbroker/util/url.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <cstdio>

namespace ficbroker {

int run_probe(const std::string& url_text) {
  namespace beast = boost::beast;
  namespace http = beast::http;
  const auto url = parse_url(url_text);
  if (!url || url->is_https()) {
    std::fprintf(stderr, "ficbroker probe: need an http:// URL\n");
    return 2;
  }
  try {
    boost::asio::io_context ioc;
    boost::asio::ip::tcp::resolver resolver(ioc);
    beast::tcp_stream stream(ioc);
    stream.expires_after(std::chrono::seconds(3));
    stream.connect(resolver.resolve(url->host, std::to_string(url->port)));
    http::request<http::empty_body> req{http::verb::get, url->path, 11};
    req.set(http::field::host, url->host_header());
    req.set("Metadata", "true");
    http::write(stream, req);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(1 << 20);
    http::read(stream, buffer, parser);
    const unsigned status = parser.get().result_int();
    std::printf("%u\n", status);
    return status == 200 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ficbroker probe: %s\n", e.what());
    return 1;
  }
}

}  // namespace ficbroker
