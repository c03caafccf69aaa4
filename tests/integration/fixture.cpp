#include "fixture.hpp"

#include "ficbroker/encoding.hpp"

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
  std::vector<std::string> argv{EMULATOR_BIN,    "--http-listen", "127.0.0.1:0",
                                "--https-listen", "127.0.0.1:0",  "--ca-out",
                                ca_file_,         "--ready-file", ready,
                                "--quiet"};
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

Broker::Broker(const TempDir& dir, const std::string& config_json, const std::string& name) {
  config_path_ = dir.file(name + ".jsonc");
  log_path_ = dir.file(name + ".log");
  write_file(config_path_, config_json);
  const std::string ready = dir.file(name + ".ready");
  process_ = ChildProcess({FICBROKER_BIN, "--config", config_path_, "--ready-file", ready},
                          log_path_);
  try {
    const auto info = json::parse(wait_for_file(ready, std::chrono::seconds(10))).as_object();
    port_ = port_of(std::string(info.at("listen").as_string()));
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
         "  \"authority_host\": \"https://localhost:" + std::to_string(emulator.https_port()) +
         "\",\n"
         "  \"ca_file\": \"" + emulator.ca_file() + "\",\n"
         "  \"identity_header\": \"" + kIdentityHeader + "\",\n"
         "  \"log_level\": \"info\",\n"
         "  \"sources\": {\"uami\": {\"type\": \"imds\", \"endpoint\": \"" + imds +
         "\", \"client_id\": \"" + kUamiClientId + "\"}},\n"
         "  \"targets\": [\n"
         "    {\"tenant_id\": \"" + kTenantA + "\", \"client_id\": \"" + kApp +
         "\", \"source\": \"uami\", \"default\": true},\n"
         "    {\"tenant_id\": \"" + kTenantB + "\", \"client_id\": \"" + kApp +
         "\", \"source\": \"uami\"},\n"
         "    {\"tenant_id\": \"" + kTenantA + "\", \"client_id\": \"" + kAppWrongFic +
         "\", \"source\": \"uami\"},\n"
         "    {\"tenant_id\": \"" + kTenantNoApp + "\", \"client_id\": \"" + kApp +
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
