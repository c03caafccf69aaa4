// Pure FIC / policy logic of the emulator: no sockets, no keys, injected time.
#include "world.hpp"

#include "ficbroker/util/encoding.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <gtest/gtest.h>

#include <string>

namespace ficbroker::emulator {
namespace {

namespace json = boost::json;

constexpr std::int64_t kNow = 1'700'000'000;
constexpr std::string_view kTenant = "22222222-2222-2222-2222-222222222222";
constexpr std::string_view kApp = "cccccccc-0000-0000-0000-000000000001";
constexpr std::string_view kHomeIssuer =
    "https://login.microsoftonline.com/11111111-1111-1111-1111-111111111111/v2.0";
constexpr std::string_view kDemoMi = "bbbbbbbb-0000-0000-0000-000000000001";

World default_world() {
  std::string error;
  std::optional<World> w = parse_world(default_world_json(), error);
  EXPECT_TRUE(w.has_value()) << error;
  return w.value_or(World{});
}

// A JWT whose signature segment is the literal bytes "good" or "bad"; the injected signature
// check accepts "good".
std::string make_jwt(const json::object& payload, std::string_view signature = "good",
                     std::string_view alg = "RS256") {
  json::object header{{"alg", alg}, {"typ", "JWT"}, {"kid", "emu-entra-1"}};
  return base64url_encode(json::serialize(header)) + "." +
         base64url_encode(json::serialize(payload)) + "." + base64url_encode(signature);
}

json::object mi_claims() {
  return json::object{
      {"iss", kHomeIssuer}, {"sub", kDemoMi},   {"aud", "api://AzureADTokenExchange"},
      {"iat", kNow - 10},   {"nbf", kNow - 10}, {"exp", kNow + 3600}};
}

QueryParams form(const std::string& assertion,
                 std::string scope = "https://graph.microsoft.com/.default",
                 std::string client_id = std::string(kApp)) {
  return QueryParams{{"grant_type", "client_credentials"},
                     {"client_id", std::move(client_id)},
                     {"scope", std::move(scope)},
                     {"client_assertion_type", std::string(kJwtBearerAssertionType)},
                     {"client_assertion", assertion}};
}

class ExchangeTest : public ::testing::Test {
 protected:
  ExchangeOutcome exchange(const QueryParams& f, std::string_view tenant = kTenant,
                           std::int64_t now = kNow, std::int64_t fic_epoch = kNow - 1000) {
    last_key.reset();
    const SignatureCheck check = [this](IssuerKey key, const ParsedJwt& jwt) {
      last_key = key;
      return jwt.signature == "good";
    };
    return evaluate_exchange(world, tenant, f, check, now, fic_epoch);
  }
  std::uint32_t code(const ExchangeOutcome& o) { return o.error ? o.error->code : 0; }

  World world = default_world();
  std::optional<IssuerKey> last_key;
};

TEST(WorldTest, DefaultWorldHasTheDemoIds) {
  const World w = default_world();
  EXPECT_EQ(w.home_tenant, "11111111-1111-1111-1111-111111111111");
  ASSERT_EQ(w.identities.size(), 2u);
  EXPECT_EQ(w.identities[0].object_id, kDemoMi);
  ASSERT_NE(w.find_app("CCCCCCCC-0000-0000-0000-000000000001"), nullptr);
  EXPECT_EQ(w.apps[0].fics.size(), 2u);
  EXPECT_EQ(w.tenants.size(), 3u);
  EXPECT_TRUE(w.is_external_issuer("https://oidc.emulator.test/cluster"));
  EXPECT_EQ(w.home_issuer_v2(), kHomeIssuer);
}

TEST(WorldTest, ParseErrorsNameTheJsonPath) {
  std::string error;
  EXPECT_FALSE(parse_world("{", error));
  EXPECT_NE(error.find("invalid JSON"), std::string::npos);

  std::string text(default_world_json());
  text.replace(text.find("\"audiences\""), 11, "\"audience\"");
  EXPECT_FALSE(parse_world(text, error));
  EXPECT_EQ(error, "$.apps[0].fics[0].audience: unknown key");

  EXPECT_FALSE(parse_world(R"({"home_tenant":"t","identity_header":"h","identities":[],
                               "apps":[],"tenants":[]})",
                           error));
  EXPECT_EQ(error, "$.identities: must not be empty");
}

TEST(WorldTest, PropagationDelayIsParsed) {
  std::string text(default_world_json());
  text.replace(text.find("\"name\": \"aks-sa\","), 17,
               "\"name\": \"aks-sa\", \"propagation_delay_s\": 42,");
  std::string error;
  const auto w = parse_world(text, error);
  ASSERT_TRUE(w) << error;
  EXPECT_EQ(w->apps[0].fics[1].propagation_delay_s, 42);
}

TEST(WorldTest, SelectIdentityByEachSelector) {
  const World w = default_world();
  auto pick = [&](QueryParams q, MiEndpoint ep) {
    const IdentitySelection s = select_identity(w, q, ep);
    return s.identity != nullptr ? s.identity->name : "error: " + s.error;
  };
  EXPECT_EQ(pick({}, MiEndpoint::imds), "uami-demo");
  EXPECT_EQ(pick({{"client_id", "AAAAAAAA-0000-0000-0000-000000000002"}}, MiEndpoint::imds),
            "uami-other");
  EXPECT_EQ(pick({{"object_id", "bbbbbbbb-0000-0000-0000-000000000002"}}, MiEndpoint::imds),
            "uami-other");
  EXPECT_EQ(pick({{"msi_res_id", w.identities[1].resource_id}}, MiEndpoint::imds), "uami-other");
  EXPECT_EQ(pick({{"mi_res_id", w.identities[1].resource_id}}, MiEndpoint::app_service),
            "uami-other");
  EXPECT_EQ(
      pick({{"principal_id", "bbbbbbbb-0000-0000-0000-000000000002"}}, MiEndpoint::app_service),
      "uami-other");
  // principal_id is not an IMDS selector: ignored like any unknown parameter.
  EXPECT_EQ(pick({{"principal_id", "bbbbbbbb-0000-0000-0000-000000000002"}}, MiEndpoint::imds),
            "uami-demo");
  EXPECT_EQ(pick({{"client_id", "nope"}}, MiEndpoint::imds), "error: Identity not found");
  EXPECT_NE(pick({{"client_id", w.identities[0].client_id}, {"object_id", "x"}}, MiEndpoint::imds)
                .find("Only one"),
            std::string::npos);
}

TEST(ScopeTest, ResourceIsEverythingBeforeTheLastSlash) {
  EXPECT_EQ(resource_from_scope("https://graph.microsoft.com/.default"),
            "https://graph.microsoft.com");
  EXPECT_EQ(resource_from_scope("https://database.windows.net//.default"),
            "https://database.windows.net/");
  EXPECT_EQ(resource_from_scope("api://AzureADTokenExchange/.default"),
            "api://AzureADTokenExchange");
  EXPECT_FALSE(resource_from_scope("https://graph.microsoft.com/User.Read"));
  EXPECT_FALSE(resource_from_scope("https://graph.microsoft.com/.default openid"));
  EXPECT_FALSE(resource_from_scope("/.default"));
  EXPECT_FALSE(resource_from_scope(""));
}

TEST(ScopeTest, TenantResourcesMatchWithOrWithoutOneTrailingSlash) {
  const Tenant t{"t", {}, {"https://graph.microsoft.com", "https://database.windows.net/"}};
  EXPECT_TRUE(tenant_has_resource(t, "https://graph.microsoft.com"));
  EXPECT_TRUE(tenant_has_resource(t, "https://graph.microsoft.com/"));
  EXPECT_FALSE(tenant_has_resource(t, "https://graph.microsoft.com//"));
  EXPECT_TRUE(tenant_has_resource(t, "https://database.windows.net/"));
  EXPECT_TRUE(tenant_has_resource(t, "https://database.windows.net"));
  EXPECT_FALSE(tenant_has_resource(t, "https://GRAPH.microsoft.com"));
  EXPECT_FALSE(tenant_has_resource(t, "https://vault.azure.net"));
}

TEST_F(ExchangeTest, ImdsTokenForTheDemoMiSucceeds) {
  const ExchangeOutcome o = exchange(form(make_jwt(mi_claims())));
  ASSERT_FALSE(o.error) << o.error->text;
  EXPECT_EQ(o.resource, "https://graph.microsoft.com");
  EXPECT_EQ(o.tenant->id, kTenant);
  EXPECT_EQ(o.app->name, "ficbroker-demo-app");
  EXPECT_EQ(last_key, IssuerKey::entra);
}

TEST_F(ExchangeTest, ExternalOidcTokenIsCheckedWithTheOidcKey) {
  json::object c = mi_claims();
  c["iss"] = "https://oidc.emulator.test/cluster";
  c["sub"] = "system:serviceaccount:default:workload";
  c["aud"] = json::array{"other", "api://AzureADTokenExchange"};
  const ExchangeOutcome o = exchange(form(make_jwt(c)));
  EXPECT_FALSE(o.error);
  EXPECT_EQ(last_key, IssuerKey::oidc);
}

TEST_F(ExchangeTest, IssuerSubjectAndAudienceAreCaseSensitive) {
  json::object c = mi_claims();
  c["iss"] = "https://oidc.emulator.test/Cluster";  // unknown issuer altogether
  EXPECT_EQ(code(exchange(form(make_jwt(c)))), 700211u);

  c = mi_claims();
  c["sub"] = "BBBBBBBB-0000-0000-0000-000000000001";
  const ExchangeOutcome sub = exchange(form(make_jwt(c)));
  EXPECT_EQ(code(sub), 700213u);
  EXPECT_EQ(sub.error->http_status, 401u);
  EXPECT_EQ(sub.error->error, "invalid_client");
  EXPECT_NE(sub.error->text.find("case-sensitive"), std::string::npos);
  EXPECT_NE(sub.error->text.find("BBBBBBBB-0000"), std::string::npos);

  c = mi_claims();
  c["aud"] = "api://azureadtokenexchange";
  EXPECT_EQ(code(exchange(form(make_jwt(c)))), 700212u);
}

TEST_F(ExchangeTest, KnownIssuerWithoutAFicOnTheAppIs700211) {
  // The sts.windows.net issuer of ordinary IMDS tokens is known and signed by the Entra key,
  // but no FIC names it.
  json::object c = mi_claims();
  c["iss"] = "https://sts.windows.net/11111111-1111-1111-1111-111111111111/";
  const ExchangeOutcome o = exchange(form(make_jwt(c)));
  EXPECT_EQ(code(o), 700211u);
  EXPECT_EQ(last_key, IssuerKey::entra);  // got past the signature check
}

TEST_F(ExchangeTest, OtherMiOrOtherAppIs700213) {
  json::object c = mi_claims();
  c["sub"] = "bbbbbbbb-0000-0000-0000-000000000002";
  EXPECT_EQ(code(exchange(form(make_jwt(c)))), 700213u);
  EXPECT_EQ(code(exchange(form(make_jwt(mi_claims()), "https://graph.microsoft.com/.default",
                               "cccccccc-0000-0000-0000-000000000002"))),
            700213u);
}

TEST_F(ExchangeTest, FicWithinPropagationDelayIs70021ThenSucceeds) {
  world.apps[0].fics[0].propagation_delay_s = 60;
  const std::int64_t epoch = kNow;
  const ExchangeOutcome early = exchange(form(make_jwt(mi_claims())), kTenant, kNow + 59, epoch);
  ASSERT_EQ(code(early), 70021u);
  EXPECT_EQ(early.error->error, "invalid_request");
  EXPECT_EQ(early.error->http_status, 400u);
  EXPECT_NE(early.error->text.find("Assertion Subject: '" + std::string(kDemoMi) + "'"),
            std::string::npos);
  EXPECT_FALSE(exchange(form(make_jwt(mi_claims())), kTenant, kNow + 60, epoch).error);
}

TEST_F(ExchangeTest, AssertionTimeRange700024) {
  json::object c = mi_claims();
  c["exp"] = kNow;  // still valid at exactly exp
  EXPECT_FALSE(exchange(form(make_jwt(c))).error);
  c["exp"] = kNow - 1;
  const ExchangeOutcome expired = exchange(form(make_jwt(c)));
  ASSERT_EQ(code(expired), 700024u);
  EXPECT_NE(expired.error->text.find("Current time: 2023-11-14T22:13:20.0000000Z"),
            std::string::npos);

  c = mi_claims();
  c["nbf"] = kNow + 300;  // five minutes of skew allowed
  EXPECT_FALSE(exchange(form(make_jwt(c))).error);
  c["nbf"] = kNow + 301;
  EXPECT_EQ(code(exchange(form(make_jwt(c)))), 700024u);
}

TEST_F(ExchangeTest, MalformedSignatureAndFicDerivedAssertions) {
  EXPECT_EQ(code(exchange(form("not-a-jwt"))), 50027u);
  EXPECT_EQ(code(exchange(form("a.b.c"))), 50027u);
  json::object c = mi_claims();
  c.erase("exp");
  EXPECT_EQ(code(exchange(form(make_jwt(c)))), 50027u);

  EXPECT_EQ(code(exchange(form(make_jwt(mi_claims(), "bad")))), 7000274u);
  EXPECT_EQ(code(exchange(form(make_jwt(mi_claims(), "good", "none")))), 7000274u);

  c = mi_claims();
  c["iss"] = "https://sts.windows.net/11111111-1111-1111-1111-111111111111/";
  c[kFicDerivedClaim] = true;
  const ExchangeOutcome chained = exchange(form(make_jwt(c)));
  EXPECT_EQ(code(chained), 700231u);
  EXPECT_EQ(chained.error->http_status, 400u);
}

TEST_F(ExchangeTest, TenantAndAppChecksComeFirst) {
  const std::string good = make_jwt(mi_claims());
  EXPECT_EQ(code(exchange(form(good), "55555555-5555-5555-5555-555555555555")), 90002u);
  EXPECT_EQ(code(exchange(form("garbage"), "55555555-5555-5555-5555-555555555555")), 90002u);
  EXPECT_FALSE(exchange(form(good), "22222222-2222-2222-2222-222222222222").error);

  const ExchangeOutcome no_sp = exchange(form(good), "44444444-4444-4444-4444-444444444444");
  ASSERT_EQ(code(no_sp), 700016u);
  EXPECT_EQ(no_sp.error->error, "unauthorized_client");
  EXPECT_NE(no_sp.error->text.find("'44444444-4444-4444-4444-444444444444'"), std::string::npos);
  EXPECT_EQ(code(exchange(form(good, "https://graph.microsoft.com/.default", "unknown-app"))),
            700016u);
  // App 2 has no service principal in tenant 333.
  EXPECT_EQ(code(exchange(form(good, "https://graph.microsoft.com/.default",
                               "cccccccc-0000-0000-0000-000000000002"),
                          "33333333-3333-3333-3333-333333333333")),
            700016u);
}

TEST_F(ExchangeTest, RequestParameterChecks) {
  const std::string good = make_jwt(mi_claims());
  QueryParams f = form(good);
  f[0].second = "authorization_code";
  EXPECT_EQ(code(exchange(f)), 70003u);

  f = form(good);
  f.erase(f.begin() + 4);  // client_assertion
  const ExchangeOutcome missing = exchange(f);
  ASSERT_EQ(code(missing), 900144u);
  EXPECT_NE(missing.error->text.find("'client_assertion'"), std::string::npos);

  f = form(good);
  f[3].second = "urn:ietf:params:oauth:client-assertion-type:saml2-bearer";
  EXPECT_EQ(code(exchange(f)), 900144u);

  f = form(good);
  f.emplace_back("scope", "https://vault.azure.net/.default");
  EXPECT_EQ(code(exchange(f)), 9000411u);

  EXPECT_EQ(
      code(evaluate_exchange(
          world, kTenant, std::nullopt, [](IssuerKey, const ParsedJwt&) { return true; }, kNow, 0)),
      90100u);
}

TEST_F(ExchangeTest, ScopeAndResourceChecks) {
  const std::string good = make_jwt(mi_claims());
  EXPECT_EQ(code(exchange(form(good, "https://graph.microsoft.com/User.Read"))), 70011u);
  EXPECT_EQ(code(exchange(form(
                good, "https://graph.microsoft.com/.default https://vault.azure.net/.default"))),
            70011u);

  const ExchangeOutcome db = exchange(form(good, "https://database.windows.net//.default"));
  ASSERT_FALSE(db.error);
  EXPECT_EQ(db.resource, "https://database.windows.net/");
  const ExchangeOutcome db2 = exchange(form(good, "https://database.windows.net/.default"));
  ASSERT_FALSE(db2.error);
  EXPECT_EQ(db2.resource, "https://database.windows.net");
  EXPECT_FALSE(exchange(form(good, "https://graph.microsoft.com//.default")).error);

  const ExchangeOutcome missing = exchange(form(good, "https://storage.azure.com/.default"),
                                           "33333333-3333-3333-3333-333333333333");
  ASSERT_EQ(code(missing), 500011u);
  EXPECT_EQ(missing.error->error, "invalid_resource");
  EXPECT_NE(missing.error->text.find("The resource principal named https://storage.azure.com was "
                                     "not found in the tenant named 33333333"),
            std::string::npos);
}

TEST(EntraErrorTest, JsonHasEntraShape) {
  ErrorContext ctx;
  ctx.tenant = "t-1";
  const std::string text = entra_error_json(entra_error(90002, ctx), "trace-1", "corr-1", kNow);
  const json::value v = json::parse(text);
  const json::object& o = v.as_object();
  EXPECT_EQ(o.at("error"), "invalid_request");
  EXPECT_EQ(o.at("error_codes"), (json::array{90002}));
  EXPECT_EQ(o.at("timestamp"), "2023-11-14 22:13:20Z");
  EXPECT_EQ(o.at("trace_id"), "trace-1");
  EXPECT_EQ(o.at("correlation_id"), "corr-1");
  EXPECT_EQ(o.at("error_uri"), "https://login.microsoftonline.com/error?code=90002");
  const std::string desc(o.at("error_description").as_string());
  EXPECT_EQ(desc.rfind("AADSTS90002: Tenant 't-1' not found.", 0), 0u);
  EXPECT_NE(desc.find("\r\nTrace ID: trace-1\r\nCorrelation ID: corr-1\r\nTimestamp: 2023-11-14 "
                      "22:13:20Z"),
            std::string::npos);
}

TEST(EntraErrorTest, ServicePrincipalIdIsStablePerTenantAndApp) {
  const std::string a = service_principal_object_id("t1", "app");
  EXPECT_EQ(a, service_principal_object_id("T1", "APP"));
  EXPECT_NE(a, service_principal_object_id("t2", "app"));
  EXPECT_EQ(a.size(), 36u);
  EXPECT_EQ(a[14], '5');
}

TEST(FaultTest, RulesApplyInOrderAndCountDown) {
  FaultQueue q;
  q.add(FaultRule{FaultTarget::entra, FaultAction::reset, 0, {}, {}, 0, 2});
  q.add(FaultRule{FaultTarget::any, FaultAction::hang, 0, {}, {}, 0, -1});
  EXPECT_EQ(q.take(FaultTarget::imds)->action, FaultAction::hang);
  EXPECT_EQ(q.take(FaultTarget::entra)->action, FaultAction::reset);
  EXPECT_EQ(q.take(FaultTarget::entra)->action, FaultAction::reset);
  EXPECT_EQ(q.take(FaultTarget::entra)->action, FaultAction::hang);  // reset used up
  EXPECT_EQ(q.rules().size(), 1u);
  EXPECT_EQ(q.take(FaultTarget::app_service)->action, FaultAction::hang);  // -1 never runs out
  q.clear();
  EXPECT_FALSE(q.take(FaultTarget::imds));
}

TEST(FaultTest, ParseFaultRule) {
  std::string error;
  auto parse = [&](std::string_view text) {
    return parse_fault_rule(json::parse(text).as_object(), error);
  };
  const auto r = parse(R"({"target":"entra","action":"status","status":503,"retry_after":2,
                           "aadsts":90024,"delay_ms":5,"count":-1})");
  ASSERT_TRUE(r) << error;
  EXPECT_EQ(r->target, FaultTarget::entra);
  EXPECT_EQ(r->status, 503u);
  EXPECT_EQ(r->retry_after, "2");
  EXPECT_EQ(r->aadsts, 90024u);
  EXPECT_EQ(r->count, -1);

  const auto d = parse(R"({"delay_ms":100})");
  ASSERT_TRUE(d) << error;
  EXPECT_EQ(d->action, FaultAction::delay);
  EXPECT_EQ(d->target, FaultTarget::any);
  EXPECT_EQ(d->count, 1);

  EXPECT_FALSE(parse(R"({"action":"reset","count":0})"));
  EXPECT_FALSE(parse(R"({"action":"boom"})"));
  EXPECT_FALSE(parse(R"({"action":"reset","target":"IMDS"})"));
  EXPECT_FALSE(parse(R"({"action":"status","status":99})"));
  EXPECT_FALSE(parse(R"({"action":"reset","colour":"red"})"));
  EXPECT_EQ(error, "$.colour: unknown key");
}

}  // namespace
}  // namespace ficbroker::emulator
