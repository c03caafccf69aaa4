// The route table's own rules: the parameter cap and linear duplicate detection on large form
// bodies, path patterns for doors with `{name}`/`{rest}` segments, and the per-route vocabulary
// (labels, kinds, error shapes) that used to be spread over three files.
#include "ficbroker/front_door/router.hpp"

#include <gtest/gtest.h>

#include <string>

namespace ficbroker {
namespace {

constexpr std::string_view kFormPath = "/metadata/identity/oauth2/token";
constexpr std::size_t kSixteenKiB = 16 * 1024;

RequestView form_post(std::string_view body) {
  RequestView r;
  r.method = "POST";
  r.target = kFormPath;
  r.host = "127.0.0.1:8181";
  r.metadata = "true";
  r.content_type = "application/x-www-form-urlencoded";
  r.body = body;
  return r;
}

RouteDecision route(const RequestView& r) { return route_request(r, RouterSettings{}); }

std::string description_of(const RouteDecision& d) {
  if (!d.reply) return "(no reply)";
  return d.reply->body;
}

// `count` parameters k0=…, k1=… (plus resource=), each value padded so the body is about `bytes`.
std::string distinct_form(std::size_t count, std::size_t bytes) {
  std::string body = "resource=https%3A%2F%2Fvault.azure.net";
  const std::size_t pad = count == 0 ? 0 : bytes / count;
  for (std::size_t i = 0; i < count; ++i) {
    body += "&k" + std::to_string(i) + "=" + std::string(pad, 'v');
  }
  return body;
}

TEST(RouteTableTest, SixteenKiBFormOfDistinctKeysUnderTheCapIsRouted) {
  const std::string body = distinct_form(kMaxRequestParameters - 1, kSixteenKiB);
  ASSERT_GE(body.size(), kSixteenKiB - 512);
  const auto d = route(form_post(body));
  ASSERT_FALSE(d.reply.has_value()) << description_of(d);
  EXPECT_EQ(d.route, Route::msi_form_post);
  EXPECT_EQ(d.query.resource, "https://vault.azure.net");
}

TEST(RouteTableTest, SixteenKiBFormOfManyDistinctKeysIsTooManyParameters) {
  std::string body = "resource=https%3A%2F%2Fvault.azure.net";
  for (std::size_t i = 0; body.size() < kSixteenKiB; ++i) body += "&k" + std::to_string(i) + "=1";
  const auto d = route(form_post(body));
  ASSERT_TRUE(d.reply.has_value());
  EXPECT_EQ(d.reply->status, 400u);
  EXPECT_NE(d.reply->body.find("too many parameters"), std::string::npos) << d.reply->body;
  EXPECT_EQ(d.route, Route::msi_form_post);
}

TEST(RouteTableTest, SixteenKiBFormWithARepeatedKeyNamesIt) {
  std::string body = "resource=https%3A%2F%2Fvault.azure.net&pad=" + std::string(kSixteenKiB, 'p');
  body += "&other=1&pad=2";
  const auto d = route(form_post(body));
  ASSERT_TRUE(d.reply.has_value());
  EXPECT_EQ(d.reply->status, 400u);
  EXPECT_NE(d.reply->body.find("duplicate query parameter 'pad'"), std::string::npos)
      << d.reply->body;
}

TEST(RouteTableTest, SixteenKiBFormOfOneKeyRepeatedIsRefused) {
  std::string body = "resource=https%3A%2F%2Fvault.azure.net";
  while (body.size() < kSixteenKiB) body += "&same=1";
  const auto d = route(form_post(body));
  ASSERT_TRUE(d.reply.has_value());
  EXPECT_EQ(d.reply->status, 400u);
}

TEST(RouteTableTest, ExactlyTheCapIsAcceptedOneMoreIsNot) {
  const std::string at_cap = distinct_form(kMaxRequestParameters - 1, 0);
  const auto ok = route(form_post(at_cap));
  EXPECT_FALSE(ok.reply.has_value()) << description_of(ok);
  const std::string over = distinct_form(kMaxRequestParameters, 0);
  const auto refused = route(form_post(over));
  ASSERT_TRUE(refused.reply.has_value());
  EXPECT_EQ(refused.reply->status, 400u);
  EXPECT_NE(refused.reply->body.find("too many parameters"), std::string::npos);
}

TEST(RouteTableTest, TheFirstKeyThatRepeatsIsTheOneNamed) {
  // b's first occurrence comes before a's: b is reported, as the quadratic scan did.
  const auto d = route(form_post("b=1&resource=x&a=1&a=2&b=2"));
  ASSERT_TRUE(d.reply.has_value());
  EXPECT_NE(d.reply->body.find("duplicate query parameter 'b'"), std::string::npos)
      << d.reply->body;
}

TEST(RouteTableTest, TheCapIsCheckedAfterAuthentication) {
  const std::string body = distinct_form(2 * kMaxRequestParameters, 0);  // outlives the view
  RequestView r = form_post(body);
  r.metadata.reset();
  const auto d = route(r);
  ASSERT_TRUE(d.reply.has_value());
  EXPECT_EQ(d.reply->status, 400u);
  EXPECT_NE(d.reply->body.find("Required metadata header not specified"), std::string::npos);
}

// --- path patterns ------------------------------------------------------------------------------

using Params = std::vector<std::pair<std::string_view, std::string>>;

TEST(PathPatternTest, ExactPathsMatchOnlyThemselves) {
  EXPECT_TRUE(match_path_pattern("/token", "/token"));
  EXPECT_FALSE(match_path_pattern("/token", "/token/x"));
  EXPECT_FALSE(match_path_pattern("/token", "/tokens"));
  EXPECT_FALSE(match_path_pattern("/token", "/"));
  EXPECT_FALSE(match_path_pattern("/msi/token", "/msi"));
}

TEST(PathPatternTest, NameSegmentsCaptureOneSegment) {
  Params params;
  EXPECT_TRUE(match_path_pattern("/authorizationheaderunauthenticated/{name}",
                                 "/authorizationheaderunauthenticated/graph", &params));
  ASSERT_EQ(params.size(), 1u);
  EXPECT_EQ(params[0].first, "name");
  EXPECT_EQ(params[0].second, "graph");
  EXPECT_FALSE(match_path_pattern("/authorizationheaderunauthenticated/{name}",
                                  "/authorizationheaderunauthenticated/graph/x"));
  EXPECT_FALSE(match_path_pattern("/authorizationheaderunauthenticated/{name}",
                                  "/authorizationheaderunauthenticated"));
}

TEST(PathPatternTest, LeadingPlaceholderForATenant) {
  Params params;
  EXPECT_TRUE(
      match_path_pattern("/{tenant}/oauth2/v2.0/token", "/contoso.com/oauth2/v2.0/token", &params));
  ASSERT_EQ(params.size(), 1u);
  EXPECT_EQ(params[0].first, "tenant");
  EXPECT_EQ(params[0].second, "contoso.com");
  EXPECT_FALSE(match_path_pattern("/{tenant}/oauth2/v2.0/token", "/oauth2/v2.0/token"));
}

TEST(PathPatternTest, RestTailTakesEverySegmentLeft) {
  Params params;
  EXPECT_TRUE(match_path_pattern("/apis/{name}/{rest}", "/apis/graph/v1.0/me/messages", &params));
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0].second, "graph");
  EXPECT_EQ(params[1].first, "rest");
  EXPECT_EQ(params[1].second, "v1.0/me/messages");
  EXPECT_FALSE(match_path_pattern("/apis/{name}/{rest}", "/apis/graph"));
}

TEST(PathPatternTest, NoMatchLeavesTheParametersAlone) {
  Params params;
  EXPECT_FALSE(match_path_pattern("/apis/{name}/{rest}", "/other/graph/x", &params));
  EXPECT_TRUE(params.empty());
}

TEST(RouteTableTest, TheComingDoorsAreNotRoutedYet) {
  for (const char* target : {"/apis/graph/v1.0/me", "/contoso.com/oauth2/v2.0/token",
                             "/AuthorizationHeaderUnauthenticated/graph"}) {
    SCOPED_TRACE(target);
    RequestView r = form_post("");
    r.method = "GET";
    r.target = target;
    const auto d = route(r);
    ASSERT_TRUE(d.reply.has_value());
    EXPECT_EQ(d.reply->status, 404u);
    EXPECT_EQ(d.route, Route::none);
  }
}

// --- per-route vocabulary
// -------------------------------------------------------------------------

TEST(RouteTableTest, RouteNamesAreTheMetricLabels) {
  EXPECT_EQ(route_name(Route::imds_token), "imds");
  EXPECT_EQ(route_name(Route::broker_token), "token");
  EXPECT_EQ(route_name(Route::app_service_2019), "app_service");
  EXPECT_EQ(route_name(Route::app_service_2017), "app_service_2017");
  EXPECT_EQ(route_name(Route::msi_form_post), "msi_post");
  EXPECT_EQ(route_name(Route::healthz), "healthz");
  EXPECT_EQ(route_name(Route::readyz), "readyz");
  EXPECT_EQ(route_name(Route::metrics), "metrics");
  EXPECT_EQ(route_name(Route::none), "other");
}

TEST(RouteTableTest, KindsSeparateTokenRoutesFromOperations) {
  for (Route r : {Route::imds_token, Route::broker_token, Route::app_service_2019,
                  Route::app_service_2017, Route::msi_form_post}) {
    EXPECT_EQ(route_kind(r), RouteKind::token) << route_name(r);
  }
  for (Route r : {Route::healthz, Route::readyz, Route::metrics}) {
    EXPECT_EQ(route_kind(r), RouteKind::operations) << route_name(r);
  }
}

TEST(RouteTableTest, Api2017OnTheAppServicePathIsTheLegacyProtocolAlsoByPost) {
  RequestView r = form_post("resource=https%3A%2F%2Fvault.azure.net");
  r.target = "/msi/token?api-version=2017-09-01";
  r.metadata.reset();
  r.secret = "s3cret";
  RouterSettings settings;
  settings.identity_header = "s3cret";
  const auto d = route_request(r, settings);
  EXPECT_FALSE(d.reply.has_value()) << description_of(d);
  EXPECT_EQ(d.route, Route::app_service_2017);
}

}  // namespace
}  // namespace ficbroker
