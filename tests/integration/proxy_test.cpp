// HTTPS_PROXY / NO_PROXY: Entra is reached through a CONNECT tunnel; IMDS never is.
#include "connect_proxy.hpp"
#include "fixture.hpp"

#include <cstdlib>

namespace ficbroker::testing {
namespace {
namespace json = boost::json;

class ProxyTest : public ::testing::Test {
 protected:
  void TearDown() override {
    ::unsetenv("HTTPS_PROXY");
    ::unsetenv("NO_PROXY");
  }
  TempDir dir_;
};

std::string config_via(const Emulator& emulator) {
  // login.emulator.test resolves nowhere but at the test proxy (which maps it to loopback); the
  // emulator's certificate names it.
  std::string config = default_config(emulator);
  const std::string from = "https://localhost:" + std::to_string(emulator.https_port());
  config.replace(config.find(from), from.size(),
                 "https://login.emulator.test:" + std::to_string(emulator.https_port()));
  return config;
}

TEST_F(ProxyTest, EntraGoesThroughTheProxyAndImdsDoesNot) {
  Emulator emulator(dir_);
  ConnectProxy proxy;
  ::setenv("HTTPS_PROXY", ("http://127.0.0.1:" + std::to_string(proxy.port())).c_str(), 1);
  Broker broker(dir_, config_via(emulator));
  const auto r = broker.get_with_metadata("/token?resource=https://graph.microsoft.com");
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(jwt_claims(std::string(json::parse(r.body).at("access_token").as_string()))
                .at("tid")
                .as_string(),
            kTenantA);
  ASSERT_EQ(proxy.tunnels(), 1);
  EXPECT_EQ(proxy.targets().front(),
            "login.emulator.test:" + std::to_string(emulator.https_port()));
  // IMDS (plain http, link-local or loopback) is never proxied: it was called directly.
  EXPECT_EQ(emulator.stats().at("imds").to_number<int>(), 1);
  // Keep-alive: a second exchange reuses the tunnel.
  ASSERT_EQ(broker.get_with_metadata("/token?resource=https://vault.azure.net").status, 200u);
  EXPECT_EQ(proxy.tunnels(), 1);
}

TEST_F(ProxyTest, NoProxyBypassesTheProxy) {
  Emulator emulator(dir_);
  ConnectProxy proxy;
  ::setenv("HTTPS_PROXY", ("http://127.0.0.1:" + std::to_string(proxy.port())).c_str(), 1);
  ::setenv("NO_PROXY", "localhost,.emulator.test", 1);
  Broker broker(dir_, config_via(emulator));
  // Direct, the name does not resolve: the exchange fails as a transient upstream error.
  const auto r = broker.get_with_metadata("/token?resource=https://graph.microsoft.com");
  EXPECT_EQ(r.status, 503u) << r.body;
  EXPECT_EQ(proxy.tunnels(), 0);
}

}  // namespace
}  // namespace ficbroker::testing
