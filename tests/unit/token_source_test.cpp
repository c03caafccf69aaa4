// Where assertions come from: the managed-identity requests (IMDS, App Service) and token files.
#include "ficbroker/upstream/token_source.hpp"

#include "ficbroker/upstream/http_client.hpp"
#include "ficbroker/util/encoding.hpp"

#include "run_coro.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

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

TEST_F(FileSourceTest, FifoReturnsAtOnceWithAnErrorNamingThePath) {
  // A FIFO nobody writes to: a blocking open or read would freeze the I/O thread for good.
  ASSERT_EQ(::mkfifo(config_.path.c_str(), 0600), 0) << std::strerror(errno);
  const auto r = fetch();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, UpstreamError::Kind::transient);
  EXPECT_EQ(http_status(r.error()), 503u);
  EXPECT_NE(r.error().description.find(config_.path), std::string::npos) << r.error().description;
  EXPECT_NE(r.error().description.find("not a regular file"), std::string::npos)
      << r.error().description;
}

TEST_F(FileSourceTest, FifoWithAWriterIsRefusedWithoutReadingIt) {
  ASSERT_EQ(::mkfifo(config_.path.c_str(), 0600), 0) << std::strerror(errno);
  // A writer holding the FIFO open with a token in it: still not a regular file, still refused.
  const int reader = ::open(config_.path.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(reader, 0);
  const int writer = ::open(config_.path.c_str(), O_WRONLY | O_NONBLOCK);
  ASSERT_GE(writer, 0);
  const std::string jwt =
      make_jwt(R"({"exp":)" + std::to_string(clock_.epoch_seconds() + 60) + "}");
  ASSERT_EQ(::write(writer, jwt.data(), jwt.size()), static_cast<ssize_t>(jwt.size()));
  const auto r = fetch();
  ::close(writer);
  ::close(reader);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().description.find(jwt), std::string::npos);
  EXPECT_NE(r.error().description.find("not a regular file"), std::string::npos)
      << r.error().description;
}

TEST_F(FileSourceTest, DirectoryAndDeviceAreRefusedNamingThePath) {
  ASSERT_EQ(::mkdir(config_.path.c_str(), 0700), 0) << std::strerror(errno);
  auto r = fetch();
  ::rmdir(config_.path.c_str());
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().description.find(config_.path), std::string::npos) << r.error().description;
  EXPECT_NE(r.error().description.find("not a regular file"), std::string::npos);

  // A copy: the fixture removes config_.path at the end.
  SourceConfig device = config_;
  device.path = "/dev/zero";  // endless: reading it to the end would never finish
  r = testing::run_coro(ioc_, make_token_source(device, client_, clock_)->fetch("x"));
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().description.find("/dev/zero"), std::string::npos) << r.error().description;
  EXPECT_NE(r.error().description.find("not a regular file"), std::string::npos);
}

TEST_F(FileSourceTest, SymlinkToTheTokenIsFollowed) {
  // Kubernetes projects the token as ..data/token behind a symlink that is swapped on rotation.
  const std::string target = config_.path + ".target";
  const std::string jwt =
      make_jwt(R"({"exp":)" + std::to_string(clock_.epoch_seconds() + 60) + "}");
  {
    std::ofstream out(target, std::ios::binary | std::ios::trunc);
    out << jwt;
  }
  ASSERT_EQ(::symlink(target.c_str(), config_.path.c_str()), 0) << std::strerror(errno);
  const auto r = fetch();
  std::remove(target.c_str());
  ASSERT_TRUE(r.has_value()) << r.error().description;
  EXPECT_EQ(r->access_token, jwt);
}

TEST_F(FileSourceTest, OversizedFileIsAnErrorSayingSo) {
  write(std::string(64 * 1024 + 1, 'a'));
  const auto r = fetch();
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().description.find("larger than 64 KiB"), std::string::npos)
      << r.error().description;
}

// --- What a source says about itself -------------------------------------------------------------

class SourceDescriptionTest : public ::testing::Test {
 protected:
  SourceDescriptionTest()
      : tls_(make_client_tls_context("")), client_(ioc_.get_executor(), *tls_, ClientLimits{}) {}

  std::unique_ptr<TokenSource> make(const SourceConfig& config) {
    return make_token_source(config, client_, clock_);
  }

  asio::io_context ioc_;
  ManualClock clock_;
  std::unique_ptr<asio::ssl::context> tls_;
  HttpClient client_;
};

TEST_F(SourceDescriptionTest, ImdsMintsUnderTheImdsBudget) {
  SourceConfig config = imds_source();
  config.client_id = kUami;
  const auto source = make(config);
  EXPECT_EQ(source->label(), "imds");
  EXPECT_TRUE(source->mints_managed_identity_tokens());
  EXPECT_TRUE(source->under_imds_budget());
  EXPECT_TRUE(source->cacheable());
  EXPECT_EQ(source->identity_ids().client_id, kUami);
}

TEST_F(SourceDescriptionTest, AppServiceMintsOutsideTheImdsBudget) {
  SourceConfig config = app_service_source();
  config.object_id = "o";
  config.resource_id = "r";
  const auto source = make(config);
  EXPECT_EQ(source->label(), "app_service");
  EXPECT_TRUE(source->mints_managed_identity_tokens());
  EXPECT_FALSE(source->under_imds_budget());
  EXPECT_EQ(source->identity_ids().object_id, "o");
  EXPECT_EQ(source->identity_ids().resource_id, "r");
}

TEST_F(SourceDescriptionTest, FileSourcesDoNotMintAndAnswerForNoIdentity) {
  for (const auto type : {SourceType::workload_identity, SourceType::file}) {
    SourceConfig config;
    config.name = "f";
    config.type = type;
    config.path = "/tok";
    const auto source = make(config);
    EXPECT_EQ(source->label(), "file");
    EXPECT_FALSE(source->mints_managed_identity_tokens());
    EXPECT_FALSE(source->under_imds_budget());
    const IdentityIds ids = source->identity_ids();
    EXPECT_TRUE(ids.client_id.empty() && ids.object_id.empty() && ids.resource_id.empty());
  }
}

TEST(LearnedIdentityTest, AppidAndOidOfATokenAreItsClientAndObjectIds) {
  const auto ids = identity_ids_of_token(
      make_jwt(R"({"appid":"c-learned","oid":"o-learned","sub":"s","xms_mirid":"/x"})"));
  EXPECT_EQ(ids.client_id, "c-learned");
  EXPECT_EQ(ids.object_id, "o-learned");
  EXPECT_TRUE(ids.resource_id.empty());
}

TEST(LearnedIdentityTest, AV2TokenWithoutAppidNamesItsClientByAzp) {
  const auto ids = identity_ids_of_token(make_jwt(R"({"azp":"c-v2","oid":"o","ver":"2.0"})"));
  EXPECT_EQ(ids.client_id, "c-v2");
  EXPECT_EQ(identity_ids_of_token(make_jwt(R"({"appid":"c1","azp":"c2"})")).client_id, "c1");
}

TEST(LearnedIdentityTest, ATokenThatDoesNotSayTeachesNothing) {
  for (const std::string& token : {std::string("not-a-jwt"), make_jwt(R"({"appid":7})")}) {
    const auto ids = identity_ids_of_token(token);
    EXPECT_TRUE(ids.client_id.empty() && ids.object_id.empty()) << token;
  }
}

TEST(LearnedIdentityTest, LearnedIdsOnlyFillWhatIsNotConfigured) {
  SourceConfig config = imds_source();
  config.client_id = "c-configured";
  const auto ids = complete_identity_ids(config, IdentityIds{"c-learned", "o-learned", ""});
  EXPECT_EQ(ids.client_id, "c-configured");
  EXPECT_EQ(ids.object_id, "o-learned");
  EXPECT_TRUE(ids.resource_id.empty());
}

}  // namespace
}  // namespace ficbroker
