// The core promise end to end: a cross-tenant token through the real binary, the real emulator,
// real sockets and TLS.
#include "fixture.hpp"

#include <atomic>
#include <signal.h>
#include <thread>

namespace ficbroker::testing {
namespace {
namespace json = boost::json;

TEST_F(BrokerTest, CrossTenantTokenCarriesResourceTenantClaims) {
  const auto r = broker_->get_with_metadata(
      std::string("/token?resource=https://graph.microsoft.com&tenant=") + kTenantB);
  ASSERT_EQ(r.status, 200u) << r.body;
  const auto body = json::parse(r.body).as_object();
  const auto claims = jwt_claims(str(body, "access_token"));
  EXPECT_EQ(str(claims, "iss"), std::string("https://sts.windows.net/") + kTenantB + "/");
  EXPECT_EQ(str(claims, "tid"), kTenantB);
  EXPECT_EQ(str(claims, "appid"), kApp);
  EXPECT_EQ(str(claims, "aud"), "https://graph.microsoft.com");
  EXPECT_EQ(str(body, "resource"), "https://graph.microsoft.com");
  EXPECT_EQ(str(body, "token_type"), "Bearer");
}

TEST_F(BrokerTest, EverySuccessValueIsAStringAndExpiryIsConsistent) {
  const auto r = broker_->get_with_metadata(
      "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net");
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_NE(r.header("content-type").find("application/json"), std::string::npos);
  const auto body = json::parse(r.body).as_object();
  for (const char* key : {"access_token", "client_id", "expires_in", "expires_on", "ext_expires_in",
                          "not_before", "resource", "token_type"}) {
    ASSERT_TRUE(body.contains(key)) << key;
    EXPECT_TRUE(body.at(key).is_string()) << key;
  }
  const auto expires_in = std::stoll(str(body, "expires_in"));
  const auto expires_on = std::stoll(str(body, "expires_on"));
  const auto now = static_cast<long long>(::time(nullptr));
  EXPECT_GT(expires_in, 300);
  EXPECT_LE(expires_in, 3600);
  EXPECT_NEAR(static_cast<double>(expires_on - now), static_cast<double>(expires_in), 2.0);
  // The default target answered: tenant A, the multi-tenant app.
  const auto claims = jwt_claims(str(body, "access_token"));
  EXPECT_EQ(str(claims, "tid"), kTenantA);
  EXPECT_EQ(str(body, "client_id"), kApp);
}

TEST_F(BrokerTest, ImdsClientIdSelectsTheTargetWithThatApp) {
  const auto r = broker_->get_with_metadata(
      std::string("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://"
                  "graph.microsoft.com&client_id=") +
      kAppWrongFic);
  // That app's FIC trusts a different subject: Entra's error reaches the caller as a 4xx.
  EXPECT_EQ(r.status, 400u) << r.body;
  const auto body = json::parse(r.body).as_object();
  EXPECT_NE(str(body, "error_description").find("AADSTS700213"), std::string::npos) << r.body;
}

TEST_F(BrokerTest, ObjectIdLearnedFromAFetchedTokenSelectsTheSourceWithoutConfiguringIt) {
  // The source is configured by client_id only; its object id is known once it fetched a token.
  const std::string plain = std::string(
                                "/metadata/identity/oauth2/token?api-version=2018-02-01&resource="
                                "https://vault.azure.net&object_id=") +
                            kUamiObjectId;
  EXPECT_EQ(broker_->get_with_metadata(plain).status, 400u) << "nothing knows the object id yet";
  const auto exchanged = broker_->get_with_metadata("/token?resource=https://graph.microsoft.com");
  ASSERT_EQ(exchanged.status, 200u) << exchanged.body;
  const auto r = broker_->get_with_metadata(plain);
  ASSERT_EQ(r.status, 200u) << r.body;
  const auto body = json::parse(r.body).as_object();
  const auto claims = jwt_claims(str(body, "access_token"));
  EXPECT_EQ(str(claims, "oid"), kUamiObjectId);
  EXPECT_EQ(str(claims, "aud"), "https://vault.azure.net");
  EXPECT_EQ(str(body, "client_id"), kUamiClientId);
}

TEST_F(BrokerTest, MissingMetadataHeaderIsRefusedAtOnce) {
  for (const char* target :
       {"/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://x",
        "/metadata/identity/oauth2/token", "/token?resource=https://graph.microsoft.com"}) {
    const auto start = std::chrono::steady_clock::now();
    const auto r = broker_->get(target);
    const auto elapsed = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(r.status, 400u) << target;
    EXPECT_EQ(
        r.body,
        R"({"error":"invalid_request","error_description":"Required metadata header not specified"})")
        << target;
    // Not a timing assertion on performance: a probe must never wait on upstream at all, and
    // upstream is several round trips away; 1 s is the SDK probes' own timeout.
    EXPECT_LT(elapsed, std::chrono::seconds(1));
  }
  EXPECT_EQ(stat_count(emulator_->stats(), "imds"), 0);
}

TEST_F(BrokerTest, UnknownTenantIs400NamingTheTenant) {
  const auto r = broker_->get_with_metadata(
      "/token?resource=https://graph.microsoft.com&tenant=99999999-9999-9999-9999-999999999999");
  EXPECT_EQ(r.status, 400u);
  EXPECT_NE(r.body.find("99999999-9999-9999-9999-999999999999"), std::string::npos) << r.body;
  EXPECT_EQ(stat_count(emulator_->stats(), "entra"), 0);
}

TEST_F(BrokerTest, UnknownClientIdIs400NamingIt) {
  const auto r = broker_->get_with_metadata(
      "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://x&client_id="
      "dddddddd-0000-0000-0000-000000000000");
  EXPECT_EQ(r.status, 400u);
  EXPECT_NE(r.body.find("dddddddd-0000-0000-0000-000000000000"), std::string::npos) << r.body;
}

TEST_F(BrokerTest, AppNotProvisionedInTenantSurfacesAadsts700016) {
  const auto r = broker_->get_with_metadata(
      std::string("/token?resource=https://graph.microsoft.com&tenant=") + kTenantNoApp);
  EXPECT_EQ(r.status, 400u);
  EXPECT_NE(r.body.find("AADSTS700016"), std::string::npos) << r.body;
}

TEST_F(BrokerTest, UnknownResourceSurfacesAadsts500011) {
  const auto r = broker_->get_with_metadata(
      std::string("/token?resource=https://not-a-resource.example&tenant=") + kTenantB);
  EXPECT_EQ(r.status, 400u);
  EXPECT_NE(r.body.find("AADSTS500011"), std::string::npos) << r.body;
}

TEST_F(BrokerTest, TrailingSlashResourceKeepsItsSlashInTheScope) {
  const auto r = broker_->get_with_metadata(
      "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fdatabase."
      "windows.net%2F");
  ASSERT_EQ(r.status, 200u) << r.body;
  const auto body = json::parse(r.body).as_object();
  EXPECT_EQ(str(body, "resource"), "https://database.windows.net/");
  EXPECT_EQ(str(jwt_claims(str(body, "access_token")), "aud"), "https://database.windows.net/");
  const auto form = emulator_->stats().at("last_entra_form").as_object();
  EXPECT_EQ(str(form, "scope"), "https://database.windows.net//.default");
  EXPECT_EQ(str(form, "grant_type"), "client_credentials");
  EXPECT_EQ(str(form, "client_assertion_type"),
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
  EXPECT_EQ(str(form, "client_id"), kApp);
}

TEST_F(BrokerTest, HundredConcurrentFirstRequestsMakeOneUpstreamCallEach) {
  constexpr int kClients = 100;
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&] {
      try {
        const auto r =
            broker_->get_with_metadata("/token?resource=https://cognitiveservices.azure.com");
        if (r.status == 200) ++ok;
      } catch (const std::exception&) {
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), kClients);
  const auto stats = emulator_->stats();
  EXPECT_EQ(stat_count(stats, "imds"), 1);
  EXPECT_EQ(stat_count(stats, "entra"), 1);
}

TEST_F(BrokerTest, CachedTokenIsServedWithoutUpstreamCalls) {
  const std::string target = "/token?resource=https://vault.azure.net";
  const auto first = broker_->get_with_metadata(target);
  ASSERT_EQ(first.status, 200u) << first.body;
  for (int i = 0; i < 20; ++i) {
    const auto again = broker_->get_with_metadata(target);
    ASSERT_EQ(again.status, 200u);
    EXPECT_EQ(json::parse(again.body).at("access_token"),
              json::parse(first.body).at("access_token"));
  }
  const auto stats = emulator_->stats();
  EXPECT_EQ(stat_count(stats, "entra"), 1);
  EXPECT_EQ(stat_count(stats, "imds"), 1);
  // A different resource in the same tenant reuses the cached assertion: no second IMDS call.
  ASSERT_EQ(broker_->get_with_metadata("/token?resource=https://graph.microsoft.com").status, 200u);
  EXPECT_EQ(stat_count(emulator_->stats(), "imds"), 1);
  EXPECT_EQ(stat_count(emulator_->stats(), "entra"), 2);
}

TEST_F(BrokerTest, AppServiceRouteNeedsTheIdentityHeader) {
  const std::string target =
      "/msi/token?api-version=2019-08-01&resource=https://graph.microsoft.com";
  const auto ok = broker_->get(target, {{"X-IDENTITY-HEADER", kIdentityHeader}});
  ASSERT_EQ(ok.status, 200u) << ok.body;
  EXPECT_EQ(str(json::parse(ok.body).as_object(), "resource"), "https://graph.microsoft.com");
  const auto wrong = broker_->get(target, {{"X-IDENTITY-HEADER", "wrong"}});
  EXPECT_EQ(wrong.status, 401u);
  const auto none = broker_->get(target);
  EXPECT_EQ(none.status, 401u);
  const auto body = json::parse(none.body).as_object();
  EXPECT_TRUE(body.contains("statusCode"));
  EXPECT_TRUE(body.contains("message"));
}

TEST_F(BrokerTest, TokensNeverReachTheLog) {
  const auto r = broker_->get_with_metadata("/token?resource=https://graph.microsoft.com");
  ASSERT_EQ(r.status, 200u);
  const auto token = str(json::parse(r.body).as_object(), "access_token");
  const auto log = broker_->log();
  EXPECT_NE(log.find("token_minted"), std::string::npos);
  EXPECT_EQ(log.find(token), std::string::npos);
  // Nor any JWT-looking fragment of it (the signature part is the secret-bearing tail).
  EXPECT_EQ(log.find(token.substr(token.rfind('.') + 1, 40)), std::string::npos);
}

TEST_F(BrokerTest, UntrustedUpstreamCertificateIsRefused) {
  // Same world, but the broker does not trust the emulator's CA: the TLS handshake must fail.
  std::string config = default_config(*emulator_);
  const auto ca = config.find("\"ca_file\"");
  config.erase(ca, config.find('\n', ca) - ca + 1);
  Broker strict(dir_, config, "strict");
  const auto r = strict.get_with_metadata("/token?resource=https://graph.microsoft.com");
  EXPECT_EQ(r.status, 503u) << r.body;
  EXPECT_EQ(stat_count(emulator_->stats(), "entra"), 0);
}

TEST_F(BrokerTest, HealthAndMetricsAnswer) {
  EXPECT_EQ(broker_->get("/healthz").status, 200u);
  EXPECT_EQ(broker_->get("/readyz").status, 200u);  // no prewarm keys configured
  ASSERT_EQ(broker_->get_with_metadata("/token?resource=https://graph.microsoft.com").status, 200u);
  const auto metrics = broker_->get("/metrics");
  ASSERT_EQ(metrics.status, 200u);
  EXPECT_NE(metrics.body.find("ficbroker_requests_total{route=\"token\",status=\"200\"} 1"),
            std::string::npos)
      << metrics.body;
  EXPECT_NE(metrics.body.find("ficbroker_token_expiry_seconds{kind=\"token\""), std::string::npos);
}

TEST_F(BrokerTest, SigtermExitsCleanly) {
  ASSERT_EQ(broker_->get("/healthz").status, 200u);
  EXPECT_EQ(broker_->process().stop(SIGTERM), 0);
}

}  // namespace
}  // namespace ficbroker::testing
