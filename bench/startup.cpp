// ficbroker_startup: start-to-ready time of ficbroker, measured from just before posix_spawn()
// until (a) the --ready-file exists and (b) GET /healthz answers 200. Polls every 100 µs, both
// conditions in the same loop. Each run is stopped with SIGTERM (SIGKILL after 5 s) before the
// next.
//
//   ficbroker_startup --binary PATH --config-template FILE --workdir DIR [--runs 20]
//
// The template's "@PORT@" is replaced by a port that was free a moment before (the health check
// needs to know the port before the ready file names it).
#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spawn.h>
#include <sstream>
#include <string>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "ficbroker_startup: %s\n"
               "usage: ficbroker_startup --binary PATH --config-template FILE --workdir DIR "
               "[--runs N]\n",
               why);
  std::exit(2);
}

unsigned short free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::perror("free_port");
    std::exit(1);
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

// One blocking GET /healthz on loopback; true on a 200.
bool healthz_ok(unsigned short port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  bool ok = false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    timeval tv{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const std::string req = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                            "\r\nConnection: close\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[512];
      std::size_t got = 0;
      while (got < 12) {
        const ssize_t n = ::recv(fd, buf + got, sizeof buf - got, 0);
        if (n <= 0) break;
        got += static_cast<std::size_t>(n);
      }
      ok = got >= 12 && std::strncmp(buf, "HTTP/1.1 200", 12) == 0;
    }
  }
  ::close(fd);
  return ok;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

double cpu_ms(const rusage& ru) {
  return (static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3) +
         (static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3);
}

// Stops the child and returns the CPU time (user + system, ms) it used over its whole life.
double stop(pid_t pid) {
  ::kill(pid, SIGTERM);
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  rusage ru{};
  int status = 0;
  while (Clock::now() < deadline) {
    if (::wait4(pid, &status, WNOHANG, &ru) == pid) return cpu_ms(ru);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ::kill(pid, SIGKILL);
  ::wait4(pid, &status, 0, &ru);
  return cpu_ms(ru);
}

double median(std::vector<double> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string binary, templ, workdir;
  int runs = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) usage("missing value");
    if (arg == "--binary")
      binary = argv[++i];
    else if (arg == "--config-template")
      templ = argv[++i];
    else if (arg == "--workdir")
      workdir = argv[++i];
    else if (arg == "--runs")
      runs = std::atoi(argv[++i]);
    else
      usage("unknown argument");
  }
  if (binary.empty() || templ.empty() || workdir.empty()) usage("missing required argument");
  if (runs < 1 || runs > 1000) usage("--runs must be 1..1000");

  std::ifstream in(templ);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  if (text.find("@PORT@") == std::string::npos) usage("the template has no @PORT@");

  std::vector<double> ready_ms, health_ms, cpu;
  int failures = 0;
  for (int run = 1; run <= runs; ++run) {
    const unsigned short port = free_port();
    std::string config = text;
    config.replace(config.find("@PORT@"), 6, std::to_string(port));
    const std::string config_path = workdir + "/startup-config.json";
    const std::string ready_path = workdir + "/startup.ready";
    {
      std::ofstream out(config_path);
      out << config;
    }
    ::unlink(ready_path.c_str());

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, (workdir + "/startup.stderr").c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    std::vector<std::string> args{binary, "--config", config_path, "--ready-file", ready_path};
    std::vector<char*> cargs;
    for (auto& a : args) cargs.push_back(a.data());
    cargs.push_back(nullptr);

    pid_t pid = 0;
    const auto t0 = Clock::now();
    if (posix_spawn(&pid, binary.c_str(), &actions, nullptr, cargs.data(), environ) != 0) {
      std::perror("posix_spawn");
      return 1;
    }
    posix_spawn_file_actions_destroy(&actions);

    double ready = -1, health = -1;
    const auto deadline = t0 + std::chrono::seconds(5);
    bool died = false;
    while (Clock::now() < deadline && (ready < 0 || health < 0)) {
      if (ready < 0 && exists(ready_path)) {
        ready = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      }
      if (health < 0 && healthz_ok(port)) {
        health = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      }
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        died = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    // CPU over the process's life: start-up, then idle until SIGTERM, then shutdown.
    const double used = died ? -1 : stop(pid);
    std::printf("run %d port=%u ready_file_ms=%.3f healthz_ms=%.3f cpu_ms=%.3f%s\n", run, port,
                ready, health, used, died ? " (exited early)" : "");
    if (ready < 0 || health < 0) {
      ++failures;
    } else {
      ready_ms.push_back(ready);
      health_ms.push_back(health);
      cpu.push_back(used);
    }
  }
  std::printf(
      "summary runs=%d ok=%zu median_ready_file_ms=%.3f median_healthz_ms=%.3f "
      "median_cpu_ms=%.3f "
      "min_ready_file_ms=%.3f min_healthz_ms=%.3f max_ready_file_ms=%.3f "
      "max_healthz_ms=%.3f\n",
      runs, ready_ms.size(), median(ready_ms), median(health_ms), median(cpu),
      ready_ms.empty() ? -1 : *std::min_element(ready_ms.begin(), ready_ms.end()),
      health_ms.empty() ? -1 : *std::min_element(health_ms.begin(), health_ms.end()),
      ready_ms.empty() ? -1 : *std::max_element(ready_ms.begin(), ready_ms.end()),
      health_ms.empty() ? -1 : *std::max_element(health_ms.begin(), health_ms.end()));
  return failures == 0 ? 0 : 1;
}
