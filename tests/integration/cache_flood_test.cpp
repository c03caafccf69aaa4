// The cache and the upstream fetches under a local attacker: a flood of requests for resources
// Entra rejects must not empty the cache of the keys in use (nor cost extra assertion fetches),
// and a burst of concurrent cold requests must neither exhaust memory nor open a connection per
// request upstream. Bounds on memory and counts only, never on time.
#include "fixture.hpp"

#include <cstdio>
#include <fstream>
#include <map>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace ficbroker::testing {
namespace {

// The broker under test is built with the same flags as this test binary.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitizedBuild = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitizedBuild = true;
#else
constexpr bool kSanitizedBuild = false;
#endif
#else
constexpr bool kSanitizedBuild = false;
#endif
namespace json = boost::json;
using namespace std::chrono_literals;

// A field of /proc/PID/status in KiB (VmRSS, VmHWM); -1 when it cannot be read.
long proc_status_kib(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, field.size() + 1, field + ":") == 0) {
      return std::stol(line.substr(field.size() + 1));
    }
  }
  return -1;
}

std::string config_with(const Emulator& emulator, const json::object& cache) {
  json::object config = default_config_object(emulator);
  config["cache"] = cache;
  return json::serialize(config);
}

TEST(CacheFloodTest, AFloodOfRejectedResourcesLeavesTheKeyInUseAHitAndTheAssertionCached) {
  TempDir dir;
  Emulator emulator(dir);
  Broker broker(dir, config_with(emulator, {{"max_entries", 8}}));

  const auto first = broker.get_with_metadata(token_target(kGraph));
  ASSERT_EQ(first.status, 200u) << first.body;
  const auto before = emulator.stats();

  // Entra rejects every one of these (AADSTS500011: no such resource in the tenant).
  constexpr int kFlood = 300;
  int rejected = 0;
  for (int i = 0; i < kFlood; ++i) {
    const auto r =
        broker.get_with_metadata(token_target("https://rejected-" + std::to_string(i) + ".test"));
    if (r.status == 400) ++rejected;
  }
  EXPECT_EQ(rejected, kFlood);
  const auto after_flood = emulator.stats();

  const auto again = broker.get_with_metadata(token_target(kGraph));
  ASSERT_EQ(again.status, 200u) << again.body;
  const auto after = emulator.stats();

  std::printf("flood: imds calls %lld -> %lld, entra calls %lld -> %lld -> %lld\n",
              static_cast<long long>(stat_count(before, "imds")),
              static_cast<long long>(stat_count(after, "imds")),
              static_cast<long long>(stat_count(before, "entra")),
              static_cast<long long>(stat_count(after_flood, "entra")),
              static_cast<long long>(stat_count(after, "entra")));
  // The assertion was fetched once, before the flood, and never again.
  EXPECT_EQ(stat_count(after, "imds"), stat_count(before, "imds"));
  // One Entra call per rejected resource, none for the key in use: it is still a hit.
  EXPECT_EQ(stat_count(after_flood, "entra"), stat_count(before, "entra") + kFlood);
  EXPECT_EQ(stat_count(after, "entra"), stat_count(after_flood, "entra"));
}

// ---- the burst -----------------------------------------------------------------------------

// The default world, with `extra` more resources in tenant A, written to a file for --world.
std::string world_with_resources(const TempDir& dir, int extra) {
  const ProcessResult printed = run_process({EMULATOR_BIN, "--print-default-world"});
  if (printed.exit_code != 0) throw std::runtime_error("emulator did not print its world");
  json::object world = json::parse(printed.out).as_object();
  for (auto& tenant : world.at("tenants").as_array()) {
    if (tenant.as_object().at("id").as_string() != kTenantA) continue;
    auto& resources = tenant.as_object().at("resources").as_array();
    for (int i = 0; i < extra; ++i) {
      resources.emplace_back("https://burst-" + std::to_string(i) + ".test");
    }
  }
  const std::string path = dir.file("world.json");
  write_file(path, json::serialize(world));
  return path;
}

struct BurstCall {
  int fd = -1;
  std::string in;
  bool done = false;
};

// Opens every connection and sends every request before reading any answer, so the broker has
// them all in hand at once; then reads each answer to its end (the requests ask for close).
std::vector<BurstCall> burst(unsigned short port, int n, std::chrono::milliseconds limit) {
  std::vector<BurstCall> calls(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    BurstCall& c = calls[static_cast<std::size_t>(i)];
    c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (c.fd < 0 || ::connect(c.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      throw std::runtime_error("connect failed");
    }
    const std::string request = "GET " +
                                token_target("https://burst-" + std::to_string(i) + ".test") +
                                " HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\n"
                                "Connection: close\r\n\r\n";
    if (::send(c.fd, request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size())) {
      throw std::runtime_error("send failed");
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + limit;
  std::size_t open = calls.size();
  while (open > 0 && std::chrono::steady_clock::now() < deadline) {
    std::vector<pollfd> fds;
    std::vector<BurstCall*> owners;
    for (auto& c : calls) {
      if (c.done) continue;
      fds.push_back({c.fd, POLLIN, 0});
      owners.push_back(&c);
    }
    if (::poll(fds.data(), fds.size(), 100) <= 0) continue;
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      char buf[4096];
      const ssize_t got = ::recv(fds[i].fd, buf, sizeof buf, 0);
      if (got > 0) {
        owners[i]->in.append(buf, static_cast<std::size_t>(got));
      } else {
        owners[i]->done = true;
        ::close(owners[i]->fd);
        --open;
      }
    }
  }
  for (auto& c : calls) {
    if (!c.done) ::close(c.fd);
  }
  return calls;
}

bool has_retry_after(const std::string& raw) {
  const auto head = raw.substr(0, raw.find("\r\n\r\n"));
  std::string lower;
  for (char ch : head) lower.push_back(static_cast<char>(std::tolower(ch)));
  return lower.find("\r\nretry-after: ") != std::string::npos;
}

TEST(CacheFloodTest, ABurstOfColdRequestsStaysInMemoryAndWithinTheUpstreamBound) {
  constexpr int kBurst = 2000;
  constexpr std::int64_t kPerHost = 16;
  TempDir dir;
  Emulator emulator(dir, {"--world", world_with_resources(dir, kBurst)});
  Broker broker(dir, default_config(emulator));
  const pid_t pid = broker.process().pid();
  const auto warm = broker.get_with_metadata(token_target(kGraph));  // the assertion is cached
  ASSERT_EQ(warm.status, 200u) << warm.body;
  emulator.reset();
  // Each exchange takes a while, as Entra's do, so that the requests overlap upstream.
  emulator.settings({{"delay_ms", 200}});
  const long rss_before = proc_status_kib(pid, "VmRSS");

  const auto calls = burst(broker.port(), kBurst, 60s);

  std::map<unsigned, int> by_status;
  int hung = 0;
  int without_retry_after = 0;
  for (const auto& c : calls) {
    if (!c.done) ++hung;
    const unsigned status = raw_status(c.in);
    ++by_status[status];
    if (status == 503 && !has_retry_after(c.in)) ++without_retry_after;
  }
  const auto stats = emulator.stats();
  const long hwm = proc_status_kib(pid, "VmHWM");
  long rss_after = -1;
  // Memory is handed back once the burst has drained.
  wait_until(
      [&] {
        rss_after = proc_status_kib(pid, "VmRSS");
        return rss_after < 48 * 1024;
      },
      10s, 200ms);
  std::printf(
      "burst: VmRSS before %ld KiB, VmHWM %ld KiB, VmRSS after %ld KiB; entra calls %lld,"
      " peak concurrent at entra %lld; 200: %d, 503: %d, other: %d, hung: %d\n",
      rss_before, hwm, rss_after, static_cast<long long>(stat_count(stats, "entra")),
      static_cast<long long>(stat_count(stats, "https_peak_in_progress")), by_status[200],
      by_status[503], kBurst - by_status[200] - by_status[503], hung);

  EXPECT_EQ(hung, 0);
  EXPECT_EQ(by_status[200] + by_status[503], kBurst);
  EXPECT_EQ(without_retry_after, 0);
  EXPECT_GT(by_status[200], 0);
  EXPECT_LE(stat_count(stats, "https_peak_in_progress"), kPerHost);
  if (!kSanitizedBuild) {
    // The unit's MemoryHigh. A sanitizer build's broker carries shadow memory and a quarantine of
    // freed blocks (over 100 MiB before the burst), so absolute bounds hold only for the real
    // binary, which the uninstrumented CI pass tests; the sanitizer passes check the counts.
    EXPECT_LT(hwm, 96 * 1024);
    EXPECT_LT(rss_after, 48 * 1024);
  }
  // Every caller that got a token cost one exchange; none cost more.
  EXPECT_LE(stat_count(stats, "entra"), kBurst);
}

}  // namespace
}  // namespace ficbroker::testing
