// Where assertions come from: the managed-identity requests (IMDS, App Service) and token files.
#include "ficbroker/upstream/token_source.hpp"

#include "ficbroker/upstream/http_client.hpp"
#include "ficbroker/util/encoding.hpp"

#include "run_coro.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <string>

namespace ficbroker {
namespace {

constexpr const char* kUami = "dddddddd-0000-0000-0000-000000000004";

SourceConfig imds_source() {
  SourceConfig s;
  s.name = "mi";
  s.type = SourceType::imds;
  s.endpoint = *parse_url("http://169.254.169.254");
  return s;
}

SourceConfig app_service_source() {
  SourceConfig s;
  s.name = "as";
  s.type = SourceType::app_service;
  s.endpoint = *parse_url("http://127.0.0.1:41741/msi/token");
  s.header = "platform-identity-header";
  return s;
}

struct SplitTarget {
  std::string path;
  std::map<std::string, std::string> query;
};

SplitTarget split(const std::string& target) {
  SplitTarget out;
  const auto q = target.find('?');
  out.path = target.substr(0, q);
  if (q == std::string::npos) return out;
  const auto params = parse_query(std::string_view(target).substr(q + 1), false);
  EXPECT_TRUE(params.has_value()) << target;
  if (!params) return out;
  for (const auto& [k, v] : *params) {
    EXPECT_TRUE(out.query.emplace(k, v).second) << "duplicate parameter " << k << " in " << target;
  }
  return out;
}

std::optional<std::string> header(const HttpRequest& req, std::string_view name) {
  for (const auto& [k, v] : req.headers) {
    if (iequals(k, name)) return v;
  }
  return std::nullopt;
}

// --- build_managed_identity_request --------------------------------------------------------------

TEST(BuildManagedIdentityRequestTest, ImdsRequestAsksForTheExchangeAudience) {
  const auto req = build_managed_identity_request(imds_source(), "api://AzureADTokenExchange");
  EXPECT_EQ(req.method, "GET");
  EXPECT_EQ(req.url.host, "169.254.169.254");
  EXPECT_EQ(req.url.port, 80);
  const auto t = split(req.target);
  EXPECT_EQ(t.path, "/metadata/identity/oauth2/token");
  const std::map<std::string, std::string> expected{{"api-version", "2018-02-01"},
                                                    {"resource", "api://AzureADTokenExchange"}};
  EXPECT_EQ(t.query, expected);
  EXPECT_NE(req.target.find("resource=api%3A%2F%2FAzureADTokenExchange"), std::string::npos)
      << req.target;
  EXPECT_EQ(header(req, "Metadata"), std::optional<std::string>("true"));
  EXPECT_FALSE(header(req, "X-IDENTITY-HEADER").has_value());
  EXPECT_TRUE(req.body.empty());
}

TEST(BuildManagedIdentityRequestTest, ImdsRequestNamesTheUserAssignedIdentity) {
  SourceConfig s = imds_source();
  s.client_id = kUami;
  EXPECT_EQ(split(build_managed_identity_request(s, "r").target).query.at("client_id"), kUami);

  s = imds_source();
  s.object_id = "oid-1";
  EXPECT_EQ(split(build_managed_identity_request(s, "r").target).query.at("object_id"), "oid-1");

  s = imds_source();
  s.resource_id = "/subscriptions/s/resourceGroups/rg/providers/x/id 1";
  const auto t = split(build_managed_identity_request(s, "r").target);
  EXPECT_EQ(t.query.at("msi_res_id"), "/subscriptions/s/resourceGroups/rg/providers/x/id 1");
  EXPECT_EQ(t.query.count("mi_res_id"), 0u);
}

TEST(BuildManagedIdentityRequestTest, OnlyOneSelectorIsSentWhenSeveralAreConfigured) {
  // IMDS and App Service document the selectors as mutually exclusive.
  SourceConfig imds = imds_source();
  imds.client_id = kUami;
  imds.object_id = "oid-1";
  imds.resource_id = "/subscriptions/s/id";
  const auto t = split(build_managed_identity_request(imds, "r").target);
  EXPECT_EQ(t.query.at("client_id"), kUami);
  EXPECT_EQ(t.query.count("object_id"), 0u);
  EXPECT_EQ(t.query.count("msi_res_id"), 0u);

  SourceConfig as = app_service_source();
  as.object_id = "oid-1";
  as.resource_id = "/subscriptions/s/id";
  const auto a = split(build_managed_identity_request(as, "r").target);
  EXPECT_EQ(a.query.at("principal_id"), "oid-1");
  EXPECT_EQ(a.query.count("mi_res_id"), 0u);
}

TEST(BuildManagedIdentityRequestTest, SystemAssignedImdsRequestHasNoSelector) {
  const auto t = split(build_managed_identity_request(imds_source(), "r").target);
  EXPECT_EQ(t.query.count("client_id"), 0u);
  EXPECT_EQ(t.query.count("object_id"), 0u);
  EXPECT_EQ(t.query.count("msi_res_id"), 0u);
}

TEST(BuildManagedIdentityRequestTest, ImdsResourceIsEncodedSoItCannotAddParameters) {
  const auto t =
      split(build_managed_identity_request(imds_source(), "https://a/&client_id=evil").target);
  EXPECT_EQ(t.query.at("resource"), "https://a/&client_id=evil");
  EXPECT_EQ(t.query.count("client_id"), 0u);
}

TEST(BuildManagedIdentityRequestTest, AppServiceRequestUsesTheEndpointPathAndSecretHeader) {
  const auto req =
      build_managed_identity_request(app_service_source(), "api://AzureADTokenExchange");
  EXPECT_EQ(req.method, "GET");
  EXPECT_EQ(req.url.host, "127.0.0.1");
  EXPECT_EQ(req.url.port, 41741);
  const auto t = split(req.target);
  EXPECT_EQ(t.path, "/msi/token");
  const std::map<std::string, std::string> expected{{"api-version", "2019-08-01"},
                                                    {"resource", "api://AzureADTokenExchange"}};
  EXPECT_EQ(t.query, expected);
  EXPECT_EQ(header(req, "X-IDENTITY-HEADER"),
            std::optional<std::string>("platform-identity-header"));
  EXPECT_FALSE(header(req, "Metadata").has_value());
}

TEST(BuildManagedIdentityRequestTest, AppServiceRequestUsesAppServiceSelectorNames) {
  SourceConfig s = app_service_source();
  s.client_id = kUami;
  EXPECT_EQ(split(build_managed_identity_request(s, "r").target).query.at("client_id"), kUami);

  s = app_service_source();
  s.object_id = "oid-1";
  EXPECT_EQ(split(build_managed_identity_request(s, "r").target).query.at("principal_id"), "oid-1");

  s = app_service_source();
  s.resource_id = "/subscriptions/s/id";
  const auto t = split(build_managed_identity_request(s, "r").target);
  EXPECT_EQ(t.query.at("mi_res_id"), "/subscriptions/s/id");
  EXPECT_EQ(t.query.count("msi_res_id"), 0u);
}

// --- File sources
// -----------------------------------------------------------------------------------

std::string make_jwt(std::string_view payload_json) {
  return base64url_encode(R"({"alg":"RS256","typ":"JWT"})") + "." + base64url_encode(payload_json) +
         "." + base64url_encode("sig");
}

class FileSourceTest : public ::testing::Test {
 protected:
  FileSourceTest()
      : tls_(make_client_tls_context("")), client_(ioc_.get_executor(), *tls_, ClientLimits{}) {
    config_.name = "wi";
    config_.type = SourceType::workload_identity;
    config_.path = ::testing::TempDir() + "ficbroker_token_" +
                   ::testing::UnitTest::GetInstance()->current_test_info()->name();
  }
  ~FileSourceTest() override { std::remove(config_.path.c_str()); }

  void write(const std::string& content) {
    std::ofstream out(config_.path, std::ios::binary | std::ios::trunc);
    out << content;
  }

  TokenResult fetch() {
    auto source = make_token_source(config_, client_, clock_);
    EXPECT_NE(source, nullptr);
    if (!source) return UpstreamError{};
    EXPECT_FALSE(source->cacheable()) << "a token file is re-read for every exchange";
    return testing::run_coro(ioc_, source->fetch("api://AzureADTokenExchange"));
  }

  asio::io_context ioc_;
  ManualClock clock_;
  std::unique_ptr<asio::ssl::context> tls_;
  HttpClient client_;
  SourceConfig config_;
};

TEST_F(FileSourceTest, ReadsTheTokenAndItsExpiry) {
  const std::int64_t now = clock_.epoch_seconds();
  const std::string jwt =
      make_jwt(R"({"aud":"api://AzureADTokenExchange","nbf":)" + std::to_string(now - 10) +
               R"(,"exp":)" + std::to_string(now + 3600) + "}");
  write(jwt + "\n");
  const auto r = fetch();
  ASSERT_TRUE(r.has_value()) << r.error().description;
  EXPECT_EQ(r->access_token, jwt) << "trailing newline trimmed";
  EXPECT_EQ(r->expires_on, now + 3600);
  EXPECT_EQ(r->not_before, now - 10);
  EXPECT_EQ(r->expires_at, clock_.now() + std::chrono::seconds(3600));
}

TEST_F(FileSourceTest, RotatedFileIsPickedUpAtOnce) {
  const std::int64_t now = clock_.epoch_seconds();
  const std::string first = make_jwt(R"({"exp":)" + std::to_string(now + 600) + "}");
  const std::string second = make_jwt(R"({"exp":)" + std::to_string(now + 3600) + "}");
  write(first);
  auto source = make_token_source(config_, client_, clock_);
  ASSERT_NE(source, nullptr);
  const auto a = testing::run_coro(ioc_, source->fetch("x"));
  write(second);
  const auto b = testing::run_coro(ioc_, source->fetch("x"));
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_EQ(a->access_token, first);
  EXPECT_EQ(b->access_token, second);
}

TEST_F(FileSourceTest, MissingFileIsATransientErrorNamingThePath) {
  const auto r = fetch();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, UpstreamError::Kind::transient);
  EXPECT_EQ(http_status(r.error()), 503u);
  EXPECT_NE(r.error().description.find(config_.path), std::string::npos) << r.error().description;
}

TEST_F(FileSourceTest, ExpiredTokenIsAnErrorWithoutTheToken) {
  const std::string jwt = make_jwt(R"({"exp":)" + std::to_string(clock_.epoch_seconds() - 1) + "}");
  write(jwt);
  const auto r = fetch();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().description.find(jwt), std::string::npos);
}

TEST_F(FileSourceTest, TokenWithoutExpIsAnError) {
  write(make_jwt(R"({"aud":"x"})"));
  EXPECT_FALSE(fetch().has_value());
}

TEST_F(FileSourceTest, FileThatIsNotAJwtIsAnErrorWithoutItsContent) {
  write("not-a-jwt secret-content");
  const auto r = fetch();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().description.find("secret-content"), std::string::npos);
}

TEST_F(FileSourceTest, OversizedFileIsAnError) {
  const std::int64_t exp = clock_.epoch_seconds() + 3600;
  write(make_jwt(R"({"exp":)" + std::to_string(exp) + R"(,"pad":")" + std::string(70000, 'a') +
                 "\"}"));
  EXPECT_FALSE(fetch().has_value());
}

}  // namespace
}  // namespace ficbroker
