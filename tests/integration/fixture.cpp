#include "fixture.hpp"

#include "ficbroker/util/encoding.hpp"

#include <stdexcept>

namespace ficbroker::testing {
namespace json = boost::json;

namespace {

unsigned short port_of(const std::string& host_port) {
  return static_cast<unsigned short>(std::stoi(host_port.substr(host_port.rfind(':') + 1)));
}

}  // namespace

Emulator::Emulator(const TempDir& dir, std::vector<std::string> extra_args) {
  ca_file_ = dir.file("emulator-ca.pem");
  const std::string ready = dir.file("emulator.ready");
  std::vector<std::string> argv{EMULATOR_BIN,  "--http-listen", "127.0.0.1:0", "--https-listen",
                                "127.0.0.1:0", "--ca-out",      ca_file_,      "--ready-file",
                                ready,         "--quiet"};
  for (auto& a : extra_args) argv.push_back(std::move(a));
  process_ = ChildProcess(argv, dir.file("emulator.log"));
  const auto info = json::parse(wait_for_file(ready)).as_object();
  http_port_ = port_of(std::string(info.at("http").as_string()));
  https_port_ = port_of(std::string(info.at("https").as_string()));
}

json::object Emulator::stats() const {
  const auto r = http_request("127.0.0.1", http_port_, "GET", "/_emulator/stats");
  return json::parse(r.body).as_object();
}

void Emulator::reset() const { http_request("127.0.0.1", http_port_, "POST", "/_emulator/reset"); }

void Emulator::fault(const json::object& rule) const {
  const auto r = http_request("127.0.0.1", http_port_, "POST", "/_emulator/faults",
                              {{"Content-Type", "application/json"}}, json::serialize(rule));
  if (r.status != 200) throw std::runtime_error("emulator refused fault: " + r.body);
}

void Emulator::settings(const json::object& settings) const {
  const auto r = http_request("127.0.0.1", http_port_, "POST", "/_emulator/settings",
                              {{"Content-Type", "application/json"}}, json::serialize(settings));
  if (r.status != 200) throw std::runtime_error("emulator refused settings: " + r.body);
}

std::string Emulator::oidc_token(const json::object& request) const {
  const auto r = http_request("127.0.0.1", http_port_, "POST", "/_emulator/oidc-token",
                              {{"Content-Type", "application/json"}}, json::serialize(request));
  return std::string(json::parse(r.body).as_object().at("token").as_string());
}

Broker::Broker(const TempDir& dir, const std::string& config_json, const std::string& name,
               std::vector<std::string> launcher) {
  config_path_ = dir.file(name + ".jsonc");
  log_path_ = dir.file(name + ".log");
  write_file(config_path_, config_json);
  const std::string ready = dir.file(name + ".ready");
  std::vector<std::string> argv = std::move(launcher);
  for (const auto& arg :
       {FICBROKER_BIN, "--config", config_path_.c_str(), "--ready-file", ready.c_str()}) {
    argv.emplace_back(arg);
  }
  process_ = ChildProcess(std::move(argv), log_path_);
  try {
    const auto info = json::parse(wait_for_file(ready, std::chrono::seconds(10))).as_object();
    const std::string listen(info.at("listen").as_string());
    port_ = listen.starts_with("unix:") ? 0 : port_of(listen);
  } catch (const std::exception&) {
    throw std::runtime_error("ficbroker did not start; its log:\n" + read_file(log_path_));
  }
}

Response Broker::get(const std::string& target, const Headers& headers) const {
  return http_request("127.0.0.1", port_, "GET", target, headers);
}

Response Broker::get_with_metadata(const std::string& target) const {
  return get(target, {{"Metadata", "true"}});
}

std::string default_config(const Emulator& emulator, const std::string& extra_top_level) {
  const std::string imds = "http://127.0.0.1:" + std::to_string(emulator.http_port());
  return std::string("{\n") + extra_top_level +
         "  \"listen\": \"127.0.0.1:0\",\n"
         "  \"authority_host\": \"https://localhost:" +
         std::to_string(emulator.https_port()) +
         "\",\n"
         "  \"ca_file\": \"" +
         emulator.ca_file() +
         "\",\n"
         "  \"identity_header\": \"" +
         kIdentityHeader +
         "\",\n"
         "  \"log_level\": \"info\",\n"
         "  \"sources\": {\"uami\": {\"type\": \"imds\", \"endpoint\": \"" +
         imds + "\", \"client_id\": \"" + kUamiClientId +
         "\"}},\n"
         "  \"targets\": [\n"
         "    {\"tenant_id\": \"" +
         kTenantA + "\", \"client_id\": \"" + kApp +
         "\", \"source\": \"uami\", \"default\": true},\n"
         "    {\"tenant_id\": \"" +
         kTenantB + "\", \"client_id\": \"" + kApp +
         "\", \"source\": \"uami\"},\n"
         "    {\"tenant_id\": \"" +
         kTenantA + "\", \"client_id\": \"" + kAppWrongFic +
         "\", \"source\": \"uami\"},\n"
         "    {\"tenant_id\": \"" +
         kTenantNoApp + "\", \"client_id\": \"" + kApp +
         "\", \"source\": \"uami\"},\n"
         "  ]\n"
         "}\n";
}

json::object jwt_claims(const std::string& token) {
  const auto first = token.find('.');
  const auto second = token.find('.', first + 1);
  if (first == std::string::npos || second == std::string::npos) {
    throw std::runtime_error("not a JWT");
  }
  const auto payload = base64url_decode(token.substr(first + 1, second - first - 1));
  if (!payload) throw std::runtime_error("bad JWT payload encoding");
  return json::parse(*payload).as_object();
}

void BrokerTest::SetUp() {
  emulator_.emplace(dir_);
  broker_.emplace(dir_, default_config(*emulator_));
}

}  // namespace ficbroker::testing

// ------------------------------------------------------------------------------------------------
// Helpers for the hardening, ops and soak suites (appended; nothing above is changed).
// ------------------------------------------------------------------------------------------------
#include <fcntl.h>
#include <signal.h>
#include <sstream>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace ficbroker::testing {

std::int64_t stat_count(const boost::json::object& stats, const char* key) {
  const auto* v = stats.if_contains(key);
  return v ? v->to_number<std::int64_t>() : 0;
}

boost::json::object default_config_object(const Emulator& emulator) {
  boost::json::parse_options options;
  options.allow_trailing_commas = true;
  options.allow_comments = true;
  return boost::json::parse(default_config(emulator), {}, options).as_object();
}

void clear_faults(const Emulator& emulator) {
  const auto r = http_request("127.0.0.1", emulator.http_port(), "DELETE", "/_emulator/faults");
  if (r.status != 200) throw std::runtime_error("emulator refused to clear faults: " + r.body);
}

ProcessResult run_process(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  TempDir dir;
  const std::string out_path = dir.file("stdout");
  const std::string err_path = dir.file("stderr");
  std::vector<std::string> args_storage = argv;
  std::vector<char*> args;
  for (auto& a : args_storage) args.push_back(a.data());
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int in = ::open("/dev/null", O_RDONLY);
    if (out < 0 || err < 0 || in < 0) ::_exit(126);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ProcessResult result;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      result.exit_code = -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  result.out = read_file(out_path);
  result.err = read_file(err_path);
  return result;
}

unsigned raw_status(const std::string& raw) {
  // "HTTP/1.1 NNN reason"
  if (raw.size() < 12 || raw.compare(0, 5, "HTTP/") != 0) return 0;
  const auto space = raw.find(' ');
  if (space == std::string::npos || space + 4 > raw.size()) return 0;
  unsigned status = 0;
  for (std::size_t i = space + 1; i < space + 4; ++i) {
    if (raw[i] < '0' || raw[i] > '9') return 0;
    status = status * 10 + static_cast<unsigned>(raw[i] - '0');
  }
  return status;
}

std::optional<double> metric_value(const std::string& metrics, const std::string& series) {
  std::istringstream in(metrics);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line.front() == '#') continue;
    if (line.size() <= series.size() || line.compare(0, series.size(), series) != 0 ||
        line[series.size()] != ' ') {
      continue;
    }
    try {
      return std::stod(line.substr(series.size() + 1));
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  return std::nullopt;
}

std::vector<boost::json::object> log_events(const std::string& log, const std::string& event) {
  std::vector<boost::json::object> out;
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    boost::system::error_code ec;
    auto value = boost::json::parse(line, ec);
    if (ec || !value.is_object()) continue;
    const auto* e = value.as_object().if_contains("event");
    if (e && e->is_string() && e->get_string() == event) out.push_back(value.as_object());
  }
  return out;
}

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
                std::chrono::milliseconds interval) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(interval);
  }
  return condition();
}

std::string token_target(const std::string& resource, const std::string& tenant) {
  std::string t = "/token?resource=" + resource;
  if (!tenant.empty()) t += "&tenant=" + tenant;
  return t;
}

std::string str(const json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->get_string()) : std::string{};
}

std::string access_token(const Response& r) {
  boost::system::error_code ec;
  const auto body = json::parse(r.body, ec);
  return !ec && body.is_object() ? str(body.as_object(), "access_token") : std::string{};
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string metrics_of(const Broker& broker) { return broker.get("/metrics").body; }

}  // namespace ficbroker::testing
