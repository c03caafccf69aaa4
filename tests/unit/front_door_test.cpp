// The front door without sockets: a Broker over a real HttpClient that never reaches an upstream
// (every request here is answered by the router, the operations routes, the cache or target
// resolution), a ManualClock, and a Logger writing to a temporary file that the tests read back.
#include "ficbroker/front_door/front_door.hpp"

#include "ficbroker/upstream/http_client.hpp"
#include "ficbroker/util/clock.hpp"

#include "run_coro.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/json.hpp>

#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <string>

namespace ficbroker {
namespace {

namespace json = boost::json;
using testing::run_coro;

constexpr std::string_view kTenant = "contoso.com";
constexpr std::string_view kApp = "aaaaaaaa-0000-0000-0000-000000000001";
constexpr std::string_view kVault = "https://vault.azure.net";
constexpr std::string_view kAccessToken = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJl";

std::shared_ptr<const Config> make_config(std::vector<std::string> prewarm = {}) {
  auto config = std::make_shared<Config>();
  SourceConfig file;
  file.name = "file";
  file.type = SourceType::file;
  file.path = "/nonexistent/ficbroker-front-door-test-token";
  config->sources.emplace("file", file);
  TargetConfig target;
  target.tenant_id = std::string(kTenant);
  target.client_id = std::string(kApp);
  target.source = "file";
  target.is_default = true;
  target.prewarm = std::move(prewarm);
  config->targets.push_back(target);
  return config;
}

asio::awaitable<TokenResult> immediate(Token token) { co_return token; }

class FrontDoorTest : public ::testing::Test {
 protected:
  explicit FrontDoorTest(std::shared_ptr<const Config> config = make_config())
      : log_file_(std::tmpfile()),
        log_(LogLevel::info, log_file_),
        tls_(make_client_tls_context("")),
        client_(ioc_.get_executor(), *tls_, ClientLimits{}),
        broker_(ioc_.get_executor(), std::move(config), client_, clock_, log_, metrics_),
        door_(settings_, broker_, metrics_, log_) {}
  ~FrontDoorTest() override {
    broker_.stop();
    std::fclose(log_file_);
  }

  RequestView get(std::string_view target) const {
    RequestView r;
    r.method = "GET";
    r.target = target;
    r.host = "127.0.0.1:8181";
    r.metadata = "true";
    return r;
  }

  Reply serve(const RequestView& view) { return run_coro(ioc_, door_.serve(view)); }

  // Puts a token for the default target and `resource` in the cache, as a fetch would.
  void cache_token(std::string_view resource) {
    Token token;
    token.access_token = std::string(kAccessToken);
    token.issued_at = clock_.now();
    token.expires_at = token.issued_at + std::chrono::hours(1);
    token.expires_on = clock_.epoch_seconds() + 3600;
    token.ext_expires_on = token.expires_on;
    token.not_before = clock_.epoch_seconds();
    const std::string key =
        Broker::token_key(broker_.config().targets.front(), resource_to_scope(resource));
    TokenCache::Fetch fetch = [token] { return immediate(token); };
    const TokenResult r = run_coro(ioc_, broker_.cache().get(key, std::move(fetch)));
    ASSERT_TRUE(r.has_value());
  }

  std::string log_text() {
    std::fflush(log_file_);
    std::rewind(log_file_);
    std::string text;
    char buffer[4096];
    while (const std::size_t n = std::fread(buffer, 1, sizeof buffer, log_file_)) {
      text.append(buffer, n);
    }
    std::fseek(log_file_, 0, SEEK_END);
    return text;
  }

  // The one request log line written so far, parsed; empty when there is none (or several).
  json::object request_line() {
    json::object found;
    int count = 0;
    const std::string text = log_text();
    std::size_t start = 0;
    while (start < text.size()) {
      const auto end = text.find('\n', start);
      const auto line = text.substr(start, end - start);
      start = end == std::string::npos ? text.size() : end + 1;
      json::error_code ec;
      auto value = json::parse(line, ec);
      if (ec || !value.is_object()) continue;
      const auto* event = value.as_object().if_contains("event");
      if (event && event->is_string() && event->as_string() == "request") {
        found = value.as_object();
        ++count;
      }
    }
    return count == 1 ? found : json::object{};
  }

  static std::string str(const json::object& o, std::string_view key) {
    const auto* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
  }

  asio::io_context ioc_;
  ManualClock clock_;
  std::FILE* log_file_;
  Logger log_;
  Metrics metrics_;
  std::unique_ptr<asio::ssl::context> tls_;
  HttpClient client_;
  Broker broker_;
  RouterSettings settings_;
  FrontDoor door_;
};

TEST_F(FrontDoorTest, HealthzIsOkAndNotLogged) {
  const Reply r = serve(get("/healthz"));
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.body, R"({"status":"ok"})");
  EXPECT_EQ(log_text().find("\"request\""), std::string::npos) << log_text();
}

TEST_F(FrontDoorTest, ReadyzIsReadyWithoutPrewarmTokens) {
  const Reply r = serve(get("/readyz"));
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.body, R"({"status":"ready"})");
}

class FrontDoorPrewarmTest : public FrontDoorTest {
 protected:
  FrontDoorPrewarmTest() : FrontDoorTest(make_config({std::string(kVault)})) {}
};

TEST_F(FrontDoorPrewarmTest, ReadyzIs503UntilThePrewarmTokenIsCached) {
  const Reply before = serve(get("/readyz"));
  EXPECT_EQ(before.status, 503u);
  EXPECT_EQ(before.retry_after_seconds, 1);
  EXPECT_NE(before.body.find("not_ready"), std::string::npos) << before.body;
  cache_token(kVault);
  const Reply after = serve(get("/readyz"));
  EXPECT_EQ(after.status, 200u);
}

TEST_F(FrontDoorTest, MetricsAreTextAndCountEarlierRequests) {
  serve(get("/healthz"));
  const Reply r = serve(get("/metrics"));
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(std::string_view(r.content_type), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(r.body.find(R"(ficbroker_requests_total{route="healthz",status="200"} 1)"),
            std::string::npos)
      << r.body;
}

TEST_F(FrontDoorTest, UnknownPathIs404AndLoggedAsOther) {
  const Reply r = serve(get("/nope"));
  EXPECT_EQ(r.status, 404u);
  const auto line = request_line();
  EXPECT_EQ(str(line, "route"), "other") << log_text();
  EXPECT_EQ(str(line, "cache"), "error");
}

TEST_F(FrontDoorTest, WrongMethodOnAnOperationsRouteIs405) {
  RequestView r = get("/healthz");
  r.method = "POST";
  const Reply reply = serve(r);
  EXPECT_EQ(reply.status, 405u);
  EXPECT_NE(reply.body.find("use GET"), std::string::npos) << reply.body;
}

TEST_F(FrontDoorTest, RouterRefusalIsAnsweredAndLoggedWithItsRoute) {
  RequestView r = get("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x");
  r.metadata.reset();
  const Reply reply = serve(r);
  EXPECT_EQ(reply.status, 400u);
  const auto line = request_line();
  EXPECT_EQ(str(line, "route"), "imds") << log_text();
  EXPECT_EQ(str(line, "cache"), "error");
}

TEST_F(FrontDoorTest, UnresolvableQueryIs400WithoutUpstream) {
  const Reply r = serve(get("/token?resource=https://vault.azure.net&tenant=nosuchtenant.com"));
  EXPECT_EQ(r.status, 400u);
  EXPECT_NE(r.body.find("nosuchtenant.com"), std::string::npos) << r.body;
  const auto line = request_line();
  EXPECT_EQ(str(line, "route"), "token") << log_text();
  EXPECT_EQ(str(line, "tenant"), "nosuchtenant.com");
  EXPECT_EQ(str(line, "cache"), "error");
}

TEST_F(FrontDoorTest, UnresolvableQueryOnAppServiceUsesItsErrorShape) {
  settings_.identity_header = "s3cret";
  RequestView r = get("/msi/token?api-version=2019-08-01&resource=x&client_id=unknown");
  r.metadata.reset();
  r.identity_header = "s3cret";
  const Reply reply = serve(r);
  EXPECT_EQ(reply.status, 400u);
  EXPECT_NE(reply.body.find("\"statusCode\""), std::string::npos) << reply.body;
}

TEST_F(FrontDoorTest, CacheHitIsServedAndLoggedWithoutTheToken) {
  cache_token(kVault);
  const Reply r = serve(get(
      "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"));
  ASSERT_EQ(r.status, 200u) << r.body;
  json::error_code ec;
  const auto body = json::parse(r.body, ec);
  ASSERT_FALSE(ec) << r.body;
  EXPECT_EQ(str(body.as_object(), "access_token"), kAccessToken);
  EXPECT_EQ(str(body.as_object(), "client_id"), kApp);
  EXPECT_EQ(str(body.as_object(), "resource"), kVault);
  const auto line = request_line();
  EXPECT_EQ(str(line, "route"), "imds") << log_text();
  EXPECT_EQ(str(line, "cache"), "hit");
  EXPECT_EQ(str(line, "resource"), kVault);
  EXPECT_EQ(log_text().find(kAccessToken), std::string::npos);
}

TEST_F(FrontDoorTest, CacheHitEchoesTheCallersClientId) {
  cache_token(kVault);
  const Reply r =
      serve(get("/token?resource=https://vault.azure.net&client_id="
                "AAAAAAAA-0000-0000-0000-000000000001"));
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_NE(r.body.find(R"("client_id":"AAAAAAAA-0000-0000-0000-000000000001")"), std::string::npos)
      << r.body;
}

TEST_F(FrontDoorTest, AnswerNowLeavesACacheMissToTheBroker) {
  RouteDecision d = route_request(
      get("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://x.example"),
      settings_);
  EXPECT_FALSE(door_.answer_now(d).has_value());
  cache_token("https://x.example");
  RouteDecision again = route_request(
      get("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://x.example"),
      settings_);
  const auto now = door_.answer_now(again);
  ASSERT_TRUE(now.has_value());
  EXPECT_TRUE(now->cached);
  EXPECT_EQ(now->reply.status, 200u);
}

// --- formatting the broker's answers ------------------------------------------------------------

TEST(UpstreamErrorReplyTest, CarriesStatusErrorDescriptionAndRetryAfter) {
  UpstreamError e = UpstreamError::throttled("Entra is throttling", 7);
  e.error = "temporarily_unavailable";
  const Reply r = upstream_error_reply(e, Route::imds_token);
  EXPECT_EQ(r.status, 429u);
  EXPECT_EQ(r.retry_after_seconds, 7);
  EXPECT_EQ(r.body,
            R"({"error":"temporarily_unavailable","error_description":"Entra is throttling"})");
}

TEST(UpstreamErrorReplyTest, WithoutAnErrorCodeItIsServerError) {
  UpstreamError e = UpstreamError::transient("timed out", 0);
  e.error.clear();
  const Reply r = upstream_error_reply(e, Route::app_service_2019);
  EXPECT_EQ(r.status, 503u);
  EXPECT_NE(r.body.find(R"("error":"server_error")"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\"statusCode\""), std::string::npos) << r.body;
}

TEST(AnswerReplyTest, UnresolvedIs400InvalidRequest) {
  const BrokerAnswer answer = Unresolved{"unknown tenant 'x'"};
  const Reply r = answer_reply(answer, TokenQuery{}, Route::none, 0);
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(r.body, R"({"error":"invalid_request","error_description":"unknown tenant 'x'"})");
}

}  // namespace
}  // namespace ficbroker
