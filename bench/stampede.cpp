// ficbroker_stampede: N concurrent first requests for one URL, in three phases:
//   1. open all N connections (and wait until every one is established),
//   2. send the N requests back to back (each connection's clock starts just before its write),
//   3. read the N responses (each connection's clock stops when its whole response is in).
// Prints one JSON object: counts by status, errors, and latency percentiles in milliseconds.
//
//   ficbroker_stampede --port P [--host 127.0.0.1] [--connections 1000]
//                      [--path '/token?resource=https://graph.microsoft.com']
//                      [--header 'Metadata: true'] [--timeout-ms 60000] [--latencies FILE]
//
// One thread, one io_context. Bounded: N connections, one request each, and an overall deadline
// after which every unfinished connection is closed and counted as an error.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
inline constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

namespace {

struct Options {
  std::string host = "127.0.0.1";
  unsigned short port = 0;
  std::size_t connections = 1000;
  std::string path = "/token?resource=https://graph.microsoft.com";
  std::vector<std::string> headers{"Metadata: true"};
  bool default_headers = true;
  long timeout_ms = 60000;
  std::string latencies_file;
};

struct Conn {
  explicit Conn(asio::io_context& ioc) : socket(ioc) {}
  tcp::socket socket;
  bool connected = false;
  bool done = false;
  unsigned status = 0;
  std::string error;
  Clock::time_point t0{}, t1{};
  std::string buffer;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "ficbroker_stampede: %s\n"
               "usage: ficbroker_stampede --port P [--host H] [--connections N] [--path P]\n"
               "                          [--header 'Name: value']... [--timeout-ms MS]\n"
               "                          [--latencies FILE]\n",
               why);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage("missing value");
      return argv[++i];
    };
    if (arg == "--host") {
      o.host = value();
    } else if (arg == "--port") {
      o.port = static_cast<unsigned short>(std::stoul(value()));
    } else if (arg == "--connections") {
      o.connections = std::stoul(value());
    } else if (arg == "--path") {
      o.path = value();
    } else if (arg == "--header") {
      if (o.default_headers) {
        o.headers.clear();
        o.default_headers = false;
      }
      o.headers.push_back(value());
    } else if (arg == "--timeout-ms") {
      o.timeout_ms = std::stol(value());
    } else if (arg == "--latencies") {
      o.latencies_file = value();
    } else {
      usage("unknown argument");
    }
  }
  if (o.port == 0) usage("--port is required");
  if (o.connections == 0 || o.connections > 50000) usage("--connections must be 1..50000");
  return o;
}

// Status code and the end of the response (head + Content-Length body), once known.
bool response_complete(const std::string& buf, unsigned& status, std::size_t& total) {
  const auto head_end = buf.find("\r\n\r\n");
  if (head_end == std::string::npos) return false;
  if (buf.size() < 12 || buf.compare(0, 5, "HTTP/") != 0) {
    status = 0;
    total = buf.size();
    return true;
  }
  std::from_chars(buf.data() + 9, buf.data() + 12, status);
  std::size_t length = 0;
  std::string_view head(buf.data(), head_end + 2);
  std::size_t pos = 0;
  while (pos < head.size()) {
    const auto eol = head.find("\r\n", pos);
    std::string_view line = head.substr(pos, eol - pos);
    pos = eol + 2;
    constexpr std::string_view kName = "content-length:";
    if (line.size() > kName.size()) {
      bool match = true;
      for (std::size_t k = 0; k < kName.size(); ++k) {
        char c = line[k];
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        if (c != kName[k]) {
          match = false;
          break;
        }
      }
      if (match) {
        std::string_view v = line.substr(kName.size());
        while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
        std::from_chars(v.data(), v.data() + v.size(), length);
      }
    }
  }
  total = head_end + 4 + length;
  return buf.size() >= total;
}

asio::awaitable<void> connect_one(Conn& c, tcp::endpoint ep, std::size_t& pending,
                                  asio::steady_timer& all_connected) {
  auto [ec] = co_await c.socket.async_connect(ep, use_nothrow);
  if (ec) {
    c.error = "connect: " + ec.message();
  } else {
    c.connected = true;
    boost::system::error_code ignored;
    c.socket.set_option(tcp::no_delay(true), ignored);
  }
  if (--pending == 0) all_connected.cancel();
}

asio::awaitable<void> exchange_one(Conn& c, const std::string& request, std::size_t& pending,
                                   asio::steady_timer& all_done) {
  c.t0 = Clock::now();
  auto [wec, written] = co_await asio::async_write(c.socket, asio::buffer(request), use_nothrow);
  if (wec) {
    c.error = "write: " + wec.message();
  } else {
    std::array<char, 4096> chunk;
    for (;;) {
      auto [rec, n] = co_await c.socket.async_read_some(asio::buffer(chunk), use_nothrow);
      if (rec) {
        c.error = "read: " + rec.message();
        break;
      }
      c.buffer.append(chunk.data(), n);
      unsigned status = 0;
      std::size_t total = 0;
      if (response_complete(c.buffer, status, total)) {
        c.t1 = Clock::now();
        c.status = status;
        c.done = true;
        break;
      }
    }
  }
  boost::system::error_code ignored;
  c.socket.close(ignored);
  if (--pending == 0) all_done.cancel();
}

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  // Nearest rank: the smallest value with at least p% of the samples at or below it.
  auto rank = static_cast<std::size_t>(p / 100.0 * static_cast<double>(sorted.size()) + 0.999999);
  rank = std::clamp<std::size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  asio::io_context ioc(1);
  const tcp::endpoint ep(asio::ip::make_address(opt.host), opt.port);

  std::string request = "GET " + opt.path + " HTTP/1.1\r\nHost: " + opt.host + ":" +
                        std::to_string(opt.port) + "\r\n";
  for (const auto& h : opt.headers) request += h + "\r\n";
  request += "\r\n";

  std::vector<std::unique_ptr<Conn>> conns;
  conns.reserve(opt.connections);
  for (std::size_t i = 0; i < opt.connections; ++i) conns.push_back(std::make_unique<Conn>(ioc));

  const auto deadline = Clock::now() + std::chrono::milliseconds(opt.timeout_ms);
  bool timed_out = false;
  asio::steady_timer guard(ioc);
  guard.expires_at(deadline);
  guard.async_wait([&](boost::system::error_code ec) {
    if (ec) return;
    timed_out = true;
    for (auto& c : conns) {
      boost::system::error_code ignored;
      c->socket.close(ignored);
    }
  });

  Clock::time_point connect_start{}, connect_end{}, send_start{}, all_end{};
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        // Phase 1: every connection established before any request is sent.
        connect_start = Clock::now();
        std::size_t pending = conns.size();
        asio::steady_timer all_connected(ioc, Clock::time_point::max());
        for (auto& c : conns)
          asio::co_spawn(ioc, connect_one(*c, ep, pending, all_connected), asio::detached);
        if (pending > 0) co_await all_connected.async_wait(use_nothrow);
        connect_end = Clock::now();
        // Phases 2 and 3: all requests sent back to back; each connection then reads its answer.
        send_start = Clock::now();
        std::size_t in_flight = 0;
        for (auto& c : conns) in_flight += c->connected ? 1 : 0;
        asio::steady_timer all_done(ioc, Clock::time_point::max());
        if (in_flight > 0) {
          for (auto& c : conns) {
            if (c->connected)
              asio::co_spawn(ioc, exchange_one(*c, request, in_flight, all_done), asio::detached);
          }
          co_await all_done.async_wait(use_nothrow);
        }
        all_end = Clock::now();
        guard.cancel();
      },
      asio::detached);
  ioc.run();

  std::vector<double> lat;
  std::map<unsigned, std::size_t> by_status;
  std::map<std::string, std::size_t> errors;
  std::size_t connected = 0;
  Clock::time_point first_t0 = Clock::time_point::max(), last_t0{}, last_t1{};
  for (const auto& c : conns) {
    connected += c->connected ? 1 : 0;
    if (c->connected) {
      first_t0 = std::min(first_t0, c->t0);
      last_t0 = std::max(last_t0, c->t0);
    }
    if (c->done) {
      ++by_status[c->status];
      lat.push_back(ms(c->t1 - c->t0));
      last_t1 = std::max(last_t1, c->t1);
    } else {
      ++errors[c->error.empty() ? std::string(timed_out ? "timeout" : "unfinished") : c->error];
    }
  }
  std::sort(lat.begin(), lat.end());
  if (!opt.latencies_file.empty()) {
    std::ofstream out(opt.latencies_file);
    for (double v : lat) out << v << "\n";
  }

  std::printf("{\"connections\":%zu,\"connected\":%zu,\"completed\":%zu,", opt.connections,
              connected, lat.size());
  std::printf("\"status\":{");
  bool first = true;
  for (const auto& [s, n] : by_status) {
    std::printf("%s\"%u\":%zu", first ? "" : ",", s, n);
    first = false;
  }
  std::printf("},\"errors\":{");
  first = true;
  for (const auto& [e, n] : errors) {
    std::printf("%s\"%s\":%zu", first ? "" : ",", e.c_str(), n);
    first = false;
  }
  std::printf("},\"timed_out\":%s,", timed_out ? "true" : "false");
  std::printf("\"connect_phase_ms\":%.3f,", ms(connect_end - connect_start));
  std::printf("\"send_spread_ms\":%.3f,", connected ? ms(last_t0 - first_t0) : 0.0);
  std::printf("\"wall_ms\":%.3f,", lat.empty() ? 0.0 : ms(last_t1 - send_start));
  // From the last request written to the last response read: how long the server needed once
  // the client had stopped sending.
  std::printf("\"drain_ms\":%.3f,", lat.empty() ? 0.0 : ms(last_t1 - last_t0));
  std::printf(
      "\"latency_ms\":{\"min\":%.3f,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}}\n",
      lat.empty() ? 0.0 : lat.front(), percentile(lat, 50), percentile(lat, 90),
      percentile(lat, 99), lat.empty() ? 0.0 : lat.back());
  const bool all_ok =
      by_status.size() == 1 && by_status.count(200) == 1 && by_status[200] == opt.connections;
  return all_ok ? 0 : 1;
}
