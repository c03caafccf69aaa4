// Hardening: retries end to end against an emulator that fails on demand (counting the upstream
// calls each one allows; the rules themselves are unit-tested in tests/unit/fetch_plan_test.cpp and
// broker_test.cpp), upstream answers that are not tokens, stale-while-valid serving, hostile input
// on the front door, listener restrictions and secrets in logs. Real binaries, real sockets.
#include "fixture.hpp"

#include <atomic>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <iterator>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <optional>
#include <poll.h>
#include <set>
#include <signal.h>
#include <sstream>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

namespace ficbroker::testing {
namespace {
namespace json = boost::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A 4xx/5xx answer must be the documented JSON error shape.
void expect_json_error(const Response& r) {
  boost::system::error_code ec;
  const auto v = json::parse(r.body, ec);
  ASSERT_FALSE(ec) << "not JSON: " << r.body;
  ASSERT_TRUE(v.is_object()) << r.body;
  EXPECT_TRUE(v.as_object().contains("error")) << r.body;
  EXPECT_TRUE(v.as_object().contains("error_description")) << r.body;
  EXPECT_NE(r.header("content-type").find("application/json"), std::string::npos);
}

// ---- raw sockets ---------------------------------------------------------------------------

int tcp_connect(unsigned short port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

int unix_connect(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool send_all(int fd, const std::string& data) {
  std::size_t sent = 0;
  while (sent < data.size()) {
    const auto n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<std::size_t>(n);
  }
  return true;
}

// Reads until the peer closes (or resets) or `timeout` passes. `closed` tells which.
std::string read_until_closed(int fd, std::chrono::milliseconds timeout, bool* closed = nullptr) {
  std::string out;
  const auto deadline = Clock::now() + timeout;
  if (closed) *closed = false;
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (::poll(&p, 1, static_cast<int>(std::max<long>(1, left.count()))) <= 0) continue;
    char buf[4096];
    const auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      if (closed) *closed = true;
      break;
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

// Reads one HTTP response (head + Content-Length body) without waiting for the connection to end.
std::string read_one_response(int fd, std::chrono::milliseconds timeout) {
  std::string out;
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    const auto head_end = out.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      const auto cl = out.find("Content-Length: ");
      const std::size_t length =
          cl == std::string::npos ? 0
                                  : std::stoul(out.substr(cl + 16, out.find("\r\n", cl) - cl - 16));
      if (out.size() >= head_end + 4 + length) return out;
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[4096];
    const auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

// Still open: no EOF or reset pending on the socket right now.
bool still_open(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 0) == 0) return true;
  char c;
  return ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

// One request on a fresh connection, one response back (or what arrived within `timeout`).
// (Not tests/support's raw_exchange: its timeout does not apply to its blocking reads, so it
// waits forever on a connection the broker rightly keeps alive.)
std::string exchange(unsigned short port, const std::string& bytes,
                     std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  const int fd = tcp_connect(port);
  if (fd < 0) return {};
  send_all(fd, bytes);
  auto out = read_one_response(fd, timeout);
  ::close(fd);
  return out;
}

struct FdSet {
  std::vector<int> fds;
  ~FdSet() {
    for (int fd : fds) {
      if (fd >= 0) ::close(fd);
    }
  }
};

// For requests made on other threads: an I/O error (the broker hung up) becomes status 0 with the
// error in the body, so that it fails the test instead of terminating the test binary.
Response get_or_error(const Broker& broker, const std::string& target, const Headers& headers) {
  try {
    return broker.get(target, headers);
  } catch (const std::exception& e) {
    Response r;
    r.body = std::string("request failed: ") + e.what();
    return r;
  }
}

double metric_or_zero(const std::string& text, const std::string& series) {
  return metric_value(text, series).value_or(0.0);
}

// =============================================================================================
// Retries end to end, one upstream failure at a time, counting the calls each allows. Rules
// that take real seconds to show (IMDS 410, Retry-After, AADSTS70021, redirects) are unit tests.
// =============================================================================================

class HardeningRetryTest : public BrokerTest {};

TEST_F(HardeningRetryTest, ImdsServiceUnavailableOnceIsRetriedOnce) {
  emulator_->fault({{"target", "imds"}, {"action", "status"}, {"status", 503}, {"count", 1}});
  const auto r = broker_->get_with_metadata(token_target(kGraph));
  ASSERT_EQ(r.status, 200u) << r.body;
  const auto stats = emulator_->stats();
  EXPECT_EQ(stat_count(stats, "imds"), 2);
  EXPECT_EQ(stat_count(stats, "imds_faulted"), 1);
  EXPECT_EQ(stat_count(stats, "entra"), 1);
}

TEST_F(HardeningRetryTest, ImdsBadRequestIsNotRetriedAndReachesTheCallerAs4xx) {
  emulator_->fault({{"target", "imds"}, {"action", "status"}, {"status", 400}, {"count", 1}});
  const auto r = broker_->get_with_metadata(token_target(kGraph));
  EXPECT_GE(r.status, 400u);
  EXPECT_LT(r.status, 500u) << r.body;
  expect_json_error(r);
  // Longer than the first transient back-off (1 s): a retry would have happened by now.
  std::this_thread::sleep_for(1500ms);
  auto stats = emulator_->stats();
  EXPECT_EQ(stat_count(stats, "imds"), 1);
  EXPECT_EQ(stat_count(stats, "entra"), 0);
  // Permanent failures are remembered: the fault is used up, so an upstream call would succeed;
  // the same 4xx without an IMDS call proves the negative cache answered.
  const auto again = broker_->get_with_metadata(token_target(kGraph));
  EXPECT_EQ(again.status, r.status) << again.body;
  stats = emulator_->stats();
  EXPECT_EQ(stat_count(stats, "imds"), 1);
  EXPECT_EQ(stat_count(stats, "entra"), 0);
}

// Retry-After beyond what a caller may wait (10 s) goes back to the caller as 429 + Retry-After.
// Throttling is about the upstream, not one request: while Entra's Retry-After runs, further
// callers must not be turned into further Entra calls (the README: "Entra or IMDS throttling:
// 429 with Retry-After"; the negative cache exists so that callers cannot cause upstream calls).
TEST_F(HardeningRetryTest, EntraThrottlingWithALongRetryAfterIsNotHammered) {
  emulator_->fault({{"target", "entra"},
                    {"action", "status"},
                    {"status", 429},
                    {"retry_after", "30"},
                    {"count", 1}});
  const auto r = broker_->get_with_metadata(token_target(kGraph));
  EXPECT_EQ(r.status, 429u) << r.body;
  expect_json_error(r);
  ASSERT_FALSE(r.header("retry-after").empty());
  EXPECT_GE(std::stoi(r.header("retry-after")), 10);
  EXPECT_EQ(stat_count(emulator_->stats(), "entra"), 1) << "a 30 s Retry-After is not waited out";
  // Five more callers within the 30 s: none of them may reach Entra.
  int served = 0, without_retry_after = 0;
  for (int i = 0; i < 5; ++i) {
    const auto again = broker_->get_with_metadata(token_target(kGraph));
    served += again.status == 200 ? 1 : 0;
    without_retry_after += again.status != 200 && again.header("retry-after").empty() ? 1 : 0;
  }
  EXPECT_EQ(served, 0) << "callers got tokens Entra was asked for during its Retry-After";
  EXPECT_EQ(without_retry_after, 0);
  EXPECT_EQ(stat_count(emulator_->stats(), "entra"), 1)
      << "callers during Entra's Retry-After window were turned into Entra calls";
}

TEST_F(HardeningRetryTest, EntraServerErrorIsRetried) {
  emulator_->fault({{"target", "entra"}, {"action", "status"}, {"status", 500}, {"count", 1}});
  const auto r = broker_->get_with_metadata(token_target(kGraph));
  ASSERT_EQ(r.status, 200u) << r.body;
  const auto stats = emulator_->stats();
  EXPECT_EQ(stat_count(stats, "entra"), 2);
  EXPECT_EQ(stat_count(stats, "entra_faulted"), 1);
}

TEST_F(HardeningRetryTest, EntraPermanentErrorIsNotRetriedAndIsRemembered) {
  emulator_->fault({{"target", "entra"},
                    {"action", "status"},
                    {"status", 400},
                    {"aadsts", 700213},
                    {"count", 1}});
  const auto r = broker_->get_with_metadata(token_target(kGraph));
  EXPECT_EQ(r.status, 400u) << r.body;
  expect_json_error(r);
  EXPECT_NE(r.body.find("AADSTS700213"), std::string::npos) << r.body;
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(stat_count(emulator_->stats(), "entra"), 1) << "a permanent error was retried";
  // Within 30 s: answered from the negative cache. The fault is used up, so a call to Entra
  // would now succeed; the same 400 shows none was made.
  const auto again = broker_->get_with_metadata(token_target(kGraph));
  EXPECT_EQ(again.status, 400u) << again.body;
  EXPECT_NE(again.body.find("AADSTS700213"), std::string::npos) << again.body;
  EXPECT_EQ(stat_count(emulator_->stats(), "entra"), 1);
  EXPECT_GE(metric_or_zero(metrics_of(*broker_), "ficbroker_cache_negative_hits_total"), 1.0);
}

TEST_F(HardeningRetryTest, ExpiredAssertionIsReplacedByAFreshOneOnce) {
  emulator_->fault({{"target", "entra"}, {"action", "status"}, {"aadsts", 700024}, {"count", 1}});
  const auto r = broker_->get_with_metadata(token_target(kGraph));
  ASSERT_EQ(r.status, 200u) << r.body;
  const auto stats = emulator_->stats();
  EXPECT_EQ(stat_count(stats, "imds"), 2) << "a fresh assertion must be fetched";
  EXPECT_EQ(stat_count(stats, "entra"), 2);
}

// FIC propagation for real: the emulator's world gives the FIC a 3 s propagation delay.
TEST(HardeningPropagationTest, NewFederatedCredentialIsWaitedOutWithBoundedRetries) {
  TempDir dir;
  const auto printed = run_process({EMULATOR_BIN, "--print-default-world"});
  ASSERT_EQ(printed.exit_code, 0) << printed.err;
  auto world = json::parse(printed.out).as_object();
  for (auto& app : world.at("apps").as_array()) {
    for (auto& fic : app.as_object().at("fics").as_array()) {
      fic.as_object()["propagation_delay_s"] = 3;
    }
  }
  write_file(dir.file("world.json"), json::serialize(world));
  Emulator emulator(dir, {"--world", dir.file("world.json")});
  Broker broker(dir, default_config(emulator));
  emulator.settings({{"restart_propagation", true}});
  const auto r = broker.get_with_metadata(token_target(kGraph));
  ASSERT_EQ(r.status, 200u) << r.body;
  const auto stats = emulator.stats();
  EXPECT_GE(stat_count(stats, "entra"), 2);
  EXPECT_LE(stat_count(stats, "entra"), 3) << "AADSTS70021 is retried at most twice";
  EXPECT_GE(stat_count(stats.at("entra_errors_by_code").as_object(), "70021"), 1);
}

// =============================================================================================
// Upstream answers that are not tokens: a 503 JSON error with Retry-After, never a crash.
// =============================================================================================

class HardeningUpstreamGarbageTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    emulator_.emplace(dir_);
    // Two sources for the same identity, so that one target's assertion can be cached (to reach
    // Entra with the fault) while the other's still has to come from IMDS.
    auto config = default_config_object(*emulator_);
    auto& sources = config["sources"].as_object();
    sources["uami_b"] = {{"type", "imds"},
                         {"endpoint", "http://127.0.0.1:" + std::to_string(emulator_->http_port())},
                         {"object_id", kUamiObjectId}};
    config["targets"] = json::array{
        {{"tenant_id", kTenantA}, {"client_id", kApp}, {"source", "uami"}, {"default", true}},
        {{"tenant_id", kTenantB}, {"client_id", kApp}, {"source", "uami_b"}}};
    broker_.emplace(dir_, json::serialize(config));
  }
  TempDir dir_;
  std::optional<Emulator> emulator_;
  std::optional<Broker> broker_;
};

TEST_P(HardeningUpstreamGarbageTest, CallerGets503JsonAndTheBrokerSurvives) {
  const std::string action = GetParam();
  // A cached token and a cached assertion for tenant A.
  const auto cached = broker_->get_with_metadata(token_target(kGraph, kTenantA));
  ASSERT_EQ(cached.status, 200u) << cached.body;

  emulator_->fault({{"target", "entra"}, {"action", action}, {"count", -1}});
  emulator_->fault({{"target", "imds"}, {"action", action}, {"count", -1}});
  const auto before = emulator_->stats();

  // Tenant A, new resource: the assertion is cached, so the fault hits Entra. Tenant B: its
  // source has no assertion yet, so the fault hits IMDS. Both at once to halve the wait.
  Response via_entra, via_imds;
  std::thread entra_caller([&] {
    via_entra = get_or_error(*broker_, token_target(kVault, kTenantA), {{"Metadata", "true"}});
  });
  std::thread imds_caller([&] {
    via_imds = get_or_error(*broker_, token_target(kGraph, kTenantB), {{"Metadata", "true"}});
  });
  entra_caller.join();
  imds_caller.join();

  for (const auto* r : {&via_entra, &via_imds}) {
    SCOPED_TRACE(r == &via_entra ? "fault on Entra" : "fault on IMDS");
    EXPECT_EQ(r->status, 503u) << r->body;
    expect_json_error(*r);
    EXPECT_FALSE(r->header("retry-after").empty()) << "a 503 must carry Retry-After";
    EXPECT_EQ(r->body.find("not-a-jwt"), std::string::npos) << "upstream content leaked";
  }
  const auto after = emulator_->stats();
  const auto entra_calls = stat_count(after, "entra_faulted") - stat_count(before, "entra_faulted");
  const auto imds_calls = stat_count(after, "imds_faulted") - stat_count(before, "imds_faulted");
  EXPECT_GE(entra_calls, 1);
  EXPECT_GE(imds_calls, 1);
  // Transient: retried, but within the documented budget (4 attempts; a reused keep-alive
  // connection that fails may be retried once more at once).
  EXPECT_LE(entra_calls, 8);
  EXPECT_LE(imds_calls, 8);
  if (action != "hang") {
    EXPECT_GE(entra_calls, 2) << "Entra's answer was not refused as unusable (or not retried)";
    EXPECT_GE(imds_calls, 2) << "IMDS's answer was not refused as unusable (or not retried): "
                                "the broker took it for an assertion";
  }

  ASSERT_TRUE(broker_->process().running()) << broker_->log();
  EXPECT_EQ(broker_->get("/healthz").status, 200u);
  const auto still = broker_->get_with_metadata(token_target(kGraph, kTenantA));
  ASSERT_EQ(still.status, 200u) << still.body;
  EXPECT_EQ(access_token(still), access_token(cached));
}

INSTANTIATE_TEST_SUITE_P(Hardening, HardeningUpstreamGarbageTest,
                         ::testing::Values("garbage", "truncate", "huge", "not_jwt", "wrong_types",
                                           "reset", "hang"),
                         [](const auto& param_info) { return std::string(param_info.param); });

// =============================================================================================
// The cache under upstream trouble.
// =============================================================================================

class HardeningCacheTest : public ::testing::Test {
 protected:
  // Entra tokens of `lifetime` s with a `min_validity` s floor: refresh at ~3/4 of the window.
  void start(int lifetime, int min_validity) {
    emulator_.emplace(dir_);
    emulator_->settings({{"token_lifetime", lifetime}});
    const std::string cache =
        "  \"cache\": {\"min_validity_seconds\": " + std::to_string(min_validity) + "},\n";
    broker_.emplace(dir_, default_config(*emulator_, cache));
  }
  TempDir dir_;
  std::optional<Emulator> emulator_;
  std::optional<Broker> broker_;
};

// 20 s tokens, 5 s floor: servable for 15 s, refreshed from ~9.75-11.25 s on.
TEST_F(HardeningCacheTest, StaleWhileValidServesTheOldTokenWhileRefreshesFail) {
  start(20, 5);
  const auto issued = Clock::now();
  const auto first = broker_->get_with_metadata(token_target(kGraph));
  ASSERT_EQ(first.status, 200u) << first.body;
  const auto token = access_token(first);
  emulator_->fault({{"target", "entra"}, {"action", "status"}, {"status", 503}, {"count", -1}});

  int requests = 0;
  while (seconds_since(issued) < 13.5) {
    const auto r = broker_->get_with_metadata(token_target(kGraph));
    ASSERT_EQ(r.status, 200u) << "at " << seconds_since(issued) << " s: " << r.body;
    EXPECT_EQ(access_token(r), token);
    ++requests;
    std::this_thread::sleep_for(250ms);
  }
  EXPECT_GT(requests, 20);
  const auto stats = emulator_->stats();
  EXPECT_GE(stat_count(stats, "entra_faulted"), 1) << "no refresh was attempted";
  EXPECT_GE(metric_or_zero(metrics_of(*broker_), "ficbroker_cache_refreshes_total"), 1.0);

  // Past the floor (15 s) the old token is no longer handed out, and the refresh still fails.
  std::this_thread::sleep_for(std::chrono::milliseconds(
      std::max<long>(0, static_cast<long>((15.5 - seconds_since(issued)) * 1000))));
  const auto late = broker_->get_with_metadata(token_target(kGraph));
  EXPECT_EQ(late.status, 503u) << late.body;
  EXPECT_FALSE(late.header("retry-after").empty());
}

TEST_F(HardeningCacheTest, NoCallerWaitsOnABackgroundRefresh) {
  start(20, 5);
  const auto issued = Clock::now();
  const auto first = broker_->get_with_metadata(token_target(kGraph));
  ASSERT_EQ(first.status, 200u) << first.body;
  const auto entra_before = stat_count(emulator_->stats(), "entra");
  emulator_->settings({{"delay_ms", 1500}});  // every upstream answer now takes 1.5 s

  std::set<std::string> tokens;
  double slowest = 0;
  while (seconds_since(issued) < 14.0) {
    const auto start = Clock::now();
    const auto r = broker_->get_with_metadata(token_target(kGraph));
    const double took = seconds_since(start);
    ASSERT_EQ(r.status, 200u) << r.body;
    tokens.insert(access_token(r));
    slowest = std::max(slowest, took);
    std::this_thread::sleep_for(200ms);
  }
  // Any request that waited on the refresh would have taken at least 1.5 s.
  EXPECT_LT(slowest, 1.0) << "a caller waited on the upstream";
  EXPECT_EQ(stat_count(emulator_->stats(), "entra"), entra_before + 1) << "exactly one refresh";
  EXPECT_EQ(tokens.size(), 2u) << "the refreshed token must be served once it is there";
}

TEST_F(HardeningCacheTest, CachedTokenIsServedThroughAFullUpstreamOutage) {
  start(3599, 300);
  const auto first = broker_->get_with_metadata(token_target(kGraph));
  ASSERT_EQ(first.status, 200u) << first.body;
  EXPECT_NE(emulator_->process().stop(SIGKILL), -1);  // IMDS and Entra are gone

  for (int i = 0; i < 20; ++i) {
    const auto start = Clock::now();
    const auto r = broker_->get_with_metadata(token_target(kGraph));
    ASSERT_EQ(r.status, 200u) << r.body;
    EXPECT_EQ(access_token(r), access_token(first));
    EXPECT_LT(seconds_since(start), 1.0) << "a cached answer waited on the dead upstream";
  }
  // An uncached key cannot be served: 503 JSON with Retry-After, after the bounded retries.
  const auto uncached = broker_->get_with_metadata(token_target(kVault));
  EXPECT_EQ(uncached.status, 503u) << uncached.body;
  expect_json_error(uncached);
  EXPECT_FALSE(uncached.header("retry-after").empty());
  EXPECT_EQ(broker_->get("/healthz").status, 200u);
  EXPECT_TRUE(broker_->process().running());
}

// =============================================================================================
// Hostile input on the front door (raw sockets); nothing of it may reach an upstream.
// =============================================================================================

class HardeningFrontDoorTest : public BrokerTest {
 protected:
  std::string send_raw(const std::string& bytes) { return exchange(broker_->port(), bytes); }
  void expect_no_upstream_calls() {
    const auto stats = emulator_->stats();
    EXPECT_EQ(stat_count(stats, "imds"), 0);
    EXPECT_EQ(stat_count(stats, "entra"), 0);
    EXPECT_EQ(stat_count(stats, "app_service"), 0);
  }
  static std::string token_request_line(const std::string& path) {
    return "GET " + path +
           "?api-version=2018-02-01&resource=https://graph.microsoft.com HTTP/1.1\r\n";
  }
  // Replaces the broker by one with these "server" settings (timeouts, connection cap).
  void restart_with_server(const json::object& server) {
    broker_.reset();
    auto config = default_config_object(*emulator_);
    config["server"] = server;
    broker_.emplace(dir_, json::serialize(config), "limited");
  }
};

TEST_F(HardeningFrontDoorTest, OversizedHeadersAre431) {
  const std::string request =
      token_request_line("/metadata/identity/oauth2/token") +
      "Host: 127.0.0.1\r\nMetadata: true\r\nX-Pad: " + std::string(9000, 'a') + "\r\n\r\n";
  const auto raw = send_raw(request);
  EXPECT_EQ(raw_status(raw), 431u) << raw.substr(0, 200);
  // Just under the limit is fine.
  const std::string fits =
      "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Pad: " +
      std::string(7000, 'a') + "\r\n\r\n";
  EXPECT_EQ(raw_status(send_raw(fits)), 200u);
  expect_no_upstream_calls();
}

TEST_F(HardeningFrontDoorTest, TooManyHeaderFieldsAre431) {
  std::string request = token_request_line("/metadata/identity/oauth2/token") +
                        "Host: 127.0.0.1\r\nMetadata: true\r\n";
  for (int i = 0; i < 70; ++i) request += "X-H" + std::to_string(i) + ": v\r\n";
  request += "\r\n";
  const auto raw = send_raw(request);
  EXPECT_EQ(raw_status(raw), 431u) << raw.substr(0, 200);
  expect_no_upstream_calls();
}

TEST_F(HardeningFrontDoorTest, BodyOver16KiBIs413) {
  // The declared length is refused as soon as the head is read; the body is never sent.
  const std::string request =
      "POST /metadata/identity/oauth2/token HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\n"
      "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 16385\r\n\r\n";
  const auto raw = send_raw(request);
  EXPECT_EQ(raw_status(raw), 413u) << raw.substr(0, 200);
  expect_no_upstream_calls();
}

TEST_F(HardeningFrontDoorTest, ChunkedTransferEncodingIs501) {
  const std::string request =
      "POST /metadata/identity/oauth2/token HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\n"
      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
  const auto raw = send_raw(request);
  EXPECT_EQ(raw_status(raw), 501u) << raw.substr(0, 200);
  expect_no_upstream_calls();
}

TEST_F(HardeningFrontDoorTest, BareLineFeedIs400) {
  const auto raw = send_raw(
      "GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://graph."
      "microsoft.com HTTP/1.1\nHost: 127.0.0.1\nMetadata: true\n\n");
  EXPECT_EQ(raw_status(raw), 400u) << raw.substr(0, 200);
  expect_no_upstream_calls();
}

TEST_F(HardeningFrontDoorTest, DuplicatedSecurityHeadersAre400) {
  for (const std::string extra :
       {"Metadata: true\r\nMetadata: true\r\n", "Metadata: true\r\nmetadata: false\r\n",
        "Metadata: true\r\nHost: evil.example\r\n",
        "Metadata: true\r\nContent-Length: 0\r\nContent-Length: 5\r\n"}) {
    const auto raw = send_raw(token_request_line("/metadata/identity/oauth2/token") +
                              "Host: 127.0.0.1\r\n" + extra + "\r\n");
    EXPECT_EQ(raw_status(raw), 400u) << extra << raw.substr(0, 200);
  }
  expect_no_upstream_calls();
}

TEST_F(HardeningFrontDoorTest, PathTricksAreRefusedAndNeverForwarded) {
  const std::vector<std::pair<std::string, unsigned>> cases = {
      {"/metadata\\identity\\oauth2\\token", 400},
      {"/metadata/identity/oauth2/token/..%2f", 400},
      {"/metadata/identity/oauth2/token/..%2f..%2f..%2finstance", 400},
      {"/metadata%2fidentity%2foauth2%2ftoken", 400},
      {"/metadata/identity/oauth2/%74oken", 400},
      {"/metadata/identity/oauth2/token/../../instance", 400},
      {"/metadata/identity/oauth2/./token", 400},
      {"/metadata/instance", 404},
      {"/metadata/instance/compute", 404},
      {"/metadata/identity/info", 404},
  };
  for (const auto& [path, status] : cases) {
    const auto raw =
        send_raw(token_request_line(path) + "Host: 127.0.0.1\r\nMetadata: true\r\n\r\n");
    EXPECT_EQ(raw_status(raw), status) << path << "\n" << raw.substr(0, 300);
  }
  expect_no_upstream_calls();
  EXPECT_EQ(broker_->get("/healthz").status, 200u);
}

TEST_F(HardeningFrontDoorTest, ForeignHostIs403) {
  for (const std::string host : {"evil.example", "evil.example:80", "169.254.169.254",
                                 "127.0.0.1.evil.example", "localhost.evil.example"}) {
    const auto raw = send_raw(token_request_line("/metadata/identity/oauth2/token") +
                              "Host: " + host + "\r\nMetadata: true\r\n\r\n");
    EXPECT_EQ(raw_status(raw), 403u) << host << "\n" << raw.substr(0, 300);
  }
  // No Host at all (HTTP/1.1) is malformed.
  EXPECT_EQ(raw_status(send_raw(token_request_line("/metadata/identity/oauth2/token") +
                                "Metadata: true\r\n\r\n")),
            400u);
  expect_no_upstream_calls();
}

TEST_F(HardeningFrontDoorTest, ForwardedRequestsAre400) {
  for (const std::string header :
       {"X-Forwarded-For: 10.0.0.1", "Forwarded: for=10.0.0.1", "x-forwarded-for: 127.0.0.1"}) {
    const auto raw = send_raw(token_request_line("/metadata/identity/oauth2/token") +
                              "Host: 127.0.0.1\r\nMetadata: true\r\n" + header + "\r\n\r\n");
    EXPECT_EQ(raw_status(raw), 400u) << header << "\n" << raw.substr(0, 300);
  }
  expect_no_upstream_calls();
}

TEST_F(HardeningFrontDoorTest, SlowlorisClientIsDisconnectedAfterTheHeaderTimeout) {
  restart_with_server({{"header_timeout_ms", 3000}});
  const int fd = tcp_connect(broker_->port());
  ASSERT_GE(fd, 0);
  FdSet guard{{fd}};
  const std::string request =
      "GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://graph.microsoft"
      ".com HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\nX-Slow: " +
      std::string(100, 'a');
  const auto start = Clock::now();
  std::optional<double> closed_after;
  bool others_served = false;
  for (std::size_t i = 0; i < request.size() && seconds_since(start) < 20; ++i) {
    if (::send(fd, &request[i], 1, MSG_NOSIGNAL) != 1) {
      closed_after = seconds_since(start);
      break;
    }
    bool closed = false;
    read_until_closed(fd, 500ms, &closed);  // two bytes per second
    if (closed) {
      closed_after = seconds_since(start);
      break;
    }
    if (i == 1) others_served = broker_->get("/healthz").status == 200;
  }
  ASSERT_TRUE(closed_after.has_value()) << "a two-bytes-per-second client was kept for 20 s";
  // The whole request must arrive within server.header_timeout_ms (3 s here), however slowly the
  // bytes trickle in; the watchdog looks every 200 ms.
  EXPECT_GE(*closed_after, 2.5);
  EXPECT_LE(*closed_after, 6.0);
  EXPECT_TRUE(others_served) << "the slow client held up other clients";
  expect_no_upstream_calls();
}

TEST_F(HardeningFrontDoorTest, IdleKeepAliveConnectionIsClosedAfterTheIdleTimeout) {
  restart_with_server({{"header_timeout_ms", 1000}, {"idle_timeout_ms", 4000}});
  const int fd = tcp_connect(broker_->port());
  ASSERT_GE(fd, 0);
  FdSet guard{{fd}};
  ASSERT_TRUE(send_all(fd, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  const auto response = read_one_response(fd, 5s);
  ASSERT_EQ(raw_status(response), 200u) << response;
  const auto idle_since = Clock::now();
  // Not the header timeout (1 s): between requests the idle timeout (4 s) applies.
  std::this_thread::sleep_for(2s);
  EXPECT_TRUE(still_open(fd)) << "an idle keep-alive connection was closed by the header timeout";
  bool closed = false;
  read_until_closed(fd, 10s, &closed);
  ASSERT_TRUE(closed) << "an idle keep-alive connection was kept for 12 s";
  EXPECT_GE(seconds_since(idle_since), 3.5);
  EXPECT_LE(seconds_since(idle_since), 7.0);
}

TEST_F(HardeningFrontDoorTest, ThreeHundredIdleConnectionsLeaveTheBrokerAnswering) {
  FdSet idle;
  for (int i = 0; i < 300; ++i) {
    const int fd = tcp_connect(broker_->port());
    ASSERT_GE(fd, 0) << "connection " << i << " refused";
    idle.fds.push_back(fd);
  }
  ASSERT_TRUE(wait_until(
      [&] { return metric_or_zero(metrics_of(*broker_), "ficbroker_connections_open") >= 300; },
      5s))
      << metrics_of(*broker_);
  const auto start = Clock::now();
  EXPECT_EQ(broker_->get("/healthz").status, 200u);
  const auto r = broker_->get_with_metadata(token_target(kGraph));
  EXPECT_EQ(r.status, 200u) << r.body;
  EXPECT_LT(seconds_since(start), 5.0);
  // The idle sockets are still open (the header timeout is 10 s), not dropped to make room.
  int open = 0;
  for (int fd : idle.fds) open += still_open(fd) ? 1 : 0;
  EXPECT_EQ(open, 300);
}

TEST_F(HardeningFrontDoorTest, ConnectionLimitIsAnsweredWith503) {
  restart_with_server({{"max_connections", 200}});
  FdSet held;
  for (int i = 0; i < 200; ++i) {
    const int fd = tcp_connect(broker_->port());
    ASSERT_GE(fd, 0) << "connection " << i << " refused";
    held.fds.push_back(fd);
  }
  std::this_thread::sleep_for(1s);  // let the broker accept them all
  // One more: answered at once with a canned 503 and closed. (Nothing is sent, so that the close
  // cannot turn into a reset over unread bytes.)
  const int extra = tcp_connect(broker_->port());
  ASSERT_GE(extra, 0);
  FdSet extra_guard{{extra}};
  const auto raw = read_until_closed(extra, 5s);
  EXPECT_EQ(raw_status(raw), 503u) << raw;
  EXPECT_NE(raw.find("Retry-After:"), std::string::npos) << raw;
  for (int& fd : held.fds) {
    ::close(fd);
    fd = -1;
  }
  EXPECT_TRUE(wait_until([&] { return broker_->get("/healthz").status == 200; }, 5s));
  EXPECT_GE(metric_or_zero(metrics_of(*broker_), "ficbroker_connections_rejected_total"), 1.0);
}

// =============================================================================================
// Listeners, start-up checks and secrets.
// =============================================================================================

class HardeningListenerTest : public ::testing::Test {
 protected:
  void SetUp() override { emulator_.emplace(dir_); }
  std::string config_with_unix_socket(const std::string& path, std::uint32_t uid) {
    auto config = default_config_object(*emulator_);
    config["unix_socket"] = {{"path", path}, {"allowed_uids", json::array{uid}}};
    return json::serialize(config);
  }
  TempDir dir_;
  std::optional<Emulator> emulator_;
};

TEST_F(HardeningListenerTest, UnixSocketRefusesPeersWhoseUidIsNotListed) {
  const std::string path = dir_.file("refusing.sock");
  Broker broker(dir_, config_with_unix_socket(path, ::getuid() + 1), "refusing");
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);

  const int fd = unix_connect(path);
  ASSERT_GE(fd, 0);
  FdSet guard{{fd}};
  send_all(fd,
           "GET /token?resource=https://graph.microsoft.com HTTP/1.1\r\nHost: localhost\r\n"
           "Metadata: true\r\nConnection: close\r\n\r\n");
  bool closed = false;
  const auto answer = read_until_closed(fd, 5s, &closed);
  EXPECT_TRUE(closed);
  EXPECT_TRUE(answer.empty()) << "a refused peer got an answer: " << answer;
  EXPECT_EQ(stat_count(emulator_->stats(), "imds"), 0);
  EXPECT_TRUE(wait_until([&] { return !log_events(broker.log(), "peer_refused").empty(); }, 2s))
      << broker.log();
}

TEST_F(HardeningListenerTest, UnixSocketServesPeersWhoseUidIsListed) {
  const std::string path = dir_.file("allowing.sock");
  Broker broker(dir_, config_with_unix_socket(path, ::getuid()), "allowing");
  const int fd = unix_connect(path);
  ASSERT_GE(fd, 0);
  FdSet guard{{fd}};
  send_all(fd,
           "GET /token?resource=https://graph.microsoft.com HTTP/1.1\r\nHost: localhost\r\n"
           "Metadata: true\r\nConnection: close\r\n\r\n");
  const auto answer = read_until_closed(fd, 10s);
  ASSERT_EQ(raw_status(answer), 200u) << answer;
  EXPECT_NE(answer.find("access_token"), std::string::npos);
  EXPECT_TRUE(log_events(broker.log(), "peer_refused").empty());
}

TEST_F(HardeningListenerTest, NonLoopbackListenWithoutAllowRemoteIsRefusedAtStart) {
  for (const std::string listen : {"0.0.0.0:0", "[::]:0", "192.0.2.10:8181"}) {
    auto config = default_config_object(*emulator_);
    config["listen"] = listen;
    const std::string path = dir_.file("remote.jsonc");
    write_file(path, json::serialize(config));
    const auto run = run_process({FICBROKER_BIN, "--config", path}, 10s);
    EXPECT_NE(run.exit_code, 0) << listen;
    EXPECT_NE(run.exit_code, -1) << listen << ": it started and kept running";
    EXPECT_NE((run.out + run.err).find("listen"), std::string::npos) << run.out << run.err;
  }
  // The same through --listen, which overrides a loopback config.
  const std::string path = dir_.file("loopback.jsonc");
  write_file(path, default_config(*emulator_));
  const auto run = run_process({FICBROKER_BIN, "--config", path, "--listen", "0.0.0.0:0"}, 10s);
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.exit_code, -1) << "it started and kept running";
  EXPECT_NE((run.out + run.err).find("listen"), std::string::npos) << run.out << run.err;
}

// The inodes of the TCP sockets a process listens on, from /proc: a test of "no TCP door" that
// does not depend on guessing a port.
std::set<std::string> tcp_listen_inodes_of(pid_t pid) {
  std::set<std::string> listening;  // inodes of every listening TCP socket on the host
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::istringstream in(read_file(table));
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::vector<std::string> f{std::istream_iterator<std::string>(fields), {}};
      if (f.size() > 9 && f[3] == "0A") listening.insert(f[9]);
    }
  }
  std::set<std::string> mine;
  const std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
  for (const auto& entry : std::filesystem::directory_iterator(fd_dir)) {
    std::error_code ec;
    const auto target = std::filesystem::read_symlink(entry.path(), ec).string();
    if (ec || !target.starts_with("socket:[")) continue;
    const auto inode = target.substr(8, target.size() - 9);
    if (listening.contains(inode)) mine.insert(inode);
  }
  return mine;
}

TEST_F(HardeningListenerTest, ListenNullLeavesTheUnixSocketAsTheOnlyDoor) {
  const std::string path = dir_.file("only.sock");
  auto config = json::parse(config_with_unix_socket(path, ::getuid())).as_object();
  config["listen"] = nullptr;
  Broker broker(dir_, json::serialize(config), "unix-only");
  EXPECT_EQ(broker.port(), 0);
  EXPECT_TRUE(tcp_listen_inodes_of(broker.process().pid()).empty())
      << "a TCP listener is open although \"listen\" is null";
  const int fd = unix_connect(path);
  ASSERT_GE(fd, 0);
  FdSet guard{{fd}};
  send_all(fd,
           "GET /token?resource=https://graph.microsoft.com HTTP/1.1\r\nHost: localhost\r\n"
           "Metadata: true\r\nConnection: close\r\n\r\n");
  const auto answer = read_until_closed(fd, 10s);
  EXPECT_EQ(raw_status(answer), 200u) << answer;
}

TEST_F(HardeningListenerTest, ListenNullWithoutAUnixSocketIsRefusedAtStart) {
  auto config = default_config_object(*emulator_);
  config["listen"] = nullptr;
  const std::string path = dir_.file("no-door.jsonc");
  write_file(path, json::serialize(config));
  const auto run = run_process({FICBROKER_BIN, "--config", path}, 10s);
  EXPECT_EQ(run.exit_code, 2) << run.out << run.err;
  const auto errors = log_events(run.out + run.err, "config_invalid");
  ASSERT_FALSE(errors.empty()) << run.out << run.err;
  EXPECT_NE(str(errors[0], "error").find("listen"), std::string::npos);
}

TEST_F(HardeningListenerTest, FewDescriptorsLowerTheConnectionCapSoThe503StillFires) {
  // The shipped unit once had LimitNOFILE equal to the connection cap: accept() failed with
  // EMFILE before the canned 503, and upstream connects failed for everyone.
  auto config = default_config_object(*emulator_);
  Broker broker(dir_, json::serialize(config), "few-fds", {"/usr/bin/prlimit", "--nofile=300:300"});
  const auto lowered = log_events(broker.log(), "max_connections_lowered");
  ASSERT_EQ(lowered.size(), 1u) << broker.log();
  const auto cap = lowered[0].at("effective").as_int64();
  EXPECT_EQ(cap, 150);
  FdSet held;
  for (std::int64_t i = 0; i < cap; ++i) {
    const int fd = tcp_connect(broker.port());
    ASSERT_GE(fd, 0) << "connection " << i << " refused";
    held.fds.push_back(fd);
  }
  ASSERT_TRUE(wait_until(
      [&] {
        const auto m = http_request("127.0.0.1", broker.port(), "GET", "/healthz", {});
        return m.status == 503;
      },
      5s));
  // Over the cap: the canned 503, not a silent EMFILE; and the broker's own upstream calls still
  // have descriptors (a token fetch needs IMDS and Entra connections).
  const int extra = tcp_connect(broker.port());
  ASSERT_GE(extra, 0);
  FdSet extra_guard{{extra}};
  EXPECT_EQ(raw_status(read_until_closed(extra, 5s)), 503u);
  EXPECT_TRUE(log_events(broker.log(), "accept_failed").empty()) << broker.log();
  for (int& fd : held.fds) {
    ::close(fd);
    fd = -1;
  }
  ASSERT_TRUE(wait_until([&] { return broker.get("/healthz").status == 200; }, 5s));
  EXPECT_EQ(broker.get_with_metadata("/token?resource=https://graph.microsoft.com").status, 200u);
}

TEST_F(HardeningListenerTest, ReloadIsAppliedWholeOrRefusedNamingTheKeysThatNeedARestart) {
  auto config = default_config_object(*emulator_);
  Broker broker(dir_, json::serialize(config), "reloading");
  auto changed = config;
  changed["cache"] = {{"max_entries", 5}};
  changed["server"] = {{"idle_timeout_ms", 1000}};
  changed["log_level"] = "debug";
  write_file(broker.config_path(), json::serialize(changed));
  ::kill(broker.process().pid(), SIGHUP);
  ASSERT_TRUE(
      wait_until([&] { return !log_events(broker.log(), "config_reload_refused").empty(); }, 5s))
      << broker.log();
  const auto refused = log_events(broker.log(), "config_reload_refused");
  EXPECT_EQ(str(refused[0], "keys"), "cache,server");
  EXPECT_TRUE(log_events(broker.log(), "config_reloaded").empty())
      << "refused, yet reported applied";

  auto applicable = config;
  applicable["log_level"] = "warn";
  write_file(broker.config_path(), json::serialize(applicable));
  ::kill(broker.process().pid(), SIGHUP);
  ASSERT_TRUE(wait_until([&] { return !log_events(broker.log(), "config_reloaded").empty(); }, 5s))
      << broker.log();
  EXPECT_EQ(broker.get("/healthz").status, 200u);
}

// A selector naming the source's own identity: a plain token, but never the FIC assertion unless
// the source lists the exchange audience, and only within passthrough_resources when it is set.
TEST_F(HardeningListenerTest, PlainTokensNeverHandOutTheFicAssertionByDefault) {
  Broker broker(dir_, default_config(*emulator_), "passthrough-default");
  const auto plain = [&](const std::string& resource) {
    return broker.get_with_metadata(
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" + resource +
        "&client_id=" + kUamiClientId);
  };
  const auto before = stat_count(emulator_->stats(), "imds");
  for (const std::string audience :
       {"api://AzureADTokenExchange", "API://azureadtokenexchange",
        "api://AzureADTokenExchangeUSGov", "api://AzureADTokenExchange/"}) {
    const auto r = plain(audience);
    EXPECT_EQ(r.status, 400u) << audience << ": " << r.body;
    EXPECT_NE(r.body.find("passthrough_resources"), std::string::npos) << r.body;
    EXPECT_EQ(r.body.find("access_token"), std::string::npos) << r.body;
  }
  // The same through App Service's protocol and the broker's own /token route.
  EXPECT_EQ(broker
                .get("/msi/token?api-version=2019-08-01&resource=api://AzureADTokenExchange&"
                     "client_id=" +
                         std::string(kUamiClientId),
                     {{"X-IDENTITY-HEADER", kIdentityHeader}})
                .status,
            400u);
  EXPECT_EQ(broker
                .get_with_metadata("/token?scope=api://AzureADTokenExchange/.default&client_id=" +
                                   std::string(kUamiClientId))
                .status,
            400u);
  EXPECT_EQ(stat_count(emulator_->stats(), "imds"), before) << "a refused request reached IMDS";
  // Any other resource is served as IMDS would.
  EXPECT_EQ(plain(kVault).status, 200u);
}

TEST_F(HardeningListenerTest, PassthroughResourcesIsAnAllowList) {
  auto config = default_config_object(*emulator_);
  config["sources"].as_object()["uami"].as_object()["passthrough_resources"] = json::array{kVault};
  Broker broker(dir_, json::serialize(config), "passthrough-list");
  const std::string plain = "/metadata/identity/oauth2/token?api-version=2018-02-01&client_id=" +
                            std::string(kUamiClientId) + "&resource=";
  EXPECT_EQ(broker.get_with_metadata(plain + kVault).status, 200u);
  EXPECT_EQ(broker.get_with_metadata(plain + kGraph).status, 400u);
  EXPECT_EQ(broker.get_with_metadata(plain + "api://AzureADTokenExchange").status, 400u);
  // Exchanged tokens for targets are not affected by the source's list.
  EXPECT_EQ(broker.get_with_metadata(token_target(kGraph)).status, 200u);
}

TEST_F(HardeningListenerTest, MetricsCanHaveTheirOwnListenerThatServesNoTokens) {
  auto config = default_config_object(*emulator_);
  config["metrics_listen"] = "127.0.0.1:0";
  Broker broker(dir_, json::serialize(config), "metrics-apart");
  const auto ready = json::parse(read_file(dir_.file("metrics-apart.ready"))).as_object();
  const std::string metrics_listen(ready.at("metrics_listen").as_string());
  const auto metrics_port =
      static_cast<unsigned short>(std::stoi(metrics_listen.substr(metrics_listen.rfind(':') + 1)));
  ASSERT_NE(metrics_port, broker.port());
  ASSERT_EQ(broker.get_with_metadata(token_target(kGraph)).status, 200u);

  const auto scrape = http_request("127.0.0.1", metrics_port, "GET", "/metrics", {});
  EXPECT_EQ(scrape.status, 200u);
  EXPECT_TRUE(metric_value(scrape.body, "ficbroker_cache_hits_total").has_value()) << scrape.body;
  EXPECT_EQ(http_request("127.0.0.1", metrics_port, "GET", "/healthz", {}).status, 200u);
  // The scraper's port never hands out a token, whatever the request says.
  const auto token = http_request(
      "127.0.0.1", metrics_port, "GET",
      "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" + std::string(kGraph),
      {{"Metadata", "true"}});
  EXPECT_EQ(token.status, 404u) << token.body;
  EXPECT_EQ(token.body.find("access_token"), std::string::npos);
  // And the token listener no longer serves /metrics.
  EXPECT_EQ(broker.get("/metrics").status, 404u);
}

// A listening socket as the service manager would hold it: bound by someone other than the broker.
int bound_listener() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);  // inherited by the broker: no CLOEXEC
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(fd, 64) != 0) {
    throw std::runtime_error("cannot bind a listener");
  }
  return fd;
}

unsigned short port_of_fd(int fd) {
  sockaddr_in addr{};
  socklen_t length = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length);
  return ntohs(addr.sin_port);
}

TEST_F(HardeningListenerTest, SocketActivationKeepsThePortAcrossACrash) {
  FdSet listener{{bound_listener()}};
  const int fd = listener.fds[0];
  const auto port = port_of_fd(fd);
  // As systemd starts it: the socket as fd 3, LISTEN_PID naming the broker's own pid.
  const std::vector<std::string> launcher{"/bin/sh", "-c",
                                          "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\" 3<&" +
                                              std::to_string(fd) + " " + std::to_string(fd) +
                                              "<&-"};
  auto config = default_config_object(*emulator_);
  config["listen"] = "127.0.0.1:1";  // not used: the service manager owns the address
  std::optional<Broker> broker;
  broker.emplace(dir_, json::serialize(config), "activated", launcher);
  EXPECT_EQ(broker->port(), port);
  EXPECT_EQ(log_events(broker->log(), "socket_activated").size(), 1u) << broker->log();
  EXPECT_EQ(broker->get_with_metadata(token_target(kGraph)).status, 200u);

  // A crash: the port stays held by the manager, nobody else can bind it, and a caller that
  // connects meanwhile waits in the backlog and is answered by the next run.
  broker->process().stop(SIGKILL);
  const int waiting = tcp_connect(port);
  ASSERT_GE(waiting, 0) << "the port was released by the crash";
  FdSet waiting_guard{{waiting}};
  ASSERT_TRUE(send_all(waiting, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  broker.emplace(dir_, json::serialize(config), "activated-again", launcher);
  EXPECT_EQ(raw_status(read_one_response(waiting, 10s)), 200u);
}

TEST_F(HardeningListenerTest, IdentityHeaderFileReadableByOthersIsWarnedAbout) {
  const std::string secret_path = dir_.file("identity-header");
  write_file(secret_path, std::string(kIdentityHeader) + "\n");
  auto config = default_config_object(*emulator_);
  config.erase("identity_header");
  config["identity_header_file"] = secret_path;

  ::chmod(secret_path.c_str(), 0644);
  Broker loose(dir_, json::serialize(config), "loose");
  const auto loose_log = loose.log();
  EXPECT_NE(loose_log.find("warning"), std::string::npos) << loose_log;
  EXPECT_NE(loose_log.find("identity_header_file"), std::string::npos) << loose_log;
  EXPECT_NE(loose_log.find("readable by other users"), std::string::npos) << loose_log;
  EXPECT_EQ(loose_log.find(kIdentityHeader), std::string::npos) << "the secret was logged";
  // The warning is a log line like any other (log shippers parse every line as JSON).
  const auto warnings = log_events(loose_log, "config_warning");
  ASSERT_EQ(warnings.size(), 1u) << loose_log;
  EXPECT_EQ(str(warnings[0], "level"), "warn");
  EXPECT_NE(str(warnings[0], "warning").find("readable by other users"), std::string::npos);
  // It still works: the App Service route accepts the secret from the file.
  EXPECT_EQ(loose
                .get("/msi/token?api-version=2019-08-01&resource=https://graph.microsoft.com",
                     {{"X-IDENTITY-HEADER", kIdentityHeader}})
                .status,
            200u);

  ::chmod(secret_path.c_str(), 0600);
  Broker tight(dir_, json::serialize(config), "tight");
  EXPECT_EQ(tight.log().find("readable by other users"), std::string::npos) << tight.log();
}

TEST_F(HardeningListenerTest, TokensAssertionsAndSecretsNeverReachTheLog) {
  // A token-file source whose assertion the test knows exactly, next to the IMDS source.
  const std::string assertion = emulator_->oidc_token(json::object{});
  const std::string token_file = dir_.file("federated-token");
  write_file(token_file, assertion);
  auto config = default_config_object(*emulator_);
  config["log_level"] = "debug";
  config["sources"].as_object()["wi"] = {{"type", "workload_identity"}, {"path", token_file}};
  // Plain tokens for the exchange audience are the assertion itself: served only when listed.
  config["sources"].as_object()["uami"].as_object()["passthrough_resources"] =
      json::array{"api://AzureADTokenExchange", "https://vault.azure.net"};
  config["targets"] = json::array{
      {{"tenant_id", kTenantA}, {"client_id", kApp}, {"source", "wi"}, {"default", true}},
      {{"tenant_id", kTenantB}, {"client_id", kApp}, {"source", "uami"}}};
  Broker broker(dir_, json::serialize(config), "secrets");

  std::vector<std::string> secrets{assertion, kIdentityHeader};
  const auto via_file = broker.get_with_metadata(token_target(kGraph));
  ASSERT_EQ(via_file.status, 200u) << via_file.body;
  secrets.push_back(access_token(via_file));
  const auto via_imds = broker.get_with_metadata(token_target(kGraph, kTenantB));
  ASSERT_EQ(via_imds.status, 200u) << via_imds.body;
  secrets.push_back(access_token(via_imds));
  // A plain managed-identity token (the kind of token used as an assertion).
  const auto mi = broker.get_with_metadata(
      std::string("/metadata/identity/oauth2/token?api-version=2018-02-01&resource="
                  "api://AzureADTokenExchange&client_id=") +
      kUamiClientId);
  ASSERT_EQ(mi.status, 200u) << mi.body;
  secrets.push_back(access_token(mi));
  const auto app_service =
      broker.get("/msi/token?api-version=2019-08-01&resource=https://vault.azure.net",
                 {{"X-IDENTITY-HEADER", kIdentityHeader}});
  ASSERT_EQ(app_service.status, 200u) << app_service.body;
  secrets.push_back(access_token(app_service));
  // Failures are logged in detail: they must not carry secrets either.
  emulator_->fault({{"target", "entra"}, {"action", "status"}, {"aadsts", 700213}, {"count", 1}});
  EXPECT_EQ(broker.get_with_metadata(token_target(kVault, kTenantB)).status, 400u);
  emulator_->fault({{"target", "entra"}, {"action", "wrong_types"}, {"count", -1}});
  EXPECT_EQ(broker.get_with_metadata(token_target("https://storage.azure.com", kTenantA)).status,
            503u);
  clear_faults(*emulator_);

  const auto log = broker.log();
  EXPECT_FALSE(log_events(log, "token_minted").empty()) << log;
  EXPECT_FALSE(log_events(log, "upstream_failure").empty()) << log;
  for (const auto& secret : secrets) {
    ASSERT_GE(secret.size(), 16u);
    EXPECT_EQ(log.find(secret), std::string::npos) << "a secret reached the log";
    if (secret.find('.') != std::string::npos) {
      const auto signature = secret.substr(secret.rfind('.') + 1, 40);
      EXPECT_EQ(log.find(signature), std::string::npos) << "a JWT signature reached the log";
    }
  }
  for (const auto& e : log_events(log, "token_minted")) {
    EXPECT_EQ(str(e, "token").size(), 8u) << "the token field must be a short fingerprint";
  }
}

// =============================================================================================
// A hostile upstream: interim (1xx) answers before the real one. Pools are shared across keys, so
// an interim answer taken as final would leave the real token in the connection for the next
// caller's request, for another resource.
// =============================================================================================

class HardeningUpstreamTest : public BrokerTest {
 protected:
  std::string audience_of(const Response& r) {
    const auto token = access_token(r);
    if (token.empty()) return {};
    return str(jwt_claims(token), "aud");
  }
};

TEST_F(HardeningUpstreamTest, EntraInterimAnswersAreSkippedAndNeverServedToTheNextKey) {
  ASSERT_EQ(broker_->get_with_metadata(token_target(kGraph)).status, 200u);  // warm the pool
  emulator_->fault({{"target", "entra"}, {"action", "interim"}, {"count", 1}});
  const auto vault = broker_->get_with_metadata(token_target(kVault));
  ASSERT_EQ(vault.status, 200u) << vault.body;
  EXPECT_EQ(audience_of(vault), kVault);
  // The next exchange, for another resource, reuses the pooled connection and must get its own.
  const auto storage = broker_->get_with_metadata(token_target("https://storage.azure.com"));
  ASSERT_EQ(storage.status, 200u) << storage.body;
  EXPECT_EQ(audience_of(storage), "https://storage.azure.com");
  EXPECT_EQ(stat_count(emulator_->stats(), "entra"), 3);
}

TEST_F(HardeningUpstreamTest, ImdsInterimAnswersAreSkipped) {
  emulator_->fault({{"target", "imds"}, {"action", "interim"}, {"count", 1}});
  const auto plain = broker_->get_with_metadata(
      "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" + std::string(kVault) +
      "&client_id=" + kUamiClientId);
  ASSERT_EQ(plain.status, 200u) << plain.body;
  EXPECT_EQ(audience_of(plain), kVault);
  const auto exchanged = broker_->get_with_metadata(token_target(kGraph));
  ASSERT_EQ(exchanged.status, 200u) << exchanged.body;
  EXPECT_EQ(audience_of(exchanged), kGraph);
}

}  // namespace
}  // namespace ficbroker::testing
