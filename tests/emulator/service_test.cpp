// The emulator's request → response service with real RS256 keys and an injected clock.
#include "service.hpp"

#include "ficbroker/util/encoding.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace ficbroker::emulator {
namespace {

namespace json = boost::json;

constexpr std::string_view kTokenPath = "/22222222-2222-2222-2222-222222222222/oauth2/v2.0/token";

json::object body_of(const HttpResponse& res) {
  boost::system::error_code ec;
  json::value v = json::parse(res.body, ec);
  EXPECT_FALSE(ec) << res.body;
  return v.is_object() ? v.get_object() : json::object{};
}

json::object jwt_payload(std::string_view token) {
  const std::optional<ParsedJwt> jwt = parse_jwt(token);
  EXPECT_TRUE(jwt.has_value()) << token;
  return jwt ? jwt->payload : json::object{};
}

class ServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string error;
    std::optional<World> world = parse_world(default_world_json(), error);
    ASSERT_TRUE(world) << error;
    // Give the OIDC FIC a propagation delay so it can be tested through the service too.
    world->apps[0].fics[1].propagation_delay_s = 120;
    service_ = std::make_unique<Service>(std::move(*world), ServiceOptions{3599, 86399},
                                         RsaKey::generate(2048), RsaKey::generate(2048),
                                         [] { return now_; });
  }
  static void TearDownTestSuite() { service_.reset(); }
  void SetUp() override {
    now_ = kStart;
    control("POST", "/_emulator/reset");
  }

  static HttpResponse call(std::string method, std::string target,
                           std::vector<std::pair<std::string, std::string>> headers = {},
                           std::string body = {}, bool tls = false) {
    HttpRequest req;
    req.method = std::move(method);
    req.target = std::move(target);
    req.headers = std::move(headers);
    req.body = std::move(body);
    req.tls = tls;
    return service_->handle(req);
  }
  static HttpResponse control(std::string method, std::string path, std::string body = {}) {
    return call(std::move(method), std::move(path), {}, std::move(body));
  }
  static HttpResponse imds(std::string query, bool metadata = true) {
    std::vector<std::pair<std::string, std::string>> headers;
    if (metadata) headers.emplace_back("Metadata", "true");
    return call("GET", "/metadata/identity/oauth2/token?api-version=2018-02-01&" + query,
                std::move(headers));
  }
  static std::string mi_assertion(std::string_view client_id = "") {
    std::string q = "resource=api%3A%2F%2FAzureADTokenExchange";
    if (!client_id.empty()) q += "&client_id=" + std::string(client_id);
    const HttpResponse res = imds(q);
    EXPECT_EQ(res.status, 200u) << res.body;
    return std::string(body_of(res).at("access_token").as_string());
  }
  static HttpResponse exchange(const std::string& assertion,
                               std::string scope = "https://graph.microsoft.com/.default") {
    const std::string form =
        "grant_type=client_credentials&client_id=cccccccc-0000-0000-0000-"
        "000000000001&scope=" +
        percent_encode(scope) + "&client_assertion_type=" +
        percent_encode("urn:ietf:params:oauth:client-assertion-type:jwt-bearer") +
        "&client_assertion=" + percent_encode(assertion);
    return call("POST", std::string(kTokenPath),
                {{"Content-Type", "application/x-www-form-urlencoded"}}, form, true);
  }

  static constexpr std::int64_t kStart = 1'800'000'000;
  static inline std::int64_t now_ = kStart;
  static inline std::unique_ptr<Service> service_;
};

TEST_F(ServiceTest, ImdsTokenHasStringFieldsAndTheDocumentedClaims) {
  const HttpResponse res = imds("resource=api%3A%2F%2FAzureADTokenExchange");
  ASSERT_EQ(res.status, 200u) << res.body;
  const json::object body = body_of(res);
  for (const char* key : {"access_token", "client_id", "expires_in", "expires_on", "ext_expires_in",
                          "not_before", "resource", "token_type"}) {
    ASSERT_TRUE(body.contains(key)) << key;
    EXPECT_TRUE(body.at(key).is_string()) << key;
  }
  EXPECT_EQ(body.at("expires_in"), "86399");
  EXPECT_EQ(body.at("expires_on").as_string(), std::to_string(kStart + 86399));
  EXPECT_EQ(body.at("resource"), "api://AzureADTokenExchange");

  const std::string token(body.at("access_token").as_string());
  const std::optional<ParsedJwt> jwt = parse_jwt(token);
  ASSERT_TRUE(jwt);
  EXPECT_EQ(jwt->header.at("alg"), "RS256");
  EXPECT_EQ(jwt->header.at("kid"), "emu-entra-1");
  EXPECT_TRUE(service_->entra_signer().verify(jwt->signing_input, jwt->signature));
  const json::object& c = jwt->payload;
  EXPECT_EQ(c.at("aud"), "api://AzureADTokenExchange");
  EXPECT_EQ(c.at("iss"),
            "https://login.microsoftonline.com/11111111-1111-1111-1111-111111111111/v2.0");
  EXPECT_EQ(c.at("sub"), "bbbbbbbb-0000-0000-0000-000000000001");
  EXPECT_EQ(c.at("oid"), "bbbbbbbb-0000-0000-0000-000000000001");
  EXPECT_EQ(c.at("appid"), "aaaaaaaa-0000-0000-0000-000000000001");
  EXPECT_EQ(c.at("azp"), "aaaaaaaa-0000-0000-0000-000000000001");
  EXPECT_EQ(c.at("tid"), "11111111-1111-1111-1111-111111111111");
  EXPECT_EQ(c.at("idtyp"), "app");
  EXPECT_EQ(c.at("exp"), kStart + 86399);
  EXPECT_TRUE(c.at("iat").is_int64());
  EXPECT_TRUE(c.contains("uti"));
  EXPECT_TRUE(c.contains("xms_mirid"));

  const json::object other =
      jwt_payload(std::string(body_of(imds("resource=https%3A%2F%2Fmanagement.azure.com%2F"))
                                  .at("access_token")
                                  .as_string()));
  EXPECT_EQ(other.at("iss"), "https://sts.windows.net/11111111-1111-1111-1111-111111111111/");
  EXPECT_EQ(other.at("aud"), "https://management.azure.com/");
}

TEST_F(ServiceTest, ImdsRequiresTheMetadataHeader) {
  const HttpResponse res = imds("resource=x", false);
  EXPECT_EQ(res.status, 400u);
  EXPECT_EQ(
      res.body,
      R"({"error":"invalid_request","error_description":"Required metadata header not specified"})");
  EXPECT_EQ(imds("client_id=nope&resource=x").status, 400u);
  EXPECT_EQ(imds("").status, 400u);
}

TEST_F(ServiceTest, AppServiceChecksTheIdentityHeader) {
  const std::string target = "/msi/token?api-version=2019-08-01&resource=https://vault.azure.net";
  EXPECT_EQ(call("GET", target).status, 401u);
  EXPECT_EQ(call("GET", target, {{"X-IDENTITY-HEADER", "wrong"}}).status, 401u);
  const HttpResponse ok = call("GET", target, {{"x-identity-header", "emulator-identity-header"}});
  ASSERT_EQ(ok.status, 200u);
  const json::object body = body_of(ok);
  EXPECT_EQ(body.at("expires_on").as_string(), std::to_string(kStart + 86399));
  EXPECT_EQ(body.at("token_type"), "Bearer");
  EXPECT_FALSE(body.contains("expires_in"));
}

TEST_F(ServiceTest, ImdsTokenExchangesForAnAppToken) {
  const HttpResponse res = exchange(mi_assertion(), "https://database.windows.net//.default");
  ASSERT_EQ(res.status, 200u) << res.body;
  const json::object body = body_of(res);
  EXPECT_EQ(body.at("token_type"), "Bearer");
  EXPECT_EQ(body.at("expires_in"), 3599);
  EXPECT_EQ(body.at("ext_expires_in"), 3599);
  const json::object c = jwt_payload(body.at("access_token").as_string());
  EXPECT_EQ(c.at("aud"), "https://database.windows.net/");
  EXPECT_EQ(c.at("iss"), "https://sts.windows.net/22222222-2222-2222-2222-222222222222/");
  EXPECT_EQ(c.at("appid"), "cccccccc-0000-0000-0000-000000000001");
  EXPECT_EQ(c.at("oid"), c.at("sub"));
  EXPECT_EQ(c.at("ver"), "1.0");
  EXPECT_EQ(c.at(kFicDerivedClaim), true);

  // The Entra token is FIC-derived: it may not be used as a FIC in turn.
  const HttpResponse chained = exchange(std::string(body.at("access_token").as_string()));
  EXPECT_EQ(chained.status, 400u);
  EXPECT_EQ(body_of(chained).at("error_codes"), (json::array{700231}));

  // The other MI has no FIC on the app.
  const HttpResponse other = exchange(mi_assertion("aaaaaaaa-0000-0000-0000-000000000002"));
  EXPECT_EQ(other.status, 401u);
  EXPECT_EQ(body_of(other).at("error_codes"), (json::array{700213}));
}

TEST_F(ServiceTest, OidcTokenFicRespectsPropagationDelay) {
  const HttpResponse minted = control("POST", "/_emulator/oidc-token", "{}");
  ASSERT_EQ(minted.status, 200u) << minted.body;
  const std::string token(body_of(minted).at("token").as_string());
  const std::optional<ParsedJwt> jwt = parse_jwt(token);
  ASSERT_TRUE(jwt);
  EXPECT_EQ(jwt->header.at("kid"), "emu-oidc-1");
  EXPECT_TRUE(service_->oidc_signer().verify(jwt->signing_input, jwt->signature));

  now_ = kStart + 119;
  const HttpResponse early = exchange(token);
  EXPECT_EQ(early.status, 400u);
  EXPECT_EQ(body_of(early).at("error_codes"), (json::array{70021}));
  now_ = kStart + 120;
  EXPECT_EQ(exchange(token).status, 200u);
}

TEST_F(ServiceTest, StatsRecordTheFormWithoutTheAssertion) {
  const std::string assertion = mi_assertion();
  exchange(assertion);
  exchange("garbage");
  const json::object stats = body_of(control("GET", "/_emulator/stats"));
  EXPECT_EQ(stats.at("imds"), 1u);
  EXPECT_EQ(stats.at("imds_ok"), 1u);
  EXPECT_EQ(stats.at("entra"), 2u);
  EXPECT_EQ(stats.at("entra_ok"), 1u);
  EXPECT_EQ(stats.at("entra_error"), 1u);
  const json::object& form = stats.at("last_entra_form").as_object();
  EXPECT_EQ(form.at("client_assertion"), std::string("garbage").size());
  EXPECT_EQ(form.at("grant_type"), "client_credentials");
  EXPECT_EQ(stats.at("last_entra_tenant"), "22222222-2222-2222-2222-222222222222");
  EXPECT_EQ(json::serialize(stats).find(assertion), std::string::npos);
}

TEST_F(ServiceTest, FaultsApplyCountAndAreCleared) {
  ASSERT_EQ(control("POST", "/_emulator/faults",
                    R"({"target":"imds","action":"status","status":503,"retry_after":"2",
                        "delay_ms":250,"count":2})")
                .status,
            200u);
  for (int i = 0; i < 2; ++i) {
    const HttpResponse res = imds("resource=x");
    EXPECT_EQ(res.status, 503u);
    EXPECT_EQ(res.delay, std::chrono::milliseconds(250));
    ASSERT_EQ(res.headers.size(), 1u);
    EXPECT_EQ(res.headers[0].first, "Retry-After");
  }
  EXPECT_EQ(imds("resource=x").status, 200u);

  control("POST", "/_emulator/faults", R"({"target":"entra","action":"reset","count":-1})");
  EXPECT_EQ(exchange("x").delivery, Delivery::reset);
  EXPECT_EQ(exchange("x").delivery, Delivery::reset);
  EXPECT_EQ(imds("resource=x").delivery, Delivery::normal);
  control("DELETE", "/_emulator/faults");
  EXPECT_EQ(exchange("x").delivery, Delivery::normal);

  control("POST", "/_emulator/faults", R"({"target":"entra","action":"status","aadsts":70021})");
  const HttpResponse aadsts = exchange(mi_assertion());
  EXPECT_EQ(aadsts.status, 400u);
  const std::string desc(body_of(aadsts).at("error_description").as_string());
  EXPECT_NE(desc.find("Assertion Subject: 'bbbbbbbb-0000-0000-0000-000000000001'"),
            std::string::npos);

  const json::object stats = body_of(control("GET", "/_emulator/stats"));
  EXPECT_EQ(stats.at("imds_faulted"), 2u);
  EXPECT_EQ(stats.at("entra_faulted"), 3u);
}

TEST_F(ServiceTest, SettingsChangeLifetimesAndResetRestoresThem) {
  const HttpResponse set =
      control("POST", "/_emulator/settings",
              R"({"token_lifetime":600,"mi_token_lifetime":900,"delay_ms":5})");
  ASSERT_EQ(set.status, 200u) << set.body;
  EXPECT_EQ(body_of(imds("resource=x")).at("expires_in"), "900");
  EXPECT_EQ(imds("resource=x").delay, std::chrono::milliseconds(5));
  EXPECT_EQ(body_of(exchange(mi_assertion())).at("expires_in"), 600);
  EXPECT_EQ(control("POST", "/_emulator/settings", R"({"token_lifetime":0})").status, 400u);
  EXPECT_EQ(control("POST", "/_emulator/settings", R"({"bogus":1})").status, 400u);

  control("POST", "/_emulator/reset");
  EXPECT_EQ(body_of(imds("resource=x")).at("expires_in"), "86399");
  EXPECT_EQ(imds("resource=x").delay, std::chrono::milliseconds(0));
}

}  // namespace
}  // namespace ficbroker::emulator
