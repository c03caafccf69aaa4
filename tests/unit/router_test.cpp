// Request routing without sockets: what real SDKs send (and probe with) on the IMDS, App Service
// and ficbroker's own endpoints, and how a token query is resolved to a target or a source.
#include "ficbroker/front_door/router.hpp"

#include "ficbroker/core/target_resolution.hpp"
#include "ficbroker/front_door/front_door.hpp"

#include <boost/json.hpp>

#include <gtest/gtest.h>

#include <string>

namespace ficbroker {
namespace {

namespace json = boost::json;

constexpr std::string_view kMetadataBody =
    R"({"error":"invalid_request","error_description":"Required metadata header not specified"})";
constexpr std::string_view kSecret = "0123456789abcdef-identity-header";
constexpr std::string_view kImdsToken =
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net";
constexpr std::string_view kAppServiceToken =
    "/msi/token?api-version=2019-08-01&resource=https://vault.azure.net";

RequestView get(std::string_view target) {
  RequestView r;
  r.method = "GET";
  r.target = target;
  r.host = "127.0.0.1:8181";
  r.metadata = "true";
  return r;
}

RequestView app_service(std::string_view target) {
  RequestView r = get(target);
  r.metadata.reset();
  r.identity_header = kSecret;
  return r;
}

RouterSettings settings() {
  RouterSettings s;
  s.identity_header = std::string(kSecret);
  return s;
}

RouteDecision route(const RequestView& r, const RouterSettings& s = settings()) {
  return route_request(r, s);
}

json::object body_of(const Reply& reply) {
  json::error_code ec;
  auto value = json::parse(reply.body, ec);
  EXPECT_FALSE(ec) << "not JSON: " << reply.body;
  if (ec || !value.is_object()) return {};
  return value.as_object();
}

// The decision answers with `status` (and does not route to a token).
void expect_reply(const RouteDecision& d, unsigned status) {
  ASSERT_TRUE(d.reply.has_value()) << "expected HTTP " << status << ", got a token query";
  EXPECT_EQ(d.reply->status, status) << d.reply->body;
  const auto body = body_of(*d.reply);
  EXPECT_TRUE(body.contains("error")) << d.reply->body;
  EXPECT_TRUE(body.contains("error_description")) << d.reply->body;
}

// The decision routes to `expected` with a token query (or a health endpoint).
void expect_route(const RouteDecision& d, Route expected) {
  EXPECT_FALSE(d.reply.has_value()) << "answered " << d.reply->status << " " << d.reply->body;
  EXPECT_EQ(d.route, expected);
}

// --- Metadata header and probes ----------------------------------------------------------------

TEST(RouterTest, MissingMetadataHeaderIsAnsweredWith400) {
  RequestView r = get(kImdsToken);
  r.metadata.reset();
  const auto d = route(r);
  ASSERT_TRUE(d.reply.has_value());
  EXPECT_EQ(d.reply->status, 400u);
  EXPECT_EQ(d.reply->body, kMetadataBody);
  EXPECT_EQ(d.route, Route::imds_token);
}

TEST(RouterTest, MissingMetadataHeaderOnTheBrokerEndpointIsAnsweredWith400) {
  RequestView r = get("/token?resource=https://vault.azure.net");
  r.metadata.reset();
  const auto d = route(r);
  ASSERT_TRUE(d.reply.has_value());
  EXPECT_EQ(d.reply->status, 400u);
  EXPECT_EQ(d.reply->body, kMetadataBody);
}

TEST(RouterTest, SdkProbeWithoutQueryOrMetadataGetsTheMetadata400) {
  // @azure/identity's DAC probe: no query, no Metadata header.
  RequestView r = get("/metadata/identity/oauth2/token");
  r.metadata.reset();
  const auto d = route(r);
  ASSERT_TRUE(d.reply.has_value());
  EXPECT_EQ(d.reply->status, 400u);
  EXPECT_EQ(d.reply->body, kMetadataBody);
}

TEST(RouterTest, MsalNetProbeWithApiVersionButNoMetadataGets400) {
  RequestView r = get("/metadata/identity/oauth2/token?api-version=2018-02-01&client_id=x");
  r.metadata.reset();
  const auto d = route(r);
  ASSERT_TRUE(d.reply.has_value());
  EXPECT_EQ(d.reply->status, 400u);
  EXPECT_EQ(d.reply->body, kMetadataBody);
}

TEST(RouterTest, MetadataValueOtherThanTrueIsRefused) {
  for (const char* value : {"false", "", "1", "yes", "true "}) {
    SCOPED_TRACE(value);
    RequestView r = get(kImdsToken);
    r.metadata = value;
    const auto d = route(r);
    ASSERT_TRUE(d.reply.has_value());
    EXPECT_EQ(d.reply->status, 400u);
    EXPECT_EQ(d.reply->body, kMetadataBody);
  }
}

TEST(RouterTest, MetadataValueIsCaseInsensitive) {
  for (const char* value : {"true", "True", "TRUE"}) {
    SCOPED_TRACE(value);
    RequestView r = get(kImdsToken);
    r.metadata = value;
    expect_route(route(r), Route::imds_token);
  }
}

// --- Paths -------------------------------------------------------------------------------------

TEST(RouterTest, ImdsRequestIsRoutedWithItsQuery) {
  const auto d = route(get(kImdsToken));
  expect_route(d, Route::imds_token);
  EXPECT_EQ(d.query.resource, "https://vault.azure.net");
  EXPECT_EQ(d.query.scope, "https://vault.azure.net/.default");
  EXPECT_EQ(d.query.selector, SelectorKind::none);
  EXPECT_TRUE(d.query.tenant.empty());
}

TEST(RouterTest, PathIsCaseInsensitive) {
  expect_route(route(get("/Metadata/Identity/OAuth2/Token?api-version=2018-02-01&resource=r")),
               Route::imds_token);
  expect_route(route(get("/TOKEN?resource=r")), Route::broker_token);
}

TEST(RouterTest, RepeatedSlashesAndATrailingSlashAreAccepted) {
  // msal4j <= 1.23.1 sends host//metadata/identity/oauth2/token.
  for (const char* target :
       {"//metadata/identity/oauth2/token?api-version=2018-02-01&resource=r",
        "/metadata//identity///oauth2/token?api-version=2018-02-01&resource=r",
        "/metadata/identity/oauth2/token/?api-version=2018-02-01&resource=r"}) {
    SCOPED_TRACE(target);
    expect_route(route(get(target)), Route::imds_token);
  }
}

TEST(RouterTest, NonCanonicalPathsAreRefusedWith400) {
  for (const char* target :
       {"/metadata\\identity/oauth2/token?api-version=2018-02-01&resource=r",
        "/metadata%2fidentity%2foauth2%2ftoken?api-version=2018-02-01",
        "/metadata/identity/oauth2/%74oken?api-version=2018-02-01",
        "/metadata/identity/../identity/oauth2/token?api-version=2018-02-01",
        "/metadata/./identity/oauth2/token?api-version=2018-02-01",
        "/metadata/identity/oauth2/token/..?api-version=2018-02-01",
        "/metadata/identity/oauth2/token/.", "/..", "metadata/identity/oauth2/token", "", "*",
        "http://127.0.0.1/metadata/identity/oauth2/token", "/metadata/identity/oauth2/token\t",
        "/token\x7f"}) {
    SCOPED_TRACE(target);
    expect_reply(route(get(target)), 400);
  }
}

TEST(RouterTest, DotsInsideASegmentAreNotDotSegments) {
  // "..x" is an ordinary (unknown) segment: 404, not a traversal.
  expect_reply(route(get("/metadata/..x/token")), 404);
}

TEST(RouterTest, UnknownPathIs404) {
  for (const char* target : {"/", "/metadata", "/metadata/instance?api-version=2021-02-01",
                             "/metadata/identity/oauth2/tokens", "/msi", "/favicon.ico"}) {
    SCOPED_TRACE(target);
    expect_reply(route(get(target)), 404);
  }
}

TEST(RouterTest, ImdsV2PathsAre404) {
  // MSAL.NET probes IMDSv2 first and must fall back to v1 on 404.
  for (const char* target : {"/metadata/identity/getplatformmetadata?cred-api-version=2.0",
                             "/metadata/identity/issuecredential?cred-api-version=2.0"}) {
    SCOPED_TRACE(target);
    expect_reply(route(get(target)), 404);
    RequestView no_metadata = get(target);
    no_metadata.metadata.reset();
    expect_reply(route(no_metadata), 404);
  }
}

// --- api-version --------------------------------------------------------------------------------

TEST(RouterTest, MissingApiVersionOnImdsIs400) {
  expect_reply(route(get("/metadata/identity/oauth2/token?resource=https://vault.azure.net")), 400);
}

TEST(RouterTest, ApiVersionOlderThan20180201OnImdsIs400) {
  for (const char* version : {"2017-12-01", "2018-01-31", "2017-09-01", "latest", "2018-2-1", ""}) {
    SCOPED_TRACE(version);
    const std::string target = std::string("/metadata/identity/oauth2/token?api-version=") +
                               version + "&resource=https://vault.azure.net";
    expect_reply(route(get(target)), 400);
  }
}

TEST(RouterTest, NewerApiVersionsOnImdsAreAccepted) {
  for (const char* version : {"2018-02-01", "2019-08-15", "2019-11-01", "2020-06-01", "2021-02-01",
                              "2023-07-01-preview"}) {
    SCOPED_TRACE(version);
    const std::string target = std::string("/metadata/identity/oauth2/token?api-version=") +
                               version + "&resource=https://vault.azure.net";
    expect_route(route(get(target)), Route::imds_token);
  }
}

TEST(RouterTest, BrokerEndpointNeedsNoApiVersion) {
  expect_route(route(get("/token?resource=https://vault.azure.net")), Route::broker_token);
}

// --- Query parameters ---------------------------------------------------------------------------

TEST(RouterTest, DuplicateQueryParameterIs400) {
  expect_reply(route(get("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=a"
                         "&resource=b")),
               400);
  expect_reply(route(get("/metadata/identity/oauth2/token?api-version=2018-02-01"
                         "&api-version=2018-02-01&resource=a")),
               400);
  expect_reply(route(get("/token?resource=a&tenant=x&tenant=y")), 400);
}

TEST(RouterTest, UnknownParametersAreIgnored) {
  const auto d = route(
      get("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"
          "&bypass_cache=true&authority=x&xms_cc=cp1&token_sha256_to_refresh=abc&x-client-SKU=y"));
  expect_route(d, Route::imds_token);
  EXPECT_EQ(d.query.resource, "https://vault.azure.net");
  EXPECT_EQ(d.query.selector, SelectorKind::none);
}

TEST(RouterTest, MalformedQueryIs400) {
  expect_reply(route(get("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=%zz")),
               400);
}

TEST(RouterTest, MissingOrEmptyResourceIs400) {
  expect_reply(route(get("/metadata/identity/oauth2/token?api-version=2018-02-01")), 400);
  expect_reply(route(get("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=")), 400);
  expect_reply(route(get("/token")), 400);
}

TEST(RouterTest, ResourceWithWhitespaceOrOverlongIs400) {
  expect_reply(route(get("/token?resource=https://a%20b")), 400);
  expect_reply(route(get("/token?resource=https://a%0Ab")), 400);
  const std::string longest = "/token?resource=" + std::string(1024, 'r');
  expect_route(route(get(longest)), Route::broker_token);
  const std::string too_long = "/token?resource=" + std::string(1025, 'r');
  expect_reply(route(get(too_long)), 400);
}

TEST(RouterTest, ResourceIsPercentDecodedAndKeptVerbatim) {
  const auto d =
      route(get("/metadata/identity/oauth2/"
                "token?api-version=2018-02-01&resource=https%3A%2F%2FVault.azure.net"));
  expect_route(d, Route::imds_token);
  EXPECT_EQ(d.query.resource, "https://Vault.azure.net");
}

TEST(RouterTest, TrailingSlashResourceKeepsTheSlashInTheScope) {
  const auto d =
      route(get("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://"
                "database.windows.net/"));
  expect_route(d, Route::imds_token);
  EXPECT_EQ(d.query.resource, "https://database.windows.net/");
  EXPECT_EQ(d.query.scope, "https://database.windows.net//.default");
}

TEST(RouterTest, ScopeOnTheBrokerEndpointGivesTheResource) {
  const auto d = route(get("/token?scope=https://graph.microsoft.com/.default"));
  expect_route(d, Route::broker_token);
  EXPECT_EQ(d.query.resource, "https://graph.microsoft.com");
  EXPECT_EQ(d.query.scope, "https://graph.microsoft.com/.default");
}

TEST(RouterTest, ScopeWithoutDefaultSuffixGetsOne) {
  const auto d = route(get("/token?scope=https://graph.microsoft.com"));
  expect_route(d, Route::broker_token);
  EXPECT_EQ(d.query.resource, "https://graph.microsoft.com");
  EXPECT_EQ(d.query.scope, "https://graph.microsoft.com/.default");
}

TEST(RouterTest, ResourceOnTheBrokerEndpointGivesTheScope) {
  const auto d = route(get("/token?resource=https://database.windows.net/&tenant=Contoso.COM"));
  expect_route(d, Route::broker_token);
  EXPECT_EQ(d.query.resource, "https://database.windows.net/");
  EXPECT_EQ(d.query.scope, "https://database.windows.net//.default");
  EXPECT_EQ(d.query.tenant, "contoso.com");
}

TEST(RouterTest, ResourceAndScopeTogetherAre400) {
  expect_reply(route(get("/token?resource=https://a&scope=https://a/.default")), 400);
}

TEST(RouterTest, SeveralScopesAre400) {
  expect_reply(route(get("/token?scope=https://a/.default%20https://b/.default")), 400);
  expect_reply(route(get("/token?scope=https://a/.default+https://b/.default")), 400);
  expect_reply(route(get("/token?scope=")), 400);
}

TEST(RouterTest, ScopeIsNotReadOnTheImdsPath) {
  // IMDS has no scope parameter: without resource= the request is incomplete.
  expect_reply(route(get("/metadata/identity/oauth2/token?api-version=2018-02-01"
                         "&scope=https://a/.default")),
               400);
}

// --- Identity selectors -------------------------------------------------------------------------

struct SelectorCase {
  const char* param;
  SelectorKind kind;
};

class ImdsSelectorTest : public ::testing::TestWithParam<SelectorCase> {};

TEST_P(ImdsSelectorTest, SelectorIsRecognised) {
  const auto& c = GetParam();
  const std::string target = std::string(kImdsToken) + "&" + c.param + "=Value-1";
  const auto d = route(get(target));
  expect_route(d, Route::imds_token);
  EXPECT_EQ(d.query.selector, c.kind);
  EXPECT_EQ(d.query.selector_value, "Value-1");
  EXPECT_EQ(d.query.selector_name, c.param);
}

INSTANTIATE_TEST_SUITE_P(Imds, ImdsSelectorTest,
                         ::testing::Values(SelectorCase{"client_id", SelectorKind::client_id},
                                           SelectorCase{"object_id", SelectorKind::object_id},
                                           SelectorCase{"principal_id", SelectorKind::object_id},
                                           SelectorCase{"msi_res_id", SelectorKind::resource_id},
                                           SelectorCase{"mi_res_id", SelectorKind::resource_id}));

TEST(RouterTest, SelectorsAreMutuallyExclusive) {
  for (const char* pair : {"&client_id=a&object_id=b", "&client_id=a&msi_res_id=b",
                           "&object_id=a&principal_id=b", "&msi_res_id=a&mi_res_id=b"}) {
    SCOPED_TRACE(pair);
    const auto d = route(get(std::string(kImdsToken) + pair));
    expect_reply(d, 400);
  }
}

TEST(RouterTest, EmptySelectorIs400) {
  expect_reply(route(get(std::string(kImdsToken) + "&client_id=")), 400);
}

TEST(RouterTest, SelectorsWorkOnTheBrokerEndpoint) {
  const auto d = route(get("/token?resource=r&client_id=abc"));
  expect_route(d, Route::broker_token);
  EXPECT_EQ(d.query.selector, SelectorKind::client_id);
  EXPECT_EQ(d.query.selector_value, "abc");
}

// --- Forwarding and Host ------------------------------------------------------------------------

TEST(RouterTest, XForwardedForIsRefused) {
  RequestView r = get(kImdsToken);
  r.forwarded = true;
  expect_reply(route(r), 400);
  RequestView a = app_service(kAppServiceToken);
  a.forwarded = true;
  expect_reply(route(a), 400);
}

TEST(RouterTest, LoopbackHostHeadersAreAccepted) {
  for (const char* host : {"127.0.0.1", "127.0.0.1:8181", "127.0.0.2:80", "localhost",
                           "LocalHost:8181", "[::1]", "[::1]:8181"}) {
    SCOPED_TRACE(host);
    RequestView r = get(kImdsToken);
    r.host = host;
    expect_route(route(r), Route::imds_token);
  }
}

TEST(RouterTest, ForeignHostHeaderIs403) {
  for (const char* host : {"evil.example", "evil.example:8181", "localhost.evil.example",
                           "127.0.0.1.nip.io", "10.0.0.1:8181", "[::1", "[::1]x", "", ":8181"}) {
    SCOPED_TRACE(host);
    RequestView r = get(kImdsToken);
    r.host = host;
    expect_reply(route(r), 403);
  }
}

TEST(RouterTest, MissingHostHeaderIs403) {
  RequestView r = get(kImdsToken);
  r.host.reset();
  expect_reply(route(r), 403);
}

TEST(RouterTest, ImdsAddressAsHostOnlyWhenTransparent) {
  RequestView r = get(kImdsToken);
  r.host = "169.254.169.254";
  expect_reply(route(r), 403);
  RouterSettings transparent = settings();
  transparent.transparent = true;
  expect_route(route(r, transparent), Route::imds_token);
  r.host = "169.254.169.254:80";
  expect_route(route(r, transparent), Route::imds_token);
}

TEST(RouterTest, AllowedHostsAreAccepted) {
  RouterSettings s = settings();
  s.allowed_hosts = {"broker.internal"};
  RequestView r = get(kImdsToken);
  for (const char* host : {"broker.internal", "Broker.Internal", "broker.internal:8181"}) {
    SCOPED_TRACE(host);
    r.host = host;
    expect_route(route(r, s), Route::imds_token);
  }
  r.host = "other.internal";
  expect_reply(route(r, s), 403);
}

TEST(RouterTest, AllowedHostWithPortMatchesOnlyThatPort) {
  RouterSettings s = settings();
  s.allowed_hosts = {"broker.internal:8181"};
  RequestView r = get(kImdsToken);
  r.host = "broker.internal:8181";
  expect_route(route(r, s), Route::imds_token);
  r.host = "broker.internal:9999";
  expect_reply(route(r, s), 403);
}

// --- App Service --------------------------------------------------------------------------------

TEST(RouterTest, AppServiceRequestWithTheRightHeaderIsRouted) {
  const auto d = route(app_service(kAppServiceToken));
  expect_route(d, Route::app_service_2019);
  EXPECT_EQ(d.query.resource, "https://vault.azure.net");
  EXPECT_EQ(d.query.scope, "https://vault.azure.net/.default");
}

TEST(RouterTest, AppServicePathIsCaseInsensitive) {
  // App Service documents /MSI/token.
  expect_route(route(app_service("/MSI/token?api-version=2019-08-01&resource=r")),
               Route::app_service_2019);
}

TEST(RouterTest, AppServiceAcceptsAnExtraMetadataHeader) {
  // MSAL Python also sends Metadata: true to App Service.
  RequestView r = app_service(kAppServiceToken);
  r.metadata = "true";
  expect_route(route(r), Route::app_service_2019);
}

TEST(RouterTest, WrongOrMissingIdentityHeaderIs401WithAppServiceKeys) {
  RequestView wrong = app_service(kAppServiceToken);
  wrong.identity_header = "0123456789abcdef-identity-headeR";
  RequestView missing = app_service(kAppServiceToken);
  missing.identity_header.reset();
  RequestView shorter = app_service(kAppServiceToken);
  shorter.identity_header = kSecret.substr(0, kSecret.size() - 1);
  for (const RequestView* r : {&wrong, &missing, &shorter}) {
    const auto d = route(*r);
    ASSERT_TRUE(d.reply.has_value());
    EXPECT_EQ(d.reply->status, 401u);
    const auto body = body_of(*d.reply);
    ASSERT_TRUE(body.contains("statusCode")) << d.reply->body;
    EXPECT_EQ(body.at("statusCode").to_number<int>(), 401);
    ASSERT_TRUE(body.contains("message")) << d.reply->body;
    EXPECT_TRUE(body.at("message").is_string());
    EXPECT_TRUE(body.contains("error"));
    EXPECT_TRUE(body.contains("error_description"));
  }
}

TEST(RouterTest, AppServiceEndpointIsDisabledWithoutAnIdentityHeader) {
  RouterSettings disabled;
  const auto d = route(app_service(kAppServiceToken), disabled);
  expect_reply(d, 404);
  RequestView empty = app_service(kAppServiceToken);
  empty.identity_header = "";
  SCOPED_TRACE("an empty header must not match an empty secret");
  expect_reply(route(empty, disabled), 404);
}

TEST(RouterTest, AppServiceNeedsApiVersion20190801OrLater) {
  expect_reply(route(app_service("/msi/token?resource=r")), 400);
  expect_reply(route(app_service("/msi/token?api-version=2018-02-01&resource=r")), 400);
  expect_route(route(app_service("/msi/token?api-version=2019-08-01&resource=r")),
               Route::app_service_2019);
}

TEST(RouterTest, AppServiceErrorsCarryStatusCodeAndMessage) {
  const auto d = route(app_service("/msi/token?api-version=2019-08-01"));
  ASSERT_TRUE(d.reply.has_value());
  EXPECT_EQ(d.reply->status, 400u);
  const auto body = body_of(*d.reply);
  EXPECT_TRUE(body.contains("statusCode")) << d.reply->body;
  EXPECT_TRUE(body.contains("message")) << d.reply->body;
}

TEST(RouterTest, ImdsErrorsHaveOnlyErrorAndDescription) {
  const auto d = route(get("/metadata/identity/oauth2/token?api-version=2018-02-01"));
  ASSERT_TRUE(d.reply.has_value());
  const auto body = body_of(*d.reply);
  EXPECT_EQ(body.size(), 2u) << d.reply->body;
}

TEST(RouterTest, AppServiceSelectors) {
  const struct {
    const char* param;
    SelectorKind kind;
  } cases[] = {{"client_id", SelectorKind::client_id},
               {"principal_id", SelectorKind::object_id},
               {"object_id", SelectorKind::object_id},
               {"mi_res_id", SelectorKind::resource_id}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.param);
    const auto d = route(app_service(std::string(kAppServiceToken) + "&" + c.param + "=v"));
    expect_route(d, Route::app_service_2019);
    EXPECT_EQ(d.query.selector, c.kind);
    EXPECT_EQ(d.query.selector_value, "v");
  }
  expect_reply(route(app_service(std::string(kAppServiceToken) + "&client_id=a&principal_id=b")),
               400);
}

TEST(RouterTest, LegacyAppServiceUsesTheSecretHeaderAndClientid) {
  RequestView r =
      get("/msi/token?api-version=2017-09-01&resource=https://vault.azure.net"
          "&clientid=abc");
  r.metadata.reset();
  r.secret = kSecret;
  const auto d = route(r);
  expect_route(d, Route::app_service_2017);
  EXPECT_EQ(d.query.resource, "https://vault.azure.net");
  EXPECT_EQ(d.query.selector, SelectorKind::client_id);
  EXPECT_EQ(d.query.selector_value, "abc");
  EXPECT_EQ(d.query.selector_name, "clientid");
}

TEST(RouterTest, LegacyAppServiceRefusesAWrongSecret) {
  RequestView r = get("/msi/token?api-version=2017-09-01&resource=r");
  r.metadata.reset();
  r.secret = "wrong-secret-wrong-secret-wrong!!";
  const auto d = route(r);
  ASSERT_TRUE(d.reply.has_value());
  EXPECT_EQ(d.reply->status, 401u);
  EXPECT_EQ(d.route, Route::app_service_2017);
  EXPECT_TRUE(body_of(*d.reply).contains("statusCode"));
}

TEST(RouterTest, LegacyAppServiceDoesNotAcceptTheNewHeaderInsteadOfTheSecret) {
  RequestView r = app_service("/msi/token?api-version=2017-09-01&resource=r");
  expect_reply(route(r), 401);
}

// --- POST form (MSI_ENDPOINT / Cloud Shell style) -----------------------------------------------

RequestView form_post(std::string_view target, std::string_view body) {
  RequestView r = get(target);
  r.method = "POST";
  r.content_type = "application/x-www-form-urlencoded";
  r.body = body;
  return r;
}

TEST(RouterTest, FormPostWithMetadataIsRouted) {
  const auto d = form_post("/metadata/identity/oauth2/token",
                           "resource=https%3A%2F%2Fvault.azure.net&client_id=abc");
  const auto decision = route(d);
  expect_route(decision, Route::msi_form_post);
  EXPECT_EQ(decision.query.resource, "https://vault.azure.net");
  EXPECT_EQ(decision.query.selector, SelectorKind::client_id);
}

TEST(RouterTest, FormPostToOauth2TokenIsRouted) {
  RequestView r = form_post("/oauth2/token", "resource=https://vault.azure.net");
  r.content_type = "application/x-www-form-urlencoded; charset=utf-8";
  expect_route(route(r), Route::msi_form_post);
}

TEST(RouterTest, FormPostWithoutMetadataIs400) {
  RequestView r = form_post("/metadata/identity/oauth2/token", "resource=r");
  r.metadata.reset();
  const auto d = route(r);
  ASSERT_TRUE(d.reply.has_value());
  EXPECT_EQ(d.reply->status, 400u);
  EXPECT_EQ(d.reply->body, kMetadataBody);
}

TEST(RouterTest, FormPostWithWrongContentTypeIs415) {
  RequestView r = form_post("/metadata/identity/oauth2/token", R"({"resource":"r"})");
  r.content_type = "application/json";
  expect_reply(route(r), 415);
}

TEST(RouterTest, FormPostWithMalformedBodyIs400) {
  expect_reply(route(form_post("/metadata/identity/oauth2/token", "resource=%G0")), 400);
}

TEST(RouterTest, FormFieldRepeatingAQueryParameterIs400) {
  expect_reply(route(form_post("/metadata/identity/oauth2/token?resource=a", "resource=b")), 400);
}

TEST(RouterTest, OtherMethodsAre405) {
  RequestView post_token = form_post("/token", "resource=r");
  expect_reply(route(post_token), 405);
  RequestView put = get(kImdsToken);
  put.method = "PUT";
  expect_reply(route(put), 405);
  RequestView del = get("/healthz");
  del.method = "DELETE";
  expect_reply(route(del), 405);
}

// --- Health and metrics -------------------------------------------------------------------------

TEST(RouterTest, HealthReadinessAndMetricsNeedNoMetadata) {
  for (const auto& [target, expected] :
       {std::pair{"/healthz", Route::healthz}, std::pair{"/readyz", Route::readyz},
        std::pair{"/metrics", Route::metrics}}) {
    SCOPED_TRACE(target);
    RequestView r = get(target);
    r.metadata.reset();
    expect_route(route(r), expected);
    r.method = "HEAD";
    expect_route(route(r), expected);
  }
}

TEST(RouterTest, HealthEndpointsCheckTheHost) {
  RequestView r = get("/healthz");
  r.host = "evil.example";
  expect_reply(route(r), 403);
}

// --- error_reply and secret_equals ---------------------------------------------------------------

TEST(ErrorReplyTest, ImdsShapeHasErrorAndDescriptionOnly) {
  const Reply r =
      error_reply(503, "temporarily_unavailable", "Entra said \"no\"", Route::imds_token, 7);
  EXPECT_EQ(r.status, 503u);
  EXPECT_EQ(r.retry_after_seconds, 7);
  EXPECT_STREQ(r.content_type, "application/json; charset=utf-8");
  const auto body = body_of(r);
  EXPECT_EQ(body.size(), 2u);
  EXPECT_EQ(body.at("error").as_string(), "temporarily_unavailable");
  EXPECT_EQ(body.at("error_description").as_string(), "Entra said \"no\"");
}

TEST(ErrorReplyTest, AppServiceShapeAddsStatusCodeAndMessage) {
  for (Route route : {Route::app_service_2019, Route::app_service_2017}) {
    const Reply r = error_reply(429, "too_many_requests", "slow down", route);
    EXPECT_EQ(r.retry_after_seconds, 0);
    const auto body = body_of(r);
    EXPECT_EQ(body.size(), 4u);
    EXPECT_EQ(body.at("statusCode").to_number<int>(), 429);
    EXPECT_EQ(body.at("message").as_string(), "slow down");
    EXPECT_EQ(body.at("error").as_string(), "too_many_requests");
  }
}

TEST(ErrorReplyTest, IsAppServiceRouteOnlyForAppServiceRoutes) {
  EXPECT_TRUE(is_app_service_route(Route::app_service_2019));
  EXPECT_TRUE(is_app_service_route(Route::app_service_2017));
  for (Route r : {Route::none, Route::imds_token, Route::broker_token, Route::msi_form_post,
                  Route::healthz, Route::readyz, Route::metrics}) {
    EXPECT_FALSE(is_app_service_route(r));
  }
}

TEST(SecretEqualsTest, ComparesWholeSecrets) {
  EXPECT_TRUE(secret_equals("0123456789abcdef", "0123456789abcdef"));
  EXPECT_TRUE(secret_equals("", ""));
  EXPECT_FALSE(secret_equals("0123456789abcdef", "0123456789abcdeF"));
  EXPECT_FALSE(secret_equals("0123456789abcdef", "1123456789abcdef"));
  EXPECT_FALSE(secret_equals("0123456789abcdef", "0123456789abcde"));
  EXPECT_FALSE(secret_equals("0123456789abcde", "0123456789abcdef"));
  EXPECT_FALSE(secret_equals("", "x"));
  EXPECT_FALSE(secret_equals(std::string_view("a\0b", 3), std::string_view("a\0c", 3)));
}

// --- resolve_target -----------------------------------------------------------------------------

constexpr const char* kAppA = "aaaaaaaa-0000-0000-0000-000000000001";
constexpr const char* kAppB = "bbbbbbbb-0000-0000-0000-000000000002";
constexpr const char* kAppC = "cccccccc-0000-0000-0000-000000000003";
constexpr const char* kUamiClient = "dddddddd-0000-0000-0000-000000000004";
constexpr const char* kUamiObject = "eeeeeeee-0000-0000-0000-000000000005";
constexpr const char* kUamiResource =
    "/subscriptions/s/resourcegroups/rg/providers/microsoft.managedidentity/"
    "userassignedidentities/id1";

class ResolveTargetTest : public ::testing::Test {
 protected:
  ResolveTargetTest() {
    SourceConfig mi;
    mi.name = "mi";
    mi.type = SourceType::imds;
    mi.client_id = kUamiClient;
    config_.sources.emplace("mi", mi);
    SourceConfig as;
    as.name = "as";
    as.type = SourceType::app_service;
    as.object_id = kUamiObject;
    config_.sources.emplace("as", as);
    SourceConfig res;
    res.name = "res";
    res.type = SourceType::imds;
    res.resource_id = kUamiResource;
    config_.sources.emplace("res", res);
    SourceConfig wi;
    wi.name = "wi";
    wi.type = SourceType::workload_identity;
    wi.path = "/tok";
    config_.sources.emplace("wi", wi);

    config_.targets.push_back(target("contoso.com", kAppA, true));
    config_.targets.push_back(target("fabrikam.com", kAppB, false));
    config_.targets.back().allowed_resources = {"https://vault.azure.net"};
    config_.targets.push_back(target("contoso.com", kAppC, false));
  }

  static TargetConfig target(const char* tenant, const char* app, bool is_default) {
    TargetConfig t;
    t.tenant_id = tenant;
    t.client_id = app;
    t.source = "mi";
    t.is_default = is_default;
    return t;
  }

  static TokenQuery query(std::string tenant = "", SelectorKind kind = SelectorKind::none,
                          std::string value = "", std::string name = "") {
    TokenQuery q;
    q.resource = "https://vault.azure.net";
    q.scope = "https://vault.azure.net/.default";
    q.tenant = std::move(tenant);
    q.selector = kind;
    q.selector_value = std::move(value);
    q.selector_name = std::move(name);
    return q;
  }

  Resolution resolve(const TokenQuery& q, Route route = Route::imds_token) {
    return resolve_target(q, route, config_, configured_identities());
  }

  // The lookup as the Broker starts it: the configured ids of the sources that mint plain tokens.
  SourceIdentities configured_identities() const {
    SourceIdentities ids;
    for (const auto& [name, s] : config_.sources) {
      if (s.type == SourceType::imds || s.type == SourceType::app_service) {
        ids.emplace(name, IdentityIds{s.client_id, s.object_id, s.resource_id});
      }
    }
    return ids;
  }

  std::string error_description(const Resolution& r) {
    if (!r.error) return {};
    json::error_code ec;
    auto v = json::parse(r.error->body, ec);
    if (ec || !v.is_object() || !v.as_object().contains("error_description")) return r.error->body;
    return std::string(v.as_object().at("error_description").as_string());
  }

  Config config_;
};

TEST_F(ResolveTargetTest, NoTenantAndNoSelectorUsesTheDefaultTarget) {
  const auto r = resolve(query());
  ASSERT_FALSE(r.error.has_value()) << r.error->body;
  EXPECT_EQ(r.target, &config_.targets[0]);
  EXPECT_EQ(r.source, nullptr);
}

TEST_F(ResolveTargetTest, WithoutADefaultTargetTheCallerMustChoose) {
  config_.targets[0].is_default = false;
  const auto r = resolve(query());
  ASSERT_TRUE(r.error.has_value());
  EXPECT_EQ(r.error->status, 400u);
  EXPECT_EQ(r.target, nullptr);
  EXPECT_EQ(r.source, nullptr);
}

TEST_F(ResolveTargetTest, TenantSelectsItsTarget) {
  const auto r = resolve(query("fabrikam.com"));
  ASSERT_FALSE(r.error.has_value()) << r.error->body;
  EXPECT_EQ(r.target, &config_.targets[1]);
}

TEST_F(ResolveTargetTest, TenantWithSeveralAppsPrefersTheDefault) {
  const auto r = resolve(query("contoso.com"));
  ASSERT_FALSE(r.error.has_value()) << r.error->body;
  EXPECT_EQ(r.target, &config_.targets[0]);
}

TEST_F(ResolveTargetTest, TenantAndClientIdSelectOneApp) {
  const auto r = resolve(query("contoso.com", SelectorKind::client_id, kAppC, "client_id"));
  ASSERT_FALSE(r.error.has_value()) << r.error->body;
  EXPECT_EQ(r.target, &config_.targets[2]);
}

TEST_F(ResolveTargetTest, ClientIdOfATargetSelectsIt) {
  const auto r = resolve(query("", SelectorKind::client_id, kAppB, "client_id"));
  ASSERT_FALSE(r.error.has_value()) << r.error->body;
  EXPECT_EQ(r.target, &config_.targets[1]);
  EXPECT_EQ(r.source, nullptr);
}

TEST_F(ResolveTargetTest, ClientIdIsCaseInsensitive) {
  const auto r = resolve(
      query("", SelectorKind::client_id, "BBBBBBBB-0000-0000-0000-000000000002", "client_id"));
  ASSERT_FALSE(r.error.has_value()) << r.error->body;
  EXPECT_EQ(r.target, &config_.targets[1]);
}

TEST_F(ResolveTargetTest, UnknownTenantIs400NamingTheTenant) {
  const auto r = resolve(query("nosuchtenant.com"));
  ASSERT_TRUE(r.error.has_value());
  EXPECT_EQ(r.error->status, 400u);
  EXPECT_NE(error_description(r).find("nosuchtenant.com"), std::string::npos)
      << error_description(r);
  EXPECT_EQ(r.target, nullptr);
}

TEST_F(ResolveTargetTest, UnknownClientIdIs400NamingIt) {
  const auto r = resolve(
      query("", SelectorKind::client_id, "99999999-0000-0000-0000-000000000009", "client_id"));
  ASSERT_TRUE(r.error.has_value());
  EXPECT_EQ(r.error->status, 400u);
  EXPECT_NE(error_description(r).find("99999999-0000-0000-0000-000000000009"), std::string::npos)
      << error_description(r);
  EXPECT_EQ(r.target, nullptr);
  EXPECT_EQ(r.source, nullptr);
}

TEST_F(ResolveTargetTest, TenantWithAClientIdOfAnotherTenantIs400NamingBoth) {
  const auto r = resolve(query("fabrikam.com", SelectorKind::client_id, kAppA, "client_id"));
  ASSERT_TRUE(r.error.has_value());
  EXPECT_EQ(r.error->status, 400u);
  EXPECT_NE(error_description(r).find("fabrikam.com"), std::string::npos);
  EXPECT_NE(error_description(r).find(kAppA), std::string::npos);
}

TEST_F(ResolveTargetTest, ClientIdOfASourceIdentityAsksForAPlainManagedIdentityToken) {
  const auto r = resolve(query("", SelectorKind::client_id, kUamiClient, "client_id"));
  ASSERT_FALSE(r.error.has_value()) << r.error->body;
  EXPECT_EQ(r.target, nullptr);
  EXPECT_EQ(r.source, config_.source("mi"));
}

TEST_F(ResolveTargetTest, ObjectIdOfASourceIdentityAsksForAPlainManagedIdentityToken) {
  const auto r = resolve(
      query("", SelectorKind::object_id, "EEEEEEEE-0000-0000-0000-000000000005", "principal_id"));
  ASSERT_FALSE(r.error.has_value()) << r.error->body;
  EXPECT_EQ(r.target, nullptr);
  EXPECT_EQ(r.source, config_.source("as"));
}

TEST_F(ResolveTargetTest, ResourceIdOfASourceIdentityAsksForAPlainManagedIdentityToken) {
  const auto r = resolve(query("", SelectorKind::resource_id, kUamiResource, "msi_res_id"));
  ASSERT_FALSE(r.error.has_value()) << r.error->body;
  EXPECT_EQ(r.target, nullptr);
  EXPECT_EQ(r.source, config_.source("res"));
}

TEST_F(ResolveTargetTest, AnyOfASourcesIdentifiersSelectsIt) {
  SourceConfig& mi = config_.sources.at("mi");
  mi.object_id = "0b1ec7-1d";
  mi.resource_id = "/subscriptions/s/providers/x/mi";
  const auto by_client = resolve(query("", SelectorKind::client_id, kUamiClient, "client_id"));
  const auto by_object = resolve(query("", SelectorKind::object_id, "0B1EC7-1D", "object_id"));
  const auto by_resource =
      resolve(query("", SelectorKind::resource_id, "/subscriptions/s/providers/x/mi", "mi_res_id"));
  for (const auto* r : {&by_client, &by_object, &by_resource}) {
    ASSERT_FALSE(r->error.has_value()) << r->error->body;
    EXPECT_EQ(r->source, &mi);
  }
}

TEST_F(ResolveTargetTest, UnknownObjectIdIs400NamingTheParameter) {
  const auto r = resolve(
      query("", SelectorKind::object_id, "ffffffff-0000-0000-0000-00000000000f", "object_id"));
  ASSERT_TRUE(r.error.has_value());
  EXPECT_EQ(r.error->status, 400u);
  EXPECT_NE(error_description(r).find("object_id"), std::string::npos);
  EXPECT_NE(error_description(r).find("ffffffff-0000-0000-0000-00000000000f"), std::string::npos);
}

TEST_F(ResolveTargetTest, AnIdLearnedFromTheSourcesTokensSelectsIt) {
  constexpr const char* kLearnedObject = "0b1ec7ed-0000-0000-0000-00000000000a";
  auto identities = configured_identities();
  const auto q = query("", SelectorKind::object_id, kLearnedObject, "object_id");
  EXPECT_TRUE(resolve_target(q, Route::imds_token, config_, identities).error.has_value())
      << "nothing knows this object id yet";
  identities.at("mi").object_id = kLearnedObject;
  const auto r = resolve_target(q, Route::imds_token, config_, identities);
  ASSERT_FALSE(r.error.has_value()) << r.error->body;
  EXPECT_EQ(r.source, config_.source("mi"));
}

TEST_F(ResolveTargetTest, OnlySourcesInTheIdentityLookupAreMatched) {
  // A source the lookup leaves out (one that does not mint plain tokens) is never chosen, even
  // when its configuration carries the id.
  config_.sources.at("wi").client_id = "f11e0000-0000-0000-0000-000000000001";
  const auto r = resolve(
      query("", SelectorKind::client_id, "f11e0000-0000-0000-0000-000000000001", "client_id"));
  ASSERT_TRUE(r.error.has_value());
  EXPECT_EQ(r.source, nullptr);
}

TEST(SourceForSelectorTest, SkipsANameTheConfigNoLongerHas) {
  Config config;
  SourceConfig kept;
  kept.name = "kept";
  config.sources.emplace("kept", kept);
  const SourceIdentities identities{{"gone", IdentityIds{"c1", "", ""}},
                                    {"kept", IdentityIds{"C1", "", ""}}};
  EXPECT_EQ(source_for_selector(SelectorKind::client_id, "c1", config, identities),
            config.source("kept"));
  EXPECT_EQ(source_for_selector(SelectorKind::object_id, "c1", config, identities), nullptr);
  EXPECT_EQ(source_for_selector(SelectorKind::client_id, "", config, identities), nullptr);
}

TEST_F(ResolveTargetTest, AllowedResourcesAreEnforced) {
  const auto ok = resolve(query("fabrikam.com"));
  ASSERT_FALSE(ok.error.has_value()) << ok.error->body;
  EXPECT_EQ(ok.target, &config_.targets[1]);

  TokenQuery graph = query("fabrikam.com");
  graph.resource = "https://graph.microsoft.com";
  graph.scope = "https://graph.microsoft.com/.default";
  const auto refused = resolve(graph);
  ASSERT_TRUE(refused.error.has_value());
  EXPECT_EQ(refused.error->status, 400u);
  EXPECT_EQ(refused.target, nullptr);
  EXPECT_NE(error_description(refused).find("https://graph.microsoft.com"), std::string::npos);
}

TEST_F(ResolveTargetTest, ResolutionErrorsOnAppServiceRoutesUseTheAppServiceShape) {
  const auto r = resolve(query("nosuchtenant.com"), Route::app_service_2019);
  ASSERT_TRUE(r.error.has_value());
  const auto body = body_of(*r.error);
  EXPECT_TRUE(body.contains("statusCode"));
  EXPECT_TRUE(body.contains("message"));
}

}  // namespace
}  // namespace ficbroker
