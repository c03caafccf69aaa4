// Operations: what an operator relies on — /metrics (checked by promtool), /readyz around prewarm
// and upstream outages, signals (drain on SIGTERM, reload on SIGHUP), the CLI (`token`,
// `--check-config`) and the JSON-lines log. Real binaries, real sockets.
#include "fixture.hpp"

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <netinet/in.h>
#include <optional>
#include <poll.h>
#include <signal.h>
#include <sstream>
#include <sys/socket.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace ficbroker::testing {
namespace {
namespace json = boost::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::optional<std::string> find_in_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    const auto end = dirs.find(':', start);
    const std::string candidate =
        dirs.substr(start, end == std::string::npos ? std::string::npos : end - start) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return std::nullopt;
}

bool can_connect(unsigned short port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// A loopback port that nothing listens on right now.
unsigned short unused_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// A TCP relay from 127.0.0.1:listen_port to 127.0.0.1:target_port: an upstream that can be
// "down" (nothing listening: connection refused) and then come back, on the same address.
class TcpForwarder {
 public:
  TcpForwarder(unsigned short listen_port, unsigned short target_port) : target_(target_port) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(listen_port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listener_, 64) != 0) {
      ::close(listener_);
      throw std::runtime_error("forwarder cannot listen on " + std::to_string(listen_port));
    }
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~TcpForwarder() {
    stop_ = true;
    acceptor_.join();
    ::close(listener_);
    std::lock_guard lock(mutex_);
    for (auto& t : pumps_) t.join();
  }

 private:
  void accept_loop() {
    while (!stop_) {
      pollfd p{listener_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      const int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      const int upstream = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(target_);
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (::connect(upstream, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(upstream);
        ::close(client);
        continue;
      }
      std::lock_guard lock(mutex_);
      pumps_.emplace_back([this, client, upstream] { pump(client, upstream); });
    }
  }
  void pump(int a, int b) {
    char buf[16384];
    while (!stop_) {
      pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
      if (::poll(p, 2, 100) <= 0) continue;
      bool done = false;
      for (int i = 0; i < 2 && !done; ++i) {
        if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        const auto n = ::recv(p[i].fd, buf, sizeof buf, 0);
        if (n <= 0) {
          done = true;
          break;
        }
        const int to = i == 0 ? b : a;
        std::size_t sent = 0;
        while (sent < static_cast<std::size_t>(n)) {
          const auto w = ::send(to, buf + sent, static_cast<std::size_t>(n) - sent, MSG_NOSIGNAL);
          if (w <= 0) {
            done = true;
            break;
          }
          sent += static_cast<std::size_t>(w);
        }
      }
      if (done) break;
    }
    ::close(a);
    ::close(b);
  }

  unsigned short target_;
  int listener_ = -1;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::mutex mutex_;
  std::vector<std::thread> pumps_;
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

// =============================================================================================
// /metrics
// =============================================================================================

class OpsMetricsTest : public BrokerTest {};

TEST_F(OpsMetricsTest, MetricsPassPromtoolAndCoverRequestsCacheUpstreamAndExpiry) {
  ASSERT_EQ(broker_->get_with_metadata(token_target(kGraph)).status, 200u);  // miss
  ASSERT_EQ(broker_->get_with_metadata(token_target(kGraph)).status, 200u);  // hit
  // Eight callers on one uncached key while the upstream is slow: one fetch, seven coalesced.
  emulator_->settings({{"delay_ms", 1000}});
  std::vector<std::thread> callers;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    callers.emplace_back([&] {
      if (get_or_error(*broker_, token_target(kVault), {{"Metadata", "true"}}).status == 200) ++ok;
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_EQ(ok.load(), 8);
  emulator_->settings({{"delay_ms", 0}});
  ASSERT_EQ(broker_->get_with_metadata(token_target(kGraph, kTenantB)).status, 200u);
  ASSERT_EQ(broker_->get(token_target(kGraph)).status, 400u);  // no Metadata header

  const auto response = broker_->get("/metrics");
  ASSERT_EQ(response.status, 200u);
  EXPECT_NE(response.header("content-type").find("text/plain"), std::string::npos);
  const std::string& m = response.body;

  // Requests by route and status.
  EXPECT_EQ(metric_value(m, R"(ficbroker_requests_total{route="token",status="200"})"), 11.0) << m;
  EXPECT_EQ(metric_value(m, R"(ficbroker_requests_total{route="token",status="400"})"), 1.0) << m;
  // Cache outcomes.
  EXPECT_GE(metric_value(m, "ficbroker_cache_hits_total").value_or(0), 1.0) << m;
  EXPECT_GE(metric_value(m, "ficbroker_cache_misses_total").value_or(0), 3.0) << m;
  EXPECT_GE(metric_value(m, "ficbroker_cache_coalesced_total").value_or(0), 1.0) << m;
  // Upstream latency histograms, IMDS and Entra, with the tenant label.
  const std::string entra_a = std::string(R"(upstream="entra",tenant=")") + kTenantA + "\"";
  const std::string entra_b = std::string(R"(upstream="entra",tenant=")") + kTenantB + "\"";
  EXPECT_EQ(metric_value(m, "ficbroker_upstream_duration_seconds_count{" + entra_a + "}"), 2.0)
      << m;
  EXPECT_EQ(metric_value(m, "ficbroker_upstream_duration_seconds_count{" + entra_b + "}"), 1.0)
      << m;
  EXPECT_EQ(
      metric_value(m, "ficbroker_upstream_duration_seconds_bucket{" + entra_a + R"(,le="+Inf"})"),
      2.0)
      << m;
  EXPECT_EQ(
      metric_value(m, R"(ficbroker_upstream_duration_seconds_count{upstream="imds",tenant=""})"),
      1.0)
      << m;
  // Seconds to expiry per cached key: the three tokens and the assertion.
  const std::string graph_a =
      std::string(R"(ficbroker_token_expiry_seconds{kind="token",tenant=")") + kTenantA +
      R"(",app=")" + kApp + R"(",resource="https://graph.microsoft.com"})";
  const auto expiry = metric_value(m, graph_a);
  ASSERT_TRUE(expiry.has_value()) << m;
  EXPECT_GT(*expiry, 3000.0);
  EXPECT_LE(*expiry, 3600.0);
  std::size_t expiry_series = 0;
  for (std::size_t pos = 0;
       (pos = m.find("\nficbroker_token_expiry_seconds{", pos)) != std::string::npos; ++pos) {
    ++expiry_series;
  }
  EXPECT_EQ(expiry_series, 4u) << m;
  EXPECT_NE(m.find(R"(ficbroker_token_expiry_seconds{kind="assertion",source="uami")"),
            std::string::npos)
      << m;
  // Build information.
  EXPECT_NE(m.find("ficbroker_build_info{version=\""), std::string::npos) << m;

  const auto promtool = find_in_path("promtool");
  if (!promtool) {
    GTEST_SKIP() << "promtool not found (Debian package 'prometheus'); the content checks above "
                    "ran, the format check did not";
  }
  const std::string file = dir_.file("metrics.txt");
  write_file(file, m);
  const auto check = run_process({"/bin/sh", "-c", *promtool + " check metrics < '" + file + "'"});
  EXPECT_EQ(check.exit_code, 0) << "promtool check metrics:\n"
                                << check.out << check.err << "\n"
                                << m;
}

// =============================================================================================
// /readyz
// =============================================================================================

class OpsReadinessTest : public ::testing::Test {
 protected:
  std::string prewarm_config(const Emulator& emulator, const std::string& imds_endpoint) {
    auto config = default_config_object(emulator);
    config["sources"].as_object()["uami"].as_object()["endpoint"] = imds_endpoint;
    auto& first = config["targets"].as_array()[0].as_object();
    first["prewarm"] = json::array{kGraph, kVault};
    return json::serialize(config);
  }
  TempDir dir_;
};

TEST_F(OpsReadinessTest, ReadyzIs503UntilThePrewarmTokensAreCached) {
  Emulator emulator(dir_);
  emulator.settings({{"delay_ms", 1500}});  // the prewarm fetch takes > 3 s (IMDS, then Entra)
  Broker broker(
      dir_, prewarm_config(emulator, "http://127.0.0.1:" + std::to_string(emulator.http_port())));
  const auto start = Clock::now();
  const auto early = broker.get("/readyz");
  EXPECT_LT(seconds_since(start), 1.0) << "a readiness probe waited on the upstream";
  EXPECT_EQ(early.status, 503u) << early.body;
  EXPECT_NE(early.body.find("error"), std::string::npos) << early.body;
  EXPECT_EQ(metric_value(metrics_of(broker), "ficbroker_ready"), 0.0);
  EXPECT_EQ(broker.get("/healthz").status, 200u) << "liveness does not depend on prewarm";

  ASSERT_TRUE(wait_until([&] { return broker.get("/readyz").status == 200; }, 20s)) << broker.log();
  EXPECT_EQ(metric_value(metrics_of(broker), "ficbroker_ready"), 1.0);
  // Ready means cached: both prewarmed resources are served without an upstream call.
  const auto entra = stat_count(emulator.stats(), "entra");
  EXPECT_EQ(entra, 2);
  for (const char* resource : {kGraph, kVault}) {
    const auto t0 = Clock::now();
    EXPECT_EQ(broker.get_with_metadata(token_target(resource)).status, 200u);
    EXPECT_LT(seconds_since(t0), 1.0) << resource << " was not cached";
  }
  EXPECT_EQ(stat_count(emulator.stats(), "entra"), entra);
}

TEST_F(OpsReadinessTest, ReadyzTurnsReadyWhenTheUpstreamComesBack) {
  Emulator emulator(dir_);
  const unsigned short imds_port = unused_port();  // IMDS is down: connection refused
  Broker broker(dir_, prewarm_config(emulator, "http://127.0.0.1:" + std::to_string(imds_port)));
  ASSERT_FALSE(can_connect(imds_port));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(broker.get("/readyz").status, 503u);
    std::this_thread::sleep_for(1s);
  }
  EXPECT_EQ(stat_count(emulator.stats(), "entra"), 0);

  TcpForwarder imds_is_back(imds_port, emulator.http_port());
  ASSERT_TRUE(wait_until([&] { return broker.get("/readyz").status == 200; }, 45s, 250ms))
      << broker.log();
  const auto stats = emulator.stats();
  EXPECT_GE(stat_count(stats, "imds"), 1);
  EXPECT_EQ(stat_count(stats, "entra"), 2);
  EXPECT_FALSE(log_events(broker.log(), "prewarm_failed").empty() &&
               log_events(broker.log(), "upstream_failure").empty())
      << "the outage left no trace in the log";
}

// =============================================================================================
// Signals
// =============================================================================================

class OpsSignalsTest : public BrokerTest {};

TEST_F(OpsSignalsTest, SigtermLetsTheRequestInFlightFinishThenExitsZero) {
  emulator_->settings({{"delay_ms", 2000}});  // IMDS then Entra: about 4 s in flight
  Response in_flight;
  std::atomic<bool> done{false};
  std::thread caller([&] {
    in_flight = get_or_error(*broker_, token_target(kGraph), {{"Metadata", "true"}});
    done = true;
  });
  ASSERT_TRUE(wait_until([&] { return stat_count(emulator_->stats(), "imds") == 1; }, 5s));
  broker_->process().signal(SIGTERM);
  // New connections are refused while the in-flight request drains.
  EXPECT_TRUE(wait_until([&] { return !can_connect(broker_->port()); }, 2s))
      << "the listener is still accepting after SIGTERM";
  EXPECT_FALSE(done.load()) << "the request finished before it could be drained";
  caller.join();
  EXPECT_EQ(in_flight.status, 200u) << in_flight.body;
  EXPECT_FALSE(access_token(in_flight).empty());
  EXPECT_EQ(broker_->process().stop(0, 15s), 0) << broker_->log();
  const auto log = broker_->log();
  EXPECT_FALSE(log_events(log, "shutting_down").empty()) << log;
  EXPECT_FALSE(log_events(log, "stopped").empty()) << log;
}

TEST_F(OpsSignalsTest, SighupAddsATargetAndKeepsServingCachedTokens) {
  auto config = default_config_object(*emulator_);
  config["targets"] = json::array{
      {{"tenant_id", kTenantA}, {"client_id", kApp}, {"source", "uami"}, {"default", true}}};
  Broker broker(dir_, json::serialize(config), "reloading");
  const auto first = broker.get_with_metadata(token_target(kGraph));
  ASSERT_EQ(first.status, 200u) << first.body;
  const auto before = broker.get_with_metadata(token_target(kGraph, kTenantB));
  EXPECT_EQ(before.status, 400u) << "tenant B is not configured yet: " << before.body;

  config["targets"].as_array().push_back(
      {{"tenant_id", kTenantB}, {"client_id", kApp}, {"source", "uami"}});
  write_file(broker.config_path(), json::serialize(config));
  broker.process().signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return !log_events(broker.log(), "config_reloaded").empty(); }, 5s))
      << broker.log();

  const auto entra = stat_count(emulator_->stats(), "entra");
  const auto imds = stat_count(emulator_->stats(), "imds");
  const auto same = broker.get_with_metadata(token_target(kGraph));
  ASSERT_EQ(same.status, 200u) << same.body;
  EXPECT_EQ(access_token(same), access_token(first));
  EXPECT_EQ(stat_count(emulator_->stats(), "entra"), entra) << "the unchanged target re-fetched";

  const auto added = broker.get_with_metadata(token_target(kGraph, kTenantB));
  ASSERT_EQ(added.status, 200u) << added.body;
  EXPECT_EQ(str(jwt_claims(access_token(added)), "tid"), kTenantB);
  EXPECT_EQ(stat_count(emulator_->stats(), "entra"), entra + 1);
  EXPECT_EQ(stat_count(emulator_->stats(), "imds"), imds)
      << "the unchanged source's cached assertion was not reused";
}

TEST_F(OpsSignalsTest, SighupThatRepointsASourceServesTheNewIdentityNotTheOldCachedToken) {
  constexpr const char* kOtherClientId = "aaaaaaaa-0000-0000-0000-000000000002";
  constexpr const char* kOtherObjectId = "bbbbbbbb-0000-0000-0000-000000000002";
  const auto plain = [](const std::string& client_id) {
    return "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" +
           std::string(kGraph) + "&client_id=" + client_id;
  };
  auto config = default_config_object(*emulator_);
  Broker broker(dir_, json::serialize(config), "repointed");
  const auto before = broker.get_with_metadata(plain(kUamiClientId));
  ASSERT_EQ(before.status, 200u) << before.body;
  ASSERT_EQ(str(jwt_claims(access_token(before)), "oid"), kUamiObjectId);

  config["sources"].as_object()["uami"].as_object()["client_id"] = kOtherClientId;
  write_file(broker.config_path(), json::serialize(config));
  broker.process().signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return !log_events(broker.log(), "config_reloaded").empty(); }, 5s))
      << broker.log();

  const auto imds = stat_count(emulator_->stats(), "imds");
  const auto after = broker.get_with_metadata(plain(kOtherClientId));
  ASSERT_EQ(after.status, 200u) << after.body;
  EXPECT_NE(access_token(after), access_token(before))
      << "the old identity's cached token was served for the new one";
  const auto claims = jwt_claims(access_token(after));
  EXPECT_EQ(str(claims, "oid"), kOtherObjectId);
  EXPECT_EQ(str(claims, "appid"), kOtherClientId);
  EXPECT_EQ(stat_count(emulator_->stats(), "imds"), imds + 1);
  // The old identity is no longer configured: asking for it is refused, not served from cache.
  EXPECT_EQ(broker.get_with_metadata(plain(kUamiClientId)).status, 400u);
}

TEST_F(OpsSignalsTest, SighupThatKeepsASourceKeepsTheIdsItLearnedAndItsPlainTokens) {
  const std::string by_object =
      "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" + std::string(kVault) +
      "&object_id=" + kUamiObjectId;
  auto config = default_config_object(*emulator_);
  Broker broker(dir_, json::serialize(config), "kept");
  // The object id is not configured: the source learns it from the assertion it fetches.
  ASSERT_EQ(broker.get_with_metadata(token_target(kGraph)).status, 200u);
  const auto first = broker.get_with_metadata(by_object);
  ASSERT_EQ(first.status, 200u) << first.body;

  config["log_level"] = "debug";  // a change that leaves the source as it was
  write_file(broker.config_path(), json::serialize(config));
  broker.process().signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return !log_events(broker.log(), "config_reloaded").empty(); }, 5s))
      << broker.log();

  const auto imds = stat_count(emulator_->stats(), "imds");
  const auto again = broker.get_with_metadata(by_object);
  ASSERT_EQ(again.status, 200u) << again.body;
  EXPECT_EQ(access_token(again), access_token(first));
  EXPECT_EQ(stat_count(emulator_->stats(), "imds"), imds) << "the cached plain token was dropped";
}

TEST_F(OpsSignalsTest, SighupWithABrokenConfigIsRefusedAndTheOldConfigKeepsWorking) {
  const auto first = broker_->get_with_metadata(token_target(kGraph));
  ASSERT_EQ(first.status, 200u) << first.body;
  const std::string good = read_file(broker_->config_path());

  write_file(broker_->config_path(), "{ \"listen\": \"127.0.0.1:0\", not json");
  broker_->process().signal(SIGHUP);
  ASSERT_TRUE(wait_until(
      [&] { return log_events(broker_->log(), "config_reload_refused").size() == 1; }, 5s))
      << broker_->log();
  // Valid JSON, invalid config: refused as well.
  auto wrong = default_config_object(*emulator_);
  wrong["targets"].as_array()[0].as_object()["tenant_id"] = "not a tenant!";
  write_file(broker_->config_path(), json::serialize(wrong));
  broker_->process().signal(SIGHUP);
  ASSERT_TRUE(wait_until(
      [&] { return log_events(broker_->log(), "config_reload_refused").size() == 2; }, 5s))
      << broker_->log();
  EXPECT_TRUE(log_events(broker_->log(), "config_reloaded").empty());

  ASSERT_TRUE(broker_->process().running());
  const auto cached = broker_->get_with_metadata(token_target(kGraph));
  ASSERT_EQ(cached.status, 200u) << cached.body;
  EXPECT_EQ(access_token(cached), access_token(first));
  // The old targets still mint new tokens.
  const auto fresh = broker_->get_with_metadata(token_target(kVault, kTenantB));
  ASSERT_EQ(fresh.status, 200u) << fresh.body;
  EXPECT_EQ(str(jwt_claims(access_token(fresh)), "tid"), kTenantB);
  EXPECT_EQ(broker_->get("/healthz").status, 200u);
  write_file(broker_->config_path(), good);
}

// =============================================================================================
// Command line
// =============================================================================================

class OpsCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    emulator_.emplace(dir_);
    config_ = dir_.file("cli.jsonc");
    write_file(config_, default_config(*emulator_));
    ::chmod(config_.c_str(), 0600);  // holds identity_header: keep it private (no warning)
  }
  TempDir dir_;
  std::optional<Emulator> emulator_;
  std::string config_;
};

TEST_F(OpsCliTest, TokenCommandPrintsTheTokenJsonAndExitsZero) {
  const auto run = run_process(
      {FICBROKER_BIN, "token", "--config", config_, "--resource", kGraph, "--tenant", kTenantB});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_EQ(run.err, "");
  const auto body = json::parse(run.out).as_object();
  EXPECT_EQ(str(body, "resource"), kGraph);
  EXPECT_EQ(str(body, "token_type"), "Bearer");
  const auto claims = jwt_claims(str(body, "access_token"));
  EXPECT_EQ(str(claims, "tid"), kTenantB);
  EXPECT_EQ(str(claims, "aud"), kGraph);
  EXPECT_EQ(stat_count(emulator_->stats(), "entra"), 1);
}

TEST_F(OpsCliTest, TokenCommandForAnUnknownTenantExitsOneWithTheErrorOnStderr) {
  const std::string unknown = "99999999-9999-9999-9999-999999999999";
  const auto run = run_process(
      {FICBROKER_BIN, "token", "--config", config_, "--resource", kGraph, "--tenant", unknown});
  EXPECT_EQ(run.exit_code, 1) << run.out << run.err;
  EXPECT_EQ(run.out, "");
  EXPECT_NE(run.err.find(unknown), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("error"), std::string::npos) << run.err;
  EXPECT_EQ(stat_count(emulator_->stats(), "entra"), 0);
}

TEST_F(OpsCliTest, CheckConfigExitsZeroWhenValidAndNamesEveryWrongKeyOtherwise) {
  const auto valid = run_process({FICBROKER_BIN, "--check-config", "--config", config_});
  EXPECT_EQ(valid.exit_code, 0) << valid.out << valid.err;
  EXPECT_NE(valid.out.find("valid"), std::string::npos) << valid.out;

  auto config = default_config_object(*emulator_);
  config["listn"] = "127.0.0.1:8181";
  config["cache"] = {{"min_validity_seconds", -1}};
  auto& targets = config["targets"].as_array();
  targets[0].as_object()["tenant_id"] = "not a tenant!";
  targets[1].as_object()["source"] = "nope";
  const std::string bad = dir_.file("bad.jsonc");
  write_file(bad, json::serialize(config));
  const auto invalid = run_process({FICBROKER_BIN, "--check-config", "--config", bad});
  EXPECT_NE(invalid.exit_code, 0);
  EXPECT_NE(invalid.exit_code, -1);
  const auto text = invalid.out + invalid.err;
  for (const char* key :
       {"listn", "cache.min_validity_seconds", "targets[0].tenant_id", "targets[1].source"}) {
    EXPECT_NE(text.find(key), std::string::npos) << key << " not named in:\n" << text;
  }

  const auto missing =
      run_process({FICBROKER_BIN, "--check-config", "--config", dir_.file("does-not-exist.jsonc")});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE((missing.out + missing.err).find("does-not-exist.jsonc"), std::string::npos);
}

// =============================================================================================
// The JSON-lines log
// =============================================================================================

class OpsLogTest : public BrokerTest {};

TEST_F(OpsLogTest, OneJsonLinePerRequestWithRouteStatusLatencyTenantResourceAndCacheOutcome) {
  struct Expected {
    std::string route;
    unsigned status;
    std::string tenant;
    std::string resource;
    std::string cache;
  };
  std::vector<Expected> expected;
  auto token_call = [&](const std::string& resource, const std::string& tenant, unsigned status,
                        const std::string& cache) {
    const auto r = broker_->get_with_metadata(token_target(resource, tenant));
    EXPECT_EQ(r.status, status) << r.body;
    expected.push_back({"token", status, tenant, resource, cache});
  };
  token_call(kGraph, "", 200, "miss");
  token_call(kGraph, "", 200, "hit");
  token_call(kGraph, kTenantB, 200, "miss");
  token_call(kGraph, "99999999-9999-9999-9999-999999999999", 400, "error");
  const auto imds = broker_->get_with_metadata(
      "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net");
  EXPECT_EQ(imds.status, 200u);
  expected.push_back({"imds", 200, "", kVault, "miss"});
  const auto app_service =
      broker_->get("/msi/token?api-version=2019-08-01&resource=https://vault.azure.net",
                   {{"X-IDENTITY-HEADER", kIdentityHeader}});
  EXPECT_EQ(app_service.status, 200u);
  expected.push_back({"app_service", 200, "", kVault, "hit"});
  // Probes are not request-logged.
  EXPECT_EQ(broker_->get("/healthz").status, 200u);
  EXPECT_EQ(broker_->get("/readyz").status, 200u);

  const auto log = broker_->log();
  const auto lines = log_events(log, "request");
  ASSERT_EQ(lines.size(), expected.size()) << log;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    const auto& line = lines[i];
    EXPECT_EQ(str(line, "route"), expected[i].route);
    ASSERT_TRUE(line.contains("status") && line.at("status").is_int64());
    EXPECT_EQ(line.at("status").as_int64(), expected[i].status);
    ASSERT_TRUE(line.contains("latency_us") && line.at("latency_us").is_int64());
    EXPECT_GE(line.at("latency_us").as_int64(), 0);
    ASSERT_TRUE(line.contains("tenant") && line.at("tenant").is_string());
    EXPECT_EQ(str(line, "tenant"), expected[i].tenant);
    EXPECT_EQ(str(line, "resource"), expected[i].resource);
    EXPECT_EQ(str(line, "cache"), expected[i].cache);
    EXPECT_EQ(str(line, "level"), "info");
    EXPECT_FALSE(str(line, "ts").empty());
  }
  // Every line the daemon writes, to stdout or stderr, is one JSON object.
  std::istringstream in(log);
  std::string text;
  while (std::getline(in, text)) {
    boost::system::error_code ec;
    const auto v = json::parse(text, ec);
    EXPECT_TRUE(!ec && v.is_object() && v.as_object().contains("event")) << text;
  }
}

TEST_F(OpsLogTest, UpstreamFailureLineCarriesAadstsAndCorrelationId) {
  emulator_->fault({{"target", "entra"}, {"action", "status"}, {"aadsts", 700213}, {"count", 1}});
  const auto r = broker_->get_with_metadata(token_target(kGraph, kTenantB));
  EXPECT_EQ(r.status, 400u) << r.body;
  const auto failures = log_events(broker_->log(), "upstream_failure");
  ASSERT_EQ(failures.size(), 1u) << broker_->log();
  const auto& f = failures[0];
  EXPECT_EQ(str(f, "upstream"), "entra");
  EXPECT_EQ(str(f, "tenant"), kTenantB);
  EXPECT_EQ(str(f, "app"), kApp);
  ASSERT_TRUE(f.contains("aadsts") && f.at("aadsts").is_int64()) << json::serialize(f);
  EXPECT_EQ(f.at("aadsts").as_int64(), 700213);
  ASSERT_TRUE(f.contains("status") && f.at("status").is_int64());
  EXPECT_EQ(f.at("status").as_int64() / 100, 4) << "Entra's own HTTP status";
  const auto correlation = str(f, "correlation_id");
  EXPECT_EQ(correlation.size(), 36u) << json::serialize(f);
  EXPECT_EQ(correlation.find_first_not_of("0123456789abcdef-"), std::string::npos) << correlation;
}

}  // namespace
}  // namespace ficbroker::testing
