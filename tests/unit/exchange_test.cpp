// The federated exchange request sent to Entra's v2 token endpoint.
#include "ficbroker/upstream/exchange.hpp"

#include "ficbroker/util/encoding.hpp"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace ficbroker {
namespace {

constexpr std::string_view kAssertion =
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJhcGk6Ly9BenVyZUFEVG9rZW5FeGNoYW5nZSJ9.c2ln";

TargetConfig target() {
  TargetConfig t;
  t.tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47";
  t.client_id = "11111111-2222-3333-4444-555555555555";
  t.source = "mi";
  t.authority_host = *parse_url("https://login.microsoftonline.com");
  return t;
}

// The form body as a map; fails the test on a duplicate or malformed field.
std::map<std::string, std::string> form_of(const HttpRequest& req) {
  std::map<std::string, std::string> out;
  const auto fields = parse_query(req.body);
  EXPECT_TRUE(fields.has_value()) << req.body;
  if (!fields) return out;
  for (const auto& [k, v] : *fields) {
    EXPECT_TRUE(out.emplace(k, v).second) << "duplicate field " << k;
  }
  return out;
}

std::string header(const HttpRequest& req, std::string_view name) {
  for (const auto& [k, v] : req.headers) {
    if (iequals(k, name)) return v;
  }
  return {};
}

TEST(BuildExchangeRequestTest, PostsToTheTenantsV2TokenEndpoint) {
  const auto req = build_exchange_request(target(), "https://vault.azure.net/.default", kAssertion);
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(req.target, "/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token");
  EXPECT_EQ(req.url.scheme, "https");
  EXPECT_EQ(req.url.host, "login.microsoftonline.com");
  EXPECT_EQ(req.url.port, 443);
  EXPECT_EQ(header(req, "Content-Type"), "application/x-www-form-urlencoded");
}

TEST(BuildExchangeRequestTest, FormHasExactlyTheFiveClientCredentialFields) {
  const auto req = build_exchange_request(target(), "https://vault.azure.net/.default", kAssertion);
  const auto form = form_of(req);
  const std::map<std::string, std::string> expected{
      {"grant_type", "client_credentials"},
      {"client_id", "11111111-2222-3333-4444-555555555555"},
      {"scope", "https://vault.azure.net/.default"},
      {"client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
      {"client_assertion", std::string(kAssertion)}};
  EXPECT_EQ(form, expected);
}

TEST(BuildExchangeRequestTest, ScopeWithADoubleSlashSurvivesEncoding) {
  const auto req =
      build_exchange_request(target(), "https://database.windows.net//.default", kAssertion);
  EXPECT_EQ(form_of(req).at("scope"), "https://database.windows.net//.default");
  // Encoded, not raw: '/' and ':' must not appear in the form value.
  EXPECT_NE(req.body.find("scope=https%3A%2F%2Fdatabase.windows.net%2F%2F.default"),
            std::string::npos)
      << req.body;
}

TEST(BuildExchangeRequestTest, AssertionWithReservedCharactersSurvivesEncoding) {
  // Some issuers use standard base64 ('+', '/', '='); a '+' left raw would decode as a space.
  const std::string assertion = "a+b/c=.d+e.f==";
  const auto req = build_exchange_request(target(), "api://x/.default", assertion);
  EXPECT_EQ(form_of(req).at("client_assertion"), assertion);
  EXPECT_EQ(req.body.find('+'), std::string::npos) << req.body;
}

TEST(BuildExchangeRequestTest, ScopeWithSpacesOrAmpersandsCannotInjectFields) {
  const auto req =
      build_exchange_request(target(), "https://a/.default&grant_type=password x", kAssertion);
  const auto form = form_of(req);
  EXPECT_EQ(form.size(), 5u);
  EXPECT_EQ(form.at("grant_type"), "client_credentials");
  EXPECT_EQ(form.at("scope"), "https://a/.default&grant_type=password x");
}

TEST(BuildExchangeRequestTest, UsesTheTargetsAuthorityHost) {
  TargetConfig t = target();
  t.authority_host = *parse_url("http://127.0.0.1:8443");
  t.tenant_id = "contoso.onmicrosoft.us";
  const auto req =
      build_exchange_request(t, "https://vault.usgovcloudapi.net/.default", kAssertion);
  EXPECT_EQ(req.url.scheme, "http");
  EXPECT_EQ(req.url.host, "127.0.0.1");
  EXPECT_EQ(req.url.port, 8443);
  EXPECT_EQ(req.target, "/contoso.onmicrosoft.us/oauth2/v2.0/token");
}

}  // namespace
}  // namespace ficbroker
