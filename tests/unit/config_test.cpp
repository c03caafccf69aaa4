// Configuration parsing and validation: defaults, and one error naming the key for every mistake,
// all reported at once. The environment is always injected.
#include "ficbroker/config/config.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <sys/stat.h>
#include <utility>
#include <vector>

namespace ficbroker {
namespace {

constexpr const char* kApp = "11111111-2222-3333-4444-555555555555";
constexpr const char* kApp2 = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
    const auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

const EnvLookup kNoEnv = env_of({});

ConfigLoad parse(std::string_view text, const EnvLookup& env = kNoEnv) {
  return parse_config(text, env);
}

// A whole document around the given extra top-level members and targets.
std::string doc(const std::string& top, const std::string& targets = "") {
  std::string t = targets.empty()
                      ? std::string(R"([{"tenant_id":"contoso.onmicrosoft.com","client_id":")") +
                            kApp + R"("}])"
                      : targets;
  return "{" + top + (top.empty() ? "" : ",") + R"("sources":{"mi":{"type":"imds"}},"targets":)" +
         t + "}";
}

std::string all_errors(const ConfigLoad& load) {
  std::string out;
  for (const auto& e : load.errors) out += "  " + e + "\n";
  return out;
}

// True when some error is about `key` ("key: what").
bool has_error(const ConfigLoad& load, const std::string& key) {
  for (const auto& e : load.errors) {
    if (e.rfind(key + ": ", 0) == 0) return true;
  }
  return false;
}

// Expects the load to fail with an error naming `key`.
void expect_error(const ConfigLoad& load, const std::string& key) {
  EXPECT_FALSE(load.config.has_value()) << "a config with errors must not be returned";
  EXPECT_TRUE(has_error(load, key)) << "no error for '" << key << "'; errors:\n"
                                    << all_errors(load);
}

// The parsed config (a copy, so that callers may pass a temporary load).
Config expect_ok(const ConfigLoad& load) {
  EXPECT_TRUE(load.errors.empty()) << all_errors(load);
  if (!load.config) {
    ADD_FAILURE() << "no config";
    return {};
  }
  return *load.config;
}

TEST(ConfigTest, MinimalConfigParsesWithDefaults) {
  const auto load = parse(doc(""));
  const Config& c = expect_ok(load);
  EXPECT_TRUE(load.warnings.empty());
  EXPECT_EQ(c.listen_host, "127.0.0.1");
  EXPECT_EQ(c.listen_port, 8181);
  EXPECT_FALSE(c.allow_remote);
  EXPECT_FALSE(c.transparent);
  EXPECT_EQ(c.authority_host.scheme, "https");
  EXPECT_EQ(c.authority_host.host, "login.microsoftonline.com");
  EXPECT_EQ(c.authority_host.port, 443);
  EXPECT_EQ(c.cache.min_validity, std::chrono::seconds(300));
  EXPECT_EQ(c.cache.idle_ttl, std::chrono::seconds(3600));
  EXPECT_EQ(c.cache.max_entries, 10000u);
  EXPECT_EQ(c.log_level, "info");
  EXPECT_TRUE(c.identity_header.empty());
  EXPECT_TRUE(c.unix_socket.path.empty());

  ASSERT_EQ(c.sources.size(), 1u);
  const SourceConfig* mi = c.source("mi");
  ASSERT_NE(mi, nullptr);
  EXPECT_EQ(mi->name, "mi");
  EXPECT_EQ(mi->type, SourceType::imds);
  EXPECT_EQ(mi->endpoint.host, "169.254.169.254");
  EXPECT_EQ(mi->endpoint.port, 80);
  EXPECT_EQ(c.source("nope"), nullptr);

  ASSERT_EQ(c.targets.size(), 1u);
  const TargetConfig& t = c.targets[0];
  EXPECT_EQ(t.tenant_id, "contoso.onmicrosoft.com");
  EXPECT_EQ(t.client_id, kApp);
  EXPECT_EQ(t.source, "mi") << "the only source is implied";
  EXPECT_EQ(t.cloud, Cloud::public_cloud);
  EXPECT_EQ(t.exchange_audience, "api://AzureADTokenExchange");
  EXPECT_EQ(t.authority_host.host, "login.microsoftonline.com");
  EXPECT_TRUE(t.allowed_resources.empty());
  EXPECT_EQ(c.default_target(), &c.targets[0]) << "a single target is the default";
}

TEST(ConfigTest, CommentsAndTrailingCommasAreAllowed) {
  const auto load = parse(R"({
    // line comment
    "listen": "127.0.0.1:9000", /* block comment */
    "sources": { "mi": { "type": "imds", }, },
    "targets": [
      { "tenant_id": "contoso.onmicrosoft.com", "client_id": "11111111-2222-3333-4444-555555555555", },
    ],
  })");
  const Config& c = expect_ok(load);
  EXPECT_EQ(c.listen_port, 9000);
}

TEST(ConfigTest, IdsAreLowerCased) {
  const auto load = parse(doc(
      "",
      R"([{"tenant_id":"72F988BF-86F1-41AF-91AB-2D7CD011DB47","client_id":"AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE"}])"));
  const Config& c = expect_ok(load);
  ASSERT_EQ(c.targets.size(), 1u);
  EXPECT_EQ(c.targets[0].tenant_id, "72f988bf-86f1-41af-91ab-2d7cd011db47");
  EXPECT_EQ(c.targets[0].client_id, kApp2);
}

TEST(ConfigTest, InvalidJsonIsOneDocumentError) {
  const auto load = parse(R"({"listen": )");
  expect_error(load, "(document)");
  EXPECT_EQ(load.errors.size(), 1u);
}

TEST(ConfigTest, NonObjectDocumentIsAnError) {
  expect_error(parse("[]"), "(document)");
  expect_error(parse("\"config\""), "(document)");
}

TEST(ConfigTest, UnknownTopLevelKeyIsNamed) {
  expect_error(parse(doc(R"("lisen":"127.0.0.1:8181")")), "lisen");
}

TEST(ConfigTest, UnknownNestedKeysAreNamedWithTheirPath) {
  expect_error(parse(doc(R"("cache":{"min_validity":300})")), "cache.min_validity");
  expect_error(parse(doc(R"("unix_socket":{"path":"/run/x.sock","mode":"0600"})")),
               "unix_socket.mode");
  expect_error(
      parse(
          R"({"sources":{"mi":{"type":"imds","header":"x"}},"targets":[{"tenant_id":"t","client_id":")" +
          std::string(kApp) + R"("}]})"),
      "sources.mi.header");
  expect_error(parse(doc("", std::string(R"([{"tenant_id":"t","client_id":")") + kApp +
                                 R"(","tenant":"x"}])")),
               "targets[0].tenant");
}

TEST(ConfigTest, NonLoopbackListenNeedsAllowRemote) {
  expect_error(parse(doc(R"("listen":"0.0.0.0:8181")")), "listen");
  expect_error(parse(doc(R"("listen":"10.1.2.3:8181")")), "listen");
  const auto load = parse(doc(R"("listen":"0.0.0.0:8181","allow_remote":true)"));
  const Config& c = expect_ok(load);
  EXPECT_EQ(c.listen_host, "0.0.0.0");
  EXPECT_TRUE(c.allow_remote);
}

TEST(ConfigTest, LoopbackListenFormsAreAccepted) {
  const Config& v6 = expect_ok(parse(doc(R"("listen":"[::1]:9001")")));
  EXPECT_EQ(v6.listen_host, "::1");
  EXPECT_EQ(v6.listen_port, 9001);
  const Config& name = expect_ok(parse(doc(R"("listen":"localhost:9002")")));
  EXPECT_EQ(name.listen_host, "localhost");
  EXPECT_EQ(name.listen_port, 9002);
  const Config& other = expect_ok(parse(doc(R"("listen":"127.0.0.53:80")")));
  EXPECT_EQ(other.listen_host, "127.0.0.53");
}

TEST(ConfigTest, MalformedListenIsAnError) {
  for (const char* listen : {"127.0.0.1", "127.0.0.1:", ":8181", "127.0.0.1:65536", "127.0.0.1:-1",
                             "127.0.0.1:80x", "[::1]9000", "[::1", "::1:8181x", ""}) {
    SCOPED_TRACE(listen);
    expect_error(parse(doc(std::string(R"("listen":")") + listen + "\"")), "listen");
  }
}

TEST(ConfigTest, ListenMustBeAString) { expect_error(parse(doc(R"("listen":8181)")), "listen"); }

TEST(ConfigTest, PlainHttpAuthorityToARoutableHostIsRejected) {
  expect_error(parse(doc(R"("authority_host":"http://login.microsoftonline.com")")),
               "authority_host");
  expect_error(parse(doc(R"("authority_host":"http://10.0.0.5:8443")")), "authority_host");
}

TEST(ConfigTest, PlainHttpAuthorityToLoopbackIsAccepted) {
  const auto load = parse(doc(R"("authority_host":"http://127.0.0.1:8443")"));
  const Config& c = expect_ok(load);
  EXPECT_EQ(c.authority_host.scheme, "http");
  EXPECT_EQ(c.authority_host.host, "127.0.0.1");
  EXPECT_EQ(c.authority_host.port, 8443);
  ASSERT_EQ(c.targets.size(), 1u);
  EXPECT_EQ(c.targets[0].authority_host.host, "127.0.0.1") << "targets inherit the global one";
  EXPECT_EQ(c.targets[0].authority_host.port, 8443);
}

TEST(ConfigTest, AuthorityHostMustBeAUrlWithoutPath) {
  expect_error(parse(doc(R"("authority_host":"login.microsoftonline.com")")), "authority_host");
  expect_error(parse(doc(R"("authority_host":"https://login.microsoftonline.com/tenant")")),
               "authority_host");
}

TEST(ConfigTest, TargetAuthorityHostIsValidatedLikeTheGlobalOne) {
  expect_error(parse(doc("", std::string(R"([{"tenant_id":"t","client_id":")") + kApp +
                                 R"(","authority_host":"http://login.example.com"}])")),
               "targets[0].authority_host");
  const auto load = parse(doc("", std::string(R"([{"tenant_id":"t","client_id":")") + kApp +
                                      R"(","authority_host":"https://login.example.com:444"}])"));
  const Config& c = expect_ok(load);
  ASSERT_EQ(c.targets.size(), 1u);
  EXPECT_EQ(c.targets[0].authority_host.host, "login.example.com");
  EXPECT_EQ(c.targets[0].authority_host.port, 444);
}

TEST(ConfigTest, TargetClientIdMustBeAGuid) {
  for (const char* id :
       {"not-a-guid", "11111111-2222-3333-4444-55555555555",
        "11111111-2222-3333-4444-5555555555555", "11111111x2222-3333-4444-555555555555",
        "g1111111-2222-3333-4444-555555555555", "{11111111-2222-3333-4444-555555555555}"}) {
    SCOPED_TRACE(id);
    expect_error(parse(doc("", std::string(R"([{"tenant_id":"t","client_id":")") + id + "\"}]")),
                 "targets[0].client_id");
  }
}

TEST(ConfigTest, TargetTenantMustBeAnIdOrDomain) {
  expect_error(
      parse(doc("", std::string(R"([{"tenant_id":"contoso/../x","client_id":")") + kApp + "\"}]")),
      "targets[0].tenant_id");
  expect_error(parse(doc("", std::string(R"([{"tenant_id":"","client_id":")") + kApp + "\"}]")),
               "targets[0].tenant_id");
}

TEST(ConfigTest, MissingTargetFieldsAreNamed) {
  const auto load = parse(doc("", R"([{}])"));
  expect_error(load, "targets[0].tenant_id");
  expect_error(load, "targets[0].client_id");
}

TEST(ConfigTest, UnknownSourceReferenceIsAnError) {
  expect_error(parse(doc("", std::string(R"([{"tenant_id":"t","client_id":")") + kApp +
                                 R"(","source":"missing"}])")),
               "targets[0].source");
}

TEST(ConfigTest, TargetMustNameItsSourceWhenThereAreSeveral) {
  const auto load = parse(std::string(R"({"sources":{"a":{"type":"imds"},"b":{"type":"imds"}},)") +
                          R"("targets":[{"tenant_id":"t","client_id":")" + kApp + R"("}]})");
  expect_error(load, "targets[0].source");
}

TEST(ConfigTest, TwoDefaultTargetsAreAnError) {
  expect_error(parse(doc("", std::string(R"([{"tenant_id":"a","client_id":")") + kApp +
                                 R"(","default":true},{"tenant_id":"b","client_id":")" + kApp +
                                 R"(","default":true}])")),
               "targets");
}

TEST(ConfigTest, TheTargetMarkedDefaultIsTheDefault) {
  const auto load =
      parse(doc("", std::string(R"([{"tenant_id":"a","client_id":")") + kApp +
                        R"("},{"tenant_id":"b","client_id":")" + kApp + R"(","default":true}])"));
  const Config& c = expect_ok(load);
  ASSERT_EQ(c.targets.size(), 2u);
  ASSERT_NE(c.default_target(), nullptr);
  EXPECT_EQ(c.default_target()->tenant_id, "b");
}

TEST(ConfigTest, SeveralTargetsWithoutADefaultHaveNoDefault) {
  const auto load = parse(doc("", std::string(R"([{"tenant_id":"a","client_id":")") + kApp +
                                      R"("},{"tenant_id":"b","client_id":")" + kApp + R"("}])"));
  const Config& c = expect_ok(load);
  EXPECT_EQ(c.default_target(), nullptr);
}

TEST(ConfigTest, DuplicateTenantAndAppIsAnError) {
  expect_error(parse(doc("", std::string(R"([{"tenant_id":"a","client_id":")") + kApp +
                                 R"("},{"tenant_id":"A","client_id":")" + kApp + R"("}])")),
               "targets");
}

TEST(ConfigTest, SameTenantWithTwoAppsIsFine) {
  const auto load = parse(doc("", std::string(R"([{"tenant_id":"a","client_id":")") + kApp +
                                      R"("},{"tenant_id":"a","client_id":")" + kApp2 + R"("}])"));
  EXPECT_EQ(expect_ok(load).targets.size(), 2u);
}

TEST(ConfigTest, MissingSourcesIsAnError) {
  expect_error(parse(std::string(R"({"targets":[{"tenant_id":"t","client_id":")") + kApp + "\"}]}"),
               "sources");
  expect_error(parse(std::string(R"({"sources":{},"targets":[{"tenant_id":"t","client_id":")") +
                     kApp + "\"}]}"),
               "sources");
}

TEST(ConfigTest, MissingTargetsIsAnError) {
  expect_error(parse(R"({"sources":{"mi":{"type":"imds"}}})"), "targets");
  expect_error(parse(R"({"sources":{"mi":{"type":"imds"}},"targets":[]})"), "targets");
}

TEST(ConfigTest, WrongTypesAreNamed) {
  expect_error(parse(doc(R"("allow_remote":"yes")")), "allow_remote");
  expect_error(parse(doc(R"("transparent":1)")), "transparent");
  expect_error(parse(doc(R"("allowed_hosts":"broker.local")")), "allowed_hosts");
  expect_error(parse(doc(R"("allowed_hosts":["ok",7])")), "allowed_hosts[1]");
  expect_error(parse(doc(R"("identity_header":12345678901234567)")), "identity_header");
  expect_error(parse(doc(R"("cache":[])")), "cache");
  expect_error(parse(doc(R"("cache":{"min_validity_seconds":"300"})")),
               "cache.min_validity_seconds");
  expect_error(parse(doc(R"("cache":{"max_entries":1.5})")), "cache.max_entries");
  expect_error(parse(R"({"sources":{"mi":"imds"},"targets":[]})"), "sources.mi");
  expect_error(parse(R"({"sources":{"mi":{"type":"imds"}},"targets":{}})"), "targets");
  expect_error(parse(R"({"sources":{"mi":{"type":"imds"}},"targets":["t"]})"), "targets[0]");
  expect_error(parse(doc("", std::string(R"([{"tenant_id":"t","client_id":")") + kApp +
                                 R"(","default":"yes"}])")),
               "targets[0].default");
  expect_error(parse(doc("", std::string(R"([{"tenant_id":"t","client_id":")") + kApp +
                                 R"(","prewarm":"https://vault.azure.net"}])")),
               "targets[0].prewarm");
  expect_error(parse(doc("", std::string(R"([{"tenant_id":7,"client_id":")") + kApp + "\"}]")),
               "targets[0].tenant_id");
}

TEST(ConfigTest, CacheSettingsWithinBoundsAreApplied) {
  const auto load =
      parse(doc(R"("cache":{"min_validity_seconds":0,"idle_ttl_seconds":60,"max_entries":5})"));
  const Config& c = expect_ok(load);
  EXPECT_EQ(c.cache.min_validity, std::chrono::seconds(0));
  EXPECT_EQ(c.cache.idle_ttl, std::chrono::seconds(60));
  EXPECT_EQ(c.cache.max_entries, 5u);
  const Config& upper = expect_ok(parse(doc(R"("cache":{"min_validity_seconds":3600})")));
  EXPECT_EQ(upper.cache.min_validity, std::chrono::seconds(3600));
}

TEST(ConfigTest, CacheSettingsOutOfBoundsAreErrors) {
  expect_error(parse(doc(R"("cache":{"min_validity_seconds":3601})")),
               "cache.min_validity_seconds");
  expect_error(parse(doc(R"("cache":{"min_validity_seconds":-1})")), "cache.min_validity_seconds");
  expect_error(parse(doc(R"("cache":{"idle_ttl_seconds":0})")), "cache.idle_ttl_seconds");
  expect_error(parse(doc(R"("cache":{"max_entries":0})")), "cache.max_entries");
  expect_error(parse(doc(R"("cache":{"max_entries":18446744073709551615})")), "cache.max_entries");
}

TEST(ConfigTest, CacheBoundsHaveDefaultsAndAreApplied) {
  const Config& defaults = expect_ok(parse(doc("")));
  EXPECT_EQ(defaults.cache.max_entries_per_target, 1000u);
  EXPECT_EQ(defaults.cache.max_in_flight, 64u);
  EXPECT_EQ(defaults.cache.max_in_flight_per_host, 16u);
  EXPECT_EQ(defaults.cache.max_queued, 256u);
  EXPECT_EQ(defaults.cache.max_queue_wait, std::chrono::milliseconds(1000));
  const Config& c = expect_ok(parse(
      doc(R"("cache":{"max_entries_per_target":7,"max_in_flight":8,"max_in_flight_per_host":2,)"
          R"("max_queued":0,"max_queue_wait_ms":250})")));
  EXPECT_EQ(c.cache.max_entries_per_target, 7u);
  EXPECT_EQ(c.cache.max_in_flight, 8u);
  EXPECT_EQ(c.cache.max_in_flight_per_host, 2u);
  EXPECT_EQ(c.cache.max_queued, 0u);
  EXPECT_EQ(c.cache.max_queue_wait, std::chrono::milliseconds(250));
}

TEST(ConfigTest, CacheBoundsOutOfRangeOrUnknownAreErrors) {
  expect_error(parse(doc(R"("cache":{"max_entries_per_target":0})")),
               "cache.max_entries_per_target");
  expect_error(parse(doc(R"("cache":{"max_in_flight":0})")), "cache.max_in_flight");
  expect_error(parse(doc(R"("cache":{"max_in_flight_per_host":0})")),
               "cache.max_in_flight_per_host");
  expect_error(parse(doc(R"("cache":{"max_queued":-1})")), "cache.max_queued");
  expect_error(parse(doc(R"("cache":{"max_queue_wait_ms":60001})")), "cache.max_queue_wait_ms");
  expect_error(parse(doc(R"("cache":{"max_fetches":4})")), "cache.max_fetches");
}

TEST(ConfigTest, IdentityHeaderIsKept) {
  const Config& c = expect_ok(parse(doc(R"("identity_header":"0123456789abcdef")")));
  EXPECT_EQ(c.identity_header, "0123456789abcdef");
}

TEST(ConfigTest, ShortIdentityHeaderIsAnError) {
  expect_error(parse(doc(R"("identity_header":"0123456789abcde")")), "identity_header");
  expect_error(parse(doc(R"("identity_header":"")")), "identity_header");
}

TEST(ConfigTest, IdentityHeaderAndIdentityHeaderFileTogetherAreAnError) {
  expect_error(
      parse(doc(R"("identity_header":"0123456789abcdef","identity_header_file":"/nonexistent")")),
      "identity_header");
}

class IdentityHeaderFileTest : public ::testing::Test {
 protected:
  std::string write(const std::string& content, mode_t mode) {
    path_ = ::testing::TempDir() + "ficbroker_identity_header_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    {
      std::ofstream out(path_, std::ios::binary | std::ios::trunc);
      out << content;
    }
    ::chmod(path_.c_str(), mode);
    return path_;
  }
  void TearDown() override {
    if (!path_.empty()) std::remove(path_.c_str());
  }
  std::string path_;
};

TEST_F(IdentityHeaderFileTest, SecretIsReadAndTrimmed) {
  const auto path = write("  0123456789abcdef0123\n", 0600);
  const auto load = parse(doc(R"("identity_header_file":")" + path + "\""));
  const Config& c = expect_ok(load);
  EXPECT_EQ(c.identity_header, "0123456789abcdef0123");
  EXPECT_EQ(c.identity_header_file, path);
  EXPECT_TRUE(load.warnings.empty());
}

TEST_F(IdentityHeaderFileTest, FileReadableByOthersIsAWarning) {
  const auto path = write("0123456789abcdef0123", 0644);
  const auto load = parse(doc(R"("identity_header_file":")" + path + "\""));
  expect_ok(load);
  ASSERT_EQ(load.warnings.size(), 1u);
  EXPECT_EQ(load.warnings[0].rfind("identity_header_file: ", 0), 0u) << load.warnings[0];
}

TEST_F(IdentityHeaderFileTest, ShortSecretInTheFileIsAnError) {
  const auto path = write("short\n", 0600);
  expect_error(parse(doc(R"("identity_header_file":")" + path + "\"")), "identity_header_file");
}

TEST_F(IdentityHeaderFileTest, MissingFileIsAnError) {
  expect_error(parse(doc(R"("identity_header_file":"/nonexistent/ficbroker/secret")")),
               "identity_header_file");
}

TEST(ConfigTest, AppServiceSourceReadsIdentityEndpointAndHeaderFromTheEnvironment) {
  const auto env = env_of({{"IDENTITY_ENDPOINT", "http://127.0.0.1:41741/msi/token"},
                           {"IDENTITY_HEADER", "platform-secret"}});
  const auto load = parse(std::string(R"({"sources":{"as":{"type":"app_service"}},)") +
                              R"("targets":[{"tenant_id":"t","client_id":")" + kApp + R"("}]})",
                          env);
  const Config& c = expect_ok(load);
  const SourceConfig* s = c.source("as");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->type, SourceType::app_service);
  EXPECT_EQ(s->endpoint.host, "127.0.0.1");
  EXPECT_EQ(s->endpoint.port, 41741);
  EXPECT_EQ(s->endpoint.path, "/msi/token");
  EXPECT_EQ(s->header, "platform-secret");
}

TEST(ConfigTest, AppServiceSourceSettingsWinOverTheEnvironment) {
  const auto env =
      env_of({{"IDENTITY_ENDPOINT", "http://127.0.0.1:1/env"}, {"IDENTITY_HEADER", "from-env"}});
  const auto load = parse(
      std::string(
          R"({"sources":{"as":{"type":"app_service","endpoint":"http://169.254.129.5:8081/msi/token","header":"from-config"}},)") +
          R"("targets":[{"tenant_id":"t","client_id":")" + kApp + R"("}]})",
      env);
  const Config& c = expect_ok(load);
  const SourceConfig* s = c.source("as");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->endpoint.host, "169.254.129.5");
  EXPECT_EQ(s->endpoint.port, 8081);
  EXPECT_EQ(s->header, "from-config");
}

TEST(ConfigTest, AppServiceSourceWithoutEndpointOrHeaderNamesBoth) {
  const auto load = parse(std::string(R"({"sources":{"as":{"type":"app_service"}},)") +
                          R"("targets":[{"tenant_id":"t","client_id":")" + kApp + R"("}]})");
  expect_error(load, "sources.as.endpoint");
  expect_error(load, "sources.as.header");
}

TEST(ConfigTest, AppServiceEndpointToARoutableHostOverHttpIsRejected) {
  const auto env = env_of({{"IDENTITY_ENDPOINT", "http://msi.example.com/msi/token"},
                           {"IDENTITY_HEADER", "platform-secret"}});
  expect_error(parse(std::string(R"({"sources":{"as":{"type":"app_service"}},)") +
                         R"("targets":[{"tenant_id":"t","client_id":")" + kApp + R"("}]})",
                     env),
               "sources.as.endpoint");
}

TEST(ConfigTest, ImdsEndpointMustNotHaveAPath) {
  expect_error(
      parse(
          std::string(
              R"({"sources":{"mi":{"type":"imds","endpoint":"http://169.254.169.254/metadata"}},)") +
          R"("targets":[{"tenant_id":"t","client_id":")" + kApp + R"("}]})"),
      "sources.mi.endpoint");
}

TEST(ConfigTest, SourceSelectorsAreAllKept) {
  // Several may be given: callers can then select the source's identity by any of them.
  const auto load = parse(std::string(R"({"sources":{"mi":{"type":"imds","client_id":")") + kApp2 +
                          R"(","object_id":"oid-1","resource_id":"/subscriptions/s/id"}},)" +
                          R"("targets":[{"tenant_id":"t","client_id":")" + kApp + R"("}]})");
  const Config c = expect_ok(load);
  const SourceConfig* mi = c.source("mi");
  ASSERT_NE(mi, nullptr);
  EXPECT_EQ(mi->client_id, kApp2);
  EXPECT_EQ(mi->object_id, "oid-1");
  EXPECT_EQ(mi->resource_id, "/subscriptions/s/id");
}

TEST(ConfigTest, EmptySourceSelectorIsAnError) {
  expect_error(parse(std::string(R"({"sources":{"mi":{"type":"imds","client_id":""}},)") +
                     R"("targets":[{"tenant_id":"t","client_id":")" + kApp + R"("}]})"),
               "sources.mi.client_id");
  expect_error(parse(std::string(R"({"sources":{"mi":{"type":"imds","object_id":7}},)") +
                     R"("targets":[{"tenant_id":"t","client_id":")" + kApp + R"("}]})"),
               "sources.mi.object_id");
}

TEST(ConfigTest, WorkloadIdentitySourceReadsTheTokenFileFromTheEnvironment) {
  const auto env = env_of(
      {{"AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/azure/tokens/azure-identity-token"}});
  const auto load = parse(std::string(R"({"sources":{"wi":{"type":"workload_identity"}},)") +
                              R"("targets":[{"tenant_id":"t","client_id":")" + kApp + R"("}]})",
                          env);
  const Config& c = expect_ok(load);
  const SourceConfig* s = c.source("wi");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->type, SourceType::workload_identity);
  EXPECT_EQ(s->path, "/var/run/secrets/azure/tokens/azure-identity-token");
}

TEST(ConfigTest, WorkloadIdentitySourceWithoutPathOrEnvironmentIsAnError) {
  expect_error(parse(std::string(R"({"sources":{"wi":{"type":"workload_identity"}},)") +
                     R"("targets":[{"tenant_id":"t","client_id":")" + kApp + R"("}]})"),
               "sources.wi.path");
}

TEST(ConfigTest, FileSourceNeedsAPathAndIgnoresTheEnvironment) {
  const auto env = env_of({{"AZURE_FEDERATED_TOKEN_FILE", "/from/env"}});
  expect_error(parse(std::string(R"({"sources":{"f":{"type":"file"}},)") +
                         R"("targets":[{"tenant_id":"t","client_id":")" + kApp + R"("}]})",
                     env),
               "sources.f.path");
  const auto load = parse(std::string(R"({"sources":{"f":{"type":"file","path":"/tok"}},)") +
                          R"("targets":[{"tenant_id":"t","client_id":")" + kApp + R"("}]})");
  EXPECT_EQ(expect_ok(load).source("f")->type, SourceType::file);
}

TEST(ConfigTest, UnknownOrMissingSourceTypeIsNamed) {
  expect_error(parse(std::string(R"({"sources":{"x":{"type":"msi"}},)") +
                     R"("targets":[{"tenant_id":"t","client_id":")" + kApp + R"("}]})"),
               "sources.x.type");
  expect_error(parse(std::string(R"({"sources":{"x":{}},)") +
                     R"("targets":[{"tenant_id":"t","client_id":")" + kApp + R"("}]})"),
               "sources.x.type");
}

TEST(ConfigTest, UsGovCloudSetsItsAudienceAndAuthority) {
  const auto load = parse(
      doc("", std::string(R"([{"tenant_id":"t","client_id":")") + kApp + R"(","cloud":"usgov"}])"));
  const Config& c = expect_ok(load);
  ASSERT_EQ(c.targets.size(), 1u);
  EXPECT_EQ(c.targets[0].cloud, Cloud::usgov);
  EXPECT_EQ(c.targets[0].exchange_audience, "api://AzureADTokenExchangeUSGov");
  EXPECT_EQ(c.targets[0].authority_host.host, "login.microsoftonline.us");
  EXPECT_TRUE(c.targets[0].authority_host.is_https());
}

TEST(ConfigTest, ChinaCloudSetsItsAudienceAndAuthority) {
  const auto load = parse(
      doc("", std::string(R"([{"tenant_id":"t","client_id":")") + kApp + R"(","cloud":"china"}])"));
  const Config& c = expect_ok(load);
  ASSERT_EQ(c.targets.size(), 1u);
  EXPECT_EQ(c.targets[0].cloud, Cloud::china);
  EXPECT_EQ(c.targets[0].exchange_audience, "api://AzureADTokenExchangeChina");
  EXPECT_EQ(c.targets[0].authority_host.host, "login.chinacloudapi.cn");
}

TEST(ConfigTest, UnknownCloudIsAnError) {
  expect_error(parse(doc("", std::string(R"([{"tenant_id":"t","client_id":")") + kApp +
                                 R"(","cloud":"germany"}])")),
               "targets[0].cloud");
}

TEST(ConfigTest, ExplicitExchangeAudienceWins) {
  const auto load = parse(doc("", std::string(R"([{"tenant_id":"t","client_id":")") + kApp +
                                      R"(","cloud":"usgov","exchange_audience":"api://custom"}])"));
  EXPECT_EQ(expect_ok(load).targets.at(0).exchange_audience, "api://custom");
}

TEST(ConfigTest, CloudHelpersAgreeWithTheDocumentedValues) {
  EXPECT_EQ(exchange_audience_for(Cloud::public_cloud), "api://AzureADTokenExchange");
  EXPECT_EQ(authority_host_for(Cloud::public_cloud), "https://login.microsoftonline.com");
  EXPECT_EQ(authority_host_for(Cloud::usgov), "https://login.microsoftonline.us");
  EXPECT_EQ(authority_host_for(Cloud::china), "https://login.chinacloudapi.cn");
}

TEST(ConfigTest, AllowedHostsAreLowerCased) {
  const Config& c = expect_ok(parse(doc(R"("allowed_hosts":["Broker.Internal:8181"])")));
  EXPECT_EQ(c.allowed_hosts, std::vector<std::string>{"broker.internal:8181"});
}

TEST(ConfigTest, AllowedResourcesAndPrewarmAreKept) {
  const auto load = parse(doc(
      "",
      std::string(R"([{"tenant_id":"t","client_id":")") + kApp +
          R"(","prewarm":["https://vault.azure.net"],)" +
          R"("allowed_resources":["https://vault.azure.net","https://graph.microsoft.com"]}])"));
  const Config& c = expect_ok(load);
  ASSERT_EQ(c.targets.size(), 1u);
  EXPECT_EQ(c.targets[0].prewarm, std::vector<std::string>{"https://vault.azure.net"});
  EXPECT_EQ(c.targets[0].allowed_resources.size(), 2u);
}

TEST(ConfigTest, InvalidLogLevelIsAnError) {
  expect_error(parse(doc(R"("log_level":"verbose")")), "log_level");
  EXPECT_EQ(expect_ok(parse(doc(R"("log_level":"debug")"))).log_level, "debug");
}

TEST(ConfigTest, UnixSocketNeedsAPathAndValidUids) {
  expect_error(parse(doc(R"("unix_socket":{})")), "unix_socket.path");
  expect_error(parse(doc(R"("unix_socket":{"path":"/run/f.sock","allowed_uids":[-1]})")),
               "unix_socket.allowed_uids[0]");
  const Config& c =
      expect_ok(parse(doc(R"("unix_socket":{"path":"/run/f.sock","allowed_uids":[0,1000]})")));
  EXPECT_EQ(c.unix_socket.path, "/run/f.sock");
  EXPECT_EQ(c.unix_socket.allowed_uids, (std::vector<std::uint32_t>{0, 1000}));
}

TEST(ConfigTest, SeveralErrorsAreReportedAtOnce) {
  const auto load = parse(R"({
    "listen": "0.0.0.0:8181",
    "colour": "blue",
    "cache": { "max_entries": 0 },
    "sources": { "mi": { "type": "imds" } },
    "targets": [ { "tenant_id": "t", "client_id": "nope" } ]
  })");
  expect_error(load, "listen");
  expect_error(load, "colour");
  expect_error(load, "cache.max_entries");
  expect_error(load, "targets[0].client_id");
  EXPECT_GE(load.errors.size(), 4u) << all_errors(load);
}

TEST(ConfigTest, ShortIdentityHeaderIsReportedAlongsideOtherErrors) {
  // Every problem at once: a short secret must not hide behind an unrelated error.
  const auto load = parse(doc(R"("listen":"nonsense","identity_header":"short")"));
  expect_error(load, "listen");
  expect_error(load, "identity_header");
}

// --- the source type table ---------------------------------------------------------------------

std::string source_doc(const std::string& source_json) {
  return std::string(R"({"sources":{"s":)") + source_json +
         R"(},"targets":[{"tenant_id":"t","client_id":")" + kApp + R"("}]})";
}

TEST(SourceTypeTableTest, EachTypeRefusesTheKeysOfTheOthersNamingThem) {
  const auto env = env_of({{"IDENTITY_ENDPOINT", "http://127.0.0.1:41741/msi/token"},
                           {"IDENTITY_HEADER", "h"},
                           {"AZURE_FEDERATED_TOKEN_FILE", "/tok"}});
  struct Case {
    const char* source;
    const char* foreign_key;
  };
  for (const auto& c :
       {Case{R"({"type":"imds","header":"x"})", "header"},
        Case{R"({"type":"imds","path":"/tok"})", "path"},
        Case{R"({"type":"app_service","path":"/tok"})", "path"},
        Case{R"({"type":"workload_identity","client_id":"c"})", "client_id"},
        Case{R"({"type":"workload_identity","endpoint":"http://127.0.0.1"})", "endpoint"},
        Case{R"({"type":"file","path":"/tok","object_id":"o"})", "object_id"},
        Case{R"({"type":"file","path":"/tok","header":"h"})", "header"}}) {
    SCOPED_TRACE(c.source);
    expect_error(parse(source_doc(c.source), env), std::string("sources.s.") + c.foreign_key);
  }
}

TEST(SourceTypeTableTest, EveryTypeParsesWithItsOwnKeys) {
  const auto imds = expect_ok(parse(source_doc(
      R"({"type":"imds","endpoint":"http://127.0.0.1:9","client_id":"c","object_id":"o","resource_id":"r"})")));
  const SourceConfig& i = *imds.source("s");
  EXPECT_EQ(i.type, SourceType::imds);
  EXPECT_EQ(i.endpoint.port, 9);
  EXPECT_EQ(i.client_id, "c");
  EXPECT_EQ(i.object_id, "o");
  EXPECT_EQ(i.resource_id, "r");
  const auto as = expect_ok(parse(source_doc(
      R"({"type":"app_service","endpoint":"http://127.0.0.1:9/msi/token","header":"h","object_id":"o"})")));
  EXPECT_EQ(as.source("s")->type, SourceType::app_service);
  EXPECT_EQ(as.source("s")->header, "h");
  EXPECT_EQ(as.source("s")->endpoint.path, "/msi/token");
  const auto wi = expect_ok(parse(source_doc(R"({"type":"workload_identity","path":"/w"})")));
  EXPECT_EQ(wi.source("s")->type, SourceType::workload_identity);
  EXPECT_EQ(wi.source("s")->path, "/w");
}

TEST(SourceTypeTableTest, TypeNamesAreTheConfigurationNames) {
  EXPECT_EQ(source_type_name(SourceType::imds), "imds");
  EXPECT_EQ(source_type_name(SourceType::app_service), "app_service");
  EXPECT_EQ(source_type_name(SourceType::workload_identity), "workload_identity");
  EXPECT_EQ(source_type_name(SourceType::file), "file");
}

// --- same_minting_identity -----------------------------------------------------------------------

SourceConfig full_source() {
  SourceConfig s;
  s.name = "mi";
  s.type = SourceType::app_service;
  s.endpoint = *parse_url("http://127.0.0.1:41741/msi/token");
  s.header = "platform-identity-header";
  s.client_id = "c";
  s.object_id = "o";
  s.resource_id = "r";
  s.path = "/tok";
  return s;
}

TEST(SameMintingIdentityTest, EqualSourcesAndRenamedSourcesAreTheSameIdentity) {
  EXPECT_TRUE(same_minting_identity(full_source(), full_source()));
  SourceConfig renamed = full_source();
  renamed.name = "other";
  EXPECT_TRUE(same_minting_identity(full_source(), renamed))
      << "the name labels a source; it does not choose whom tokens are minted for";
}

TEST(SameMintingIdentityTest, EveryOtherFieldMatters) {
  // One change per field of SourceConfig but the name. minting_fields() in config.cpp names every
  // member by a structured binding, so a new member fails to compile there until it is decided
  // on; this list then needs a row for it.
  const std::vector<std::pair<const char*, std::function<void(SourceConfig&)>>> changes{
      {"type", [](SourceConfig& s) { s.type = SourceType::imds; }},
      {"endpoint.scheme", [](SourceConfig& s) { s.endpoint.scheme = "https"; }},
      {"endpoint.host", [](SourceConfig& s) { s.endpoint.host = "127.0.0.2"; }},
      {"endpoint.port", [](SourceConfig& s) { s.endpoint.port = 41742; }},
      {"endpoint.path", [](SourceConfig& s) { s.endpoint.path = "/other"; }},
      {"header", [](SourceConfig& s) { s.header = "rotated-identity-header"; }},
      {"client_id", [](SourceConfig& s) { s.client_id = "c2"; }},
      {"object_id", [](SourceConfig& s) { s.object_id = "o2"; }},
      {"resource_id", [](SourceConfig& s) { s.resource_id = "r2"; }},
      {"path", [](SourceConfig& s) { s.path = "/tok2"; }},
  };
  for (const auto& [field, change] : changes) {
    SourceConfig changed = full_source();
    change(changed);
    EXPECT_FALSE(same_minting_identity(full_source(), changed)) << field;
    EXPECT_FALSE(same_minting_identity(changed, full_source())) << field;
  }
}

}  // namespace
}  // namespace ficbroker
