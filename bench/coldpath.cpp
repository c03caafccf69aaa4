// ficbroker_coldpath: cache-miss latency through ficbroker, next to the same upstream calls made
// directly by this client, so the two can be subtracted. Synchronous Beast client, one thread
// (except `fill`), steady_clock around each whole request/response.
//
//   misses  N misses on distinct resources through one kept-alive connection to ficbroker, after
//           a warm-up request that caches the assertion and opens ficbroker's upstream
//           connections. A miss is then exactly one Entra exchange made by ficbroker over its
//           pooled TLS connection. After each miss the client makes the same exchange itself
//           (same tenant, app, scope, assertion; its own kept-alive TLS connection), then the
//           same IMDS call (kept-alive). One line per sample:
//             sample <i> <status> <miss_ms> <direct_entra_ms> <direct_entra_emu_us>
//                    <direct_imds_ms> <direct_imds_emu_us>
//   cold    One miss on a freshly started ficbroker (IMDS call + Entra exchange, both on new
//           connections, TLS handshake included), then the same two calls made directly, each
//           on a new connection. One line:
//             cold <status> <miss_ms> <direct_imds_ms> <direct_imds_emu_us> <direct_entra_ms>
//                  <direct_entra_emu_us>
//   fill    N distinct resources through ficbroker on C kept-alive connections (C threads);
//           prints counts by status and the elapsed time.
//
// Around `misses` and `cold` it asks the emulator for /_emulator/mark/begin and /_emulator/mark/end
// (a 404 that the emulator's request log records): bench/report.py reads the emulator's own time
// for each of ficbroker's upstream calls between the two marks.
//
// Common options: --broker H:P --imds H:P --entra H:P --ca FILE --tenant T --app A --uami U
//                 --prefix https://res- --suffix .example --from I --count N [--connections C]
//                 [--resource R (cold)]
#include "ficbroker/util/encoding.hpp"
#include "ficbroker/util/token.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

struct HostPort {
  std::string host;
  std::string port;
};

HostPort split_host_port(const std::string& s) {
  const auto colon = s.rfind(':');
  if (colon == std::string::npos) throw std::invalid_argument("expected HOST:PORT, got " + s);
  return {s.substr(0, colon), s.substr(colon + 1)};
}

struct Options {
  std::string mode;
  HostPort broker, imds, entra;
  std::string ca;
  std::string tenant = "22222222-2222-2222-2222-222222222222";
  std::string app = "cccccccc-0000-0000-0000-000000000001";
  std::string uami = "aaaaaaaa-0000-0000-0000-000000000001";
  std::string prefix = "https://res-";
  std::string suffix = ".example";
  std::string resource = "https://graph.microsoft.com";
  std::size_t from = 0;
  std::size_t count = 200;
  std::size_t connections = 8;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "ficbroker_coldpath: %s\n"
               "usage: ficbroker_coldpath misses|cold|fill --broker H:P [--imds H:P --entra H:P "
               "--ca FILE]\n"
               "       [--tenant T] [--app A] [--uami U] [--prefix P] [--suffix S] [--from I]\n"
               "       [--count N] [--connections C] [--resource R]\n",
               why.c_str());
  std::exit(2);
}

Options parse(int argc, char** argv) {
  if (argc < 2) usage("missing mode");
  Options o;
  o.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage("missing value for " + std::string(arg));
      return argv[++i];
    };
    if (arg == "--broker")
      o.broker = split_host_port(value());
    else if (arg == "--imds")
      o.imds = split_host_port(value());
    else if (arg == "--entra")
      o.entra = split_host_port(value());
    else if (arg == "--ca")
      o.ca = value();
    else if (arg == "--tenant")
      o.tenant = value();
    else if (arg == "--app")
      o.app = value();
    else if (arg == "--uami")
      o.uami = value();
    else if (arg == "--prefix")
      o.prefix = value();
    else if (arg == "--suffix")
      o.suffix = value();
    else if (arg == "--resource")
      o.resource = value();
    else if (arg == "--from")
      o.from = std::stoul(value());
    else if (arg == "--count")
      o.count = std::stoul(value());
    else if (arg == "--connections")
      o.connections = std::stoul(value());
    else
      usage("unknown argument " + std::string(arg));
  }
  if (o.broker.host.empty()) usage("--broker is required");
  if (o.mode != "fill" && (o.imds.host.empty() || o.entra.host.empty() || o.ca.empty())) {
    usage("--imds, --entra and --ca are required for " + o.mode);
  }
  if (o.count == 0 || o.count > 1'000'000) usage("--count must be 1..1000000");
  if (o.connections == 0 || o.connections > 256) usage("--connections must be 1..256");
  return o;
}

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

struct Answer {
  unsigned status = 0;
  double ms = 0;
  long emu_us = -1;  // X-Emulator-Time-Us, when the emulator answered
  std::string body;
};

template <class Stream>
Answer round_trip(Stream& stream, beast::flat_buffer& buffer,
                  const http::request<http::string_body>& req, Clock::time_point t0) {
  http::write(stream, req);
  http::response<http::string_body> res;
  http::read(stream, buffer, res);
  Answer a;
  a.ms = ms_since(t0);
  a.status = res.result_int();
  const auto emu = res.find("X-Emulator-Time-Us");
  if (emu != res.end()) a.emu_us = std::stol(std::string(emu->value()));
  a.body = std::move(res.body());
  return a;
}

// A kept-alive plain HTTP connection.
class PlainConn {
 public:
  PlainConn(asio::io_context& ioc, HostPort target) : ioc_(ioc), target_(std::move(target)) {}

  void connect() {
    stream_.emplace(ioc_);
    tcp::resolver resolver(ioc_);
    asio::connect(*stream_, resolver.resolve(target_.host, target_.port));
    stream_->set_option(tcp::no_delay(true));
    buffer_.clear();
  }
  void close() {
    if (!stream_) return;
    boost::system::error_code ignored;
    stream_->shutdown(tcp::socket::shutdown_both, ignored);
    stream_->close(ignored);
    stream_.reset();
  }

  // `fresh`: a new connection, its set-up inside the timed span.
  Answer get(const std::string& target,
             const std::vector<std::pair<std::string, std::string>>& headers, bool fresh = false) {
    http::request<http::string_body> req{http::verb::get, target, 11};
    req.set(http::field::host, target_.host + ":" + target_.port);
    for (const auto& [k, v] : headers) req.set(k, v);
    req.keep_alive(true);
    const auto t0 = Clock::now();
    if (fresh || !stream_) {
      close();
      connect();
    }
    return round_trip(*stream_, buffer_, req, t0);
  }

 private:
  asio::io_context& ioc_;
  HostPort target_;
  std::optional<tcp::socket> stream_;
  beast::flat_buffer buffer_;
};

// A kept-alive TLS connection to the emulated Entra, verified as ficbroker verifies it: the
// emulator's CA, SNI and host name "localhost".
class TlsConn {
 public:
  TlsConn(asio::io_context& ioc, HostPort target, ssl::context& ctx)
      : ioc_(ioc), target_(std::move(target)), ctx_(ctx) {}

  void connect() {
    stream_.emplace(ioc_, ctx_);
    tcp::resolver resolver(ioc_);
    asio::connect(stream_->next_layer(), resolver.resolve(target_.host, target_.port));
    stream_->next_layer().set_option(tcp::no_delay(true));
    if (SSL_set_tlsext_host_name(stream_->native_handle(), "localhost") != 1) {
      throw std::runtime_error("SNI");
    }
    stream_->set_verify_callback(ssl::host_name_verification("localhost"));
    stream_->handshake(ssl::stream_base::client);
    buffer_.clear();
  }
  void close() {
    if (!stream_) return;
    boost::system::error_code ignored;
    stream_->next_layer().close(ignored);
    stream_.reset();
  }

  Answer post(const std::string& target, const std::string& body, bool fresh = false) {
    http::request<http::string_body> req{http::verb::post, target, 11};
    req.set(http::field::host, "localhost:" + target_.port);
    req.set(http::field::user_agent, "ficbroker/0.1");
    req.set(http::field::content_type, "application/x-www-form-urlencoded");
    req.set(http::field::accept, "application/json");
    req.keep_alive(true);
    req.body() = body;
    req.prepare_payload();
    const auto t0 = Clock::now();
    if (fresh || !stream_) {
      close();
      connect();
    }
    return round_trip(*stream_, buffer_, req, t0);
  }

 private:
  asio::io_context& ioc_;
  HostPort target_;
  ssl::context& ctx_;
  std::optional<ssl::stream<tcp::socket>> stream_;
  beast::flat_buffer buffer_;
};

std::string json_string_field(const std::string& body, const std::string& key) {
  const std::string needle = "\"" + key + "\":\"";
  const auto at = body.find(needle);
  if (at == std::string::npos) return {};
  const auto start = at + needle.size();
  const auto end = body.find('"', start);
  return end == std::string::npos ? std::string() : body.substr(start, end - start);
}

std::string broker_target(const std::string& resource) { return "/token?resource=" + resource; }

const std::vector<std::pair<std::string, std::string>> kMetadata{{"Metadata", "true"}};

struct Direct {
  Direct(asio::io_context& ioc, const Options& o)
      : opt(o), ctx(ssl::context::tls_client), imds(ioc, o.imds), entra(ioc, o.entra, ctx) {
    ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                    ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    ctx.set_default_verify_paths();
    ctx.load_verify_file(o.ca);
    ctx.set_verify_mode(ssl::verify_peer);
    imds_target = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" +
                  ficbroker::percent_encode("api://AzureADTokenExchange") +
                  "&client_id=" + ficbroker::percent_encode(o.uami);
    entra_target = "/" + ficbroker::percent_encode(o.tenant) + "/oauth2/v2.0/token";
  }

  Answer imds_call(bool fresh) { return imds.get(imds_target, kMetadata, fresh); }

  Answer entra_call(const std::string& resource, bool fresh) {
    std::string body =
        "grant_type=client_credentials&client_id=" + ficbroker::percent_encode(opt.app) +
        "&scope=" + ficbroker::percent_encode(ficbroker::resource_to_scope(resource)) +
        "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-"
        "type%3Ajwt-bearer&client_assertion=" +
        ficbroker::percent_encode(assertion);
    return entra.post(entra_target, body, fresh);
  }

  void fetch_assertion() {
    const Answer a = imds_call(false);
    assertion = json_string_field(a.body, "access_token");
    if (a.status != 200 || assertion.empty()) {
      throw std::runtime_error("direct IMDS call failed: HTTP " + std::to_string(a.status));
    }
  }

  const Options& opt;
  ssl::context ctx;
  PlainConn imds;
  TlsConn entra;
  std::string imds_target;
  std::string entra_target;
  std::string assertion;
};

void mark(PlainConn& emulator, const char* what) {
  emulator.get(std::string("/_emulator/mark/") + what, {});
}

int run_misses(const Options& o) {
  asio::io_context ioc;
  PlainConn broker(ioc, o.broker);
  PlainConn control(ioc, o.imds);
  Direct direct(ioc, o);

  // Warm-up: ficbroker fetches and caches the assertion and opens its pooled upstream
  // connections; this client does the same for its direct calls.
  const Answer warm = broker.get(broker_target(o.resource), kMetadata);
  if (warm.status != 200) {
    std::fprintf(stderr, "warm-up request failed: HTTP %u %s\n", warm.status, warm.body.c_str());
    return 1;
  }
  direct.fetch_assertion();
  if (direct.entra_call(o.resource, false).status != 200) {
    std::fprintf(stderr, "direct Entra warm-up failed\n");
    return 1;
  }

  mark(control, "begin");
  int failures = 0;
  for (std::size_t i = o.from; i < o.from + o.count; ++i) {
    const std::string resource = o.prefix + std::to_string(i) + o.suffix;
    const Answer miss = broker.get(broker_target(resource), kMetadata);
    const Answer de = direct.entra_call(resource, false);
    const Answer di = direct.imds_call(false);
    if (miss.status != 200 || de.status != 200 || di.status != 200) ++failures;
    std::printf("sample %zu %u %.4f %.4f %ld %.4f %ld\n", i, miss.status, miss.ms, de.ms, de.emu_us,
                di.ms, di.emu_us);
  }
  mark(control, "end");
  return failures == 0 ? 0 : 1;
}

int run_cold(const Options& o) {
  asio::io_context ioc;
  PlainConn broker(ioc, o.broker);
  PlainConn control(ioc, o.imds);
  Direct direct(ioc, o);
  mark(control, "begin");
  // The client's own connection set-up to ficbroker is kept out of the timed span: only the miss.
  broker.connect();
  const Answer miss = broker.get(broker_target(o.resource), kMetadata);
  const Answer di = direct.imds_call(true);
  direct.assertion = json_string_field(di.body, "access_token");
  const Answer de = direct.entra_call(o.resource, true);
  mark(control, "end");
  std::printf("cold %u %.4f %.4f %ld %.4f %ld\n", miss.status, miss.ms, di.ms, di.emu_us, de.ms,
              de.emu_us);
  return miss.status == 200 && di.status == 200 && de.status == 200 ? 0 : 1;
}

int run_fill(const Options& o) {
  std::atomic<std::size_t> next{o.from};
  std::mutex mu;
  std::map<unsigned, std::size_t> by_status;
  std::size_t errors = 0;
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (std::size_t c = 0; c < o.connections; ++c) {
    threads.emplace_back([&] {
      asio::io_context ioc;
      PlainConn broker(ioc, o.broker);
      std::map<unsigned, std::size_t> mine;
      std::size_t my_errors = 0;
      for (;;) {
        const std::size_t i = next.fetch_add(1);
        if (i >= o.from + o.count) break;
        try {
          const Answer a =
              broker.get(broker_target(o.prefix + std::to_string(i) + o.suffix), kMetadata);
          ++mine[a.status];
        } catch (const std::exception&) {
          ++my_errors;
          broker.close();
        }
      }
      std::lock_guard lock(mu);
      for (const auto& [s, n] : mine) by_status[s] += n;
      errors += my_errors;
    });
  }
  for (auto& t : threads) t.join();
  std::printf("fill count=%zu connections=%zu elapsed_ms=%.1f errors=%zu", o.count, o.connections,
              ms_since(t0), errors);
  for (const auto& [s, n] : by_status) std::printf(" status_%u=%zu", s, n);
  std::printf("\n");
  return errors == 0 && by_status.size() == 1 && by_status.count(200) ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  try {
    if (o.mode == "misses") return run_misses(o);
    if (o.mode == "cold") return run_cold(o);
    if (o.mode == "fill") return run_fill(o);
    usage("unknown mode " + o.mode);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ficbroker_coldpath: %s\n", e.what());
    return 1;
  }
}
