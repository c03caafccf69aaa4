// The front door's part of the configuration: listeners, server limits, and which keys a SIGHUP
// reload cannot apply to a running daemon.
#include "ficbroker/config/config.hpp"

#include <gtest/gtest.h>

#include <string>

namespace ficbroker {
namespace {

constexpr const char* kTargets =
    R"("sources":{"mi":{"type":"imds"}},)"
    R"("targets":[{"tenant_id":"contoso.onmicrosoft.com","client_id":"11111111-2222-3333-4444-555555555555"}])";

ConfigLoad parse_with(const std::string& top) {
  return parse_config("{" + top + (top.empty() ? "" : ",") + kTargets + "}",
                      [](std::string_view) { return std::optional<std::string>{}; });
}

bool has_error(const ConfigLoad& load, const std::string& key) {
  for (const auto& e : load.errors) {
    if (e.rfind(key + ": ", 0) == 0) return true;
  }
  return false;
}

TEST(ConfigServer, DefaultsAreTheServersOwn) {
  const auto load = parse_with("");
  ASSERT_TRUE(load.config) << load.errors.front();
  EXPECT_EQ(load.config->server.max_connections, 4096u);
  EXPECT_EQ(load.config->server.header_timeout, std::chrono::milliseconds(10000));
  EXPECT_EQ(load.config->server.idle_timeout, std::chrono::milliseconds(60000));
  EXPECT_EQ(load.config->server.write_timeout, std::chrono::milliseconds(10000));
  EXPECT_TRUE(load.config->listen_tcp);
}

TEST(ConfigServer, TimeoutsAndConnectionCapAreKeys) {
  const auto load =
      parse_with(R"("server":{"max_connections":64,"header_timeout_ms":250,"idle_timeout_ms":500,)"
                 R"("write_timeout_ms":750})");
  ASSERT_TRUE(load.config) << load.errors.front();
  EXPECT_EQ(load.config->server.max_connections, 64u);
  EXPECT_EQ(load.config->server.header_timeout, std::chrono::milliseconds(250));
  EXPECT_EQ(load.config->server.idle_timeout, std::chrono::milliseconds(500));
  EXPECT_EQ(load.config->server.write_timeout, std::chrono::milliseconds(750));
}

TEST(ConfigServer, BadValuesNameTheirKey) {
  const auto load = parse_with(
      R"("server":{"max_connections":0,"header_timeout_ms":"10","idle_timeout_ms":1,"x":1})");
  EXPECT_FALSE(load.config);
  EXPECT_TRUE(has_error(load, "server.max_connections"));
  EXPECT_TRUE(has_error(load, "server.header_timeout_ms"));
  EXPECT_TRUE(has_error(load, "server.idle_timeout_ms"));
  EXPECT_TRUE(has_error(load, "server.x"));
  EXPECT_TRUE(has_error(parse_with(R"("server":[])"), "server"));
}

TEST(ConfigListen, NullTurnsTcpOffWhenAUnixSocketIsSet) {
  const auto load = parse_with(R"("listen":null,"unix_socket":{"path":"/run/ficbroker.sock"})");
  ASSERT_TRUE(load.config) << load.errors.front();
  EXPECT_FALSE(load.config->listen_tcp);
  EXPECT_EQ(load.config->unix_socket.path, "/run/ficbroker.sock");
}

TEST(ConfigListen, NullWithoutAUnixSocketWouldLeaveNoDoorAndIsRefused) {
  const auto load = parse_with(R"("listen":null)");
  EXPECT_FALSE(load.config);
  EXPECT_TRUE(has_error(load, "listen"));
}

TEST(ConfigListen, AddressParserIsSharedWithTheCommandLine) {
  const auto v4 = parse_listen_address("127.0.0.1:8181");
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, 8181);
  const auto v6 = parse_listen_address("[::1]:0");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 0);
  EXPECT_FALSE(parse_listen_address("::1:80"));
  EXPECT_FALSE(parse_listen_address("localhost"));
  EXPECT_FALSE(parse_listen_address("127.0.0.1:65536"));
  EXPECT_FALSE(parse_listen_address(":80"));
}

Config parsed(const std::string& top) {
  auto load = parse_with(top);
  if (!load.config) throw std::runtime_error(load.errors.front());
  return *load.config;
}

TEST(ConfigReload, ChangesTheDaemonCanApplyNeedNoRestart) {
  const auto running = parsed(R"("log_level":"info")");
  EXPECT_TRUE(keys_needing_restart(running, parsed(R"("log_level":"debug")")).empty());
  EXPECT_TRUE(keys_needing_restart(running, running).empty());
}

TEST(ConfigReload, EveryKeyThatCannotBeAppliedLiveIsNamed) {
  const auto running = parsed(R"("unix_socket":{"path":"/run/a.sock","allowed_uids":[1000]})");
  using Keys = std::vector<std::string>;
  EXPECT_EQ(keys_needing_restart(running, parsed(R"("listen":"127.0.0.1:9999",)"
                                                 R"("unix_socket":{"path":"/run/a.sock",)"
                                                 R"("allowed_uids":[1000]})")),
            Keys{"listen"});
  EXPECT_EQ(keys_needing_restart(
                running, parsed(R"("unix_socket":{"path":"/run/a.sock","allowed_uids":[0]})")),
            Keys{"unix_socket"});
  EXPECT_EQ(keys_needing_restart(running, parsed(R"("cache":{"max_entries":5},)"
                                                 R"("server":{"idle_timeout_ms":100},)"
                                                 R"("unix_socket":{"path":"/run/a.sock",)"
                                                 R"("allowed_uids":[1000]})")),
            (Keys{"cache", "server"}));
}

TEST(ConfigReload, ATrustStoreChangeNeedsARestart) {
  auto running = parsed("");
  auto fresh = running;
  fresh.ca_file = "/etc/ssl/other.pem";
  EXPECT_EQ(keys_needing_restart(running, fresh), std::vector<std::string>{"ca_file"});
}

}  // namespace
}  // namespace ficbroker
