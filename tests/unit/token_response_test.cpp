// Turning Entra and managed-identity answers into tokens or classified errors: what is retried,
// what is permanent, and that nothing malformed crashes or leaks a token into an error text.
#include "ficbroker/upstream/token_response.hpp"

#include "ficbroker/util/encoding.hpp"
#include "ficbroker/util/error.hpp"

#include <boost/asio/error.hpp>

#include <gtest/gtest.h>

#include <string>

namespace ficbroker {
namespace {

constexpr std::int64_t kNow = 1'800'000'000;

std::string make_jwt(std::string_view payload_json) {
  return base64url_encode(R"({"alg":"RS256","typ":"JWT"})") + "." + base64url_encode(payload_json) +
         "." + base64url_encode("signature-bytes");
}

const std::string kJwt = make_jwt(R"({"aud":"https://vault.azure.net","exp":1800003599})");
const std::string kJwtWithNbf =
    make_jwt(R"({"aud":"https://vault.azure.net","nbf":1799999700,"exp":1800003599})");

class TokenResponseTest : public ::testing::Test {
 protected:
  TokenResult entra(unsigned status, const std::string& body, std::string_view retry_after = "") {
    return parse_entra_response(status, body, retry_after, clock_);
  }
  TokenResult mi(unsigned status, const std::string& body, std::string_view retry_after = "") {
    return parse_managed_identity_response(status, body, retry_after, clock_, "IMDS");
  }
  static std::string entra_success(const std::string& expires_in, const std::string& token = kJwt) {
    return R"({"token_type":"Bearer","expires_in":)" + expires_in +
           R"(,"ext_expires_in":3599,"access_token":")" + token + "\"}";
  }
  ManualClock clock_{kNow};
};

// The result is a transient error (503 class) that callers may retry.
void expect_transient(const TokenResult& r) {
  ASSERT_FALSE(r.has_value()) << "unexpectedly parsed a token";
  EXPECT_EQ(r.error().kind, UpstreamError::Kind::transient) << r.error().description;
  EXPECT_EQ(http_status(r.error()), 503u);
  EXPECT_GT(r.error().retry_after_seconds, 0);
  EXPECT_FALSE(r.error().error.empty());
  EXPECT_FALSE(r.error().description.empty());
}

// --- Entra success -------------------------------------------------------------------------------

TEST_F(TokenResponseTest, EntraSuccessWithNumericExpiresIn) {
  const auto r = entra(200, entra_success("3599"));
  ASSERT_TRUE(r.has_value()) << r.error().description;
  EXPECT_EQ(r->access_token, kJwt);
  EXPECT_EQ(r->expires_on, kNow + 3599);
  EXPECT_EQ(r->issued_at, clock_.now());
  EXPECT_EQ(r->expires_at, clock_.now() + std::chrono::seconds(3599));
  EXPECT_EQ(r->ext_expires_on, kNow + 3599);
  EXPECT_EQ(r->not_before, kNow) << "no nbf claim: now";
}

TEST_F(TokenResponseTest, EntraSuccessWithStringExpiresIn) {
  const auto r = entra(200, entra_success("\"3599\""));
  ASSERT_TRUE(r.has_value()) << r.error().description;
  EXPECT_EQ(r->expires_on, kNow + 3599);
}

TEST_F(TokenResponseTest, EntraExtExpiresInIsKept) {
  const auto r = entra(200, R"({"token_type":"Bearer","expires_in":3599,"ext_expires_in":"7199",)"
                            R"("access_token":")" +
                                kJwt + "\"}");
  ASSERT_TRUE(r.has_value()) << r.error().description;
  EXPECT_EQ(r->ext_expires_on, kNow + 7199);
}

TEST_F(TokenResponseTest, EntraWithoutExtExpiresInUsesExpiresIn) {
  const auto r =
      entra(200, R"({"token_type":"Bearer","expires_in":600,"access_token":")" + kJwt + "\"}");
  ASSERT_TRUE(r.has_value()) << r.error().description;
  EXPECT_EQ(r->ext_expires_on, kNow + 600);
}

TEST_F(TokenResponseTest, NotBeforeComesFromTheNbfClaim) {
  const auto r = entra(200, entra_success("3599", kJwtWithNbf));
  ASSERT_TRUE(r.has_value()) << r.error().description;
  EXPECT_EQ(r->not_before, 1799999700);
}

TEST_F(TokenResponseTest, EntraTokenTypeIsCaseInsensitiveAndOptional) {
  EXPECT_TRUE(
      entra(200, R"({"token_type":"bearer","expires_in":3599,"access_token":")" + kJwt + "\"}")
          .has_value());
  EXPECT_TRUE(entra(200, R"({"expires_in":3599,"access_token":")" + kJwt + "\"}").has_value());
}

TEST_F(TokenResponseTest, ExpiryNeverPromisesMoreThanTheJwtsExp) {
  // kJwt's exp is kNow + 3599: expires_in 3600 counted from receipt would overshoot it.
  const auto r = entra(200, entra_success("3600"));
  ASSERT_TRUE(r.has_value()) << r.error().description;
  EXPECT_EQ(r->expires_on, kNow + 3599);
  EXPECT_EQ(r->expires_at, clock_.now() + std::chrono::seconds(3599));
  const auto shorter = entra(200, entra_success("600"));
  ASSERT_TRUE(shorter.has_value());
  EXPECT_EQ(shorter->expires_on, kNow + 600) << "an earlier expires_in is kept";
}

TEST_F(TokenResponseTest, TheClockIsReadOnceForTheWholeToken) {
  clock_.advance(std::chrono::seconds(1234));
  const auto r = entra(200, entra_success("100"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->expires_on, kNow + 1234 + 100);
  EXPECT_EQ(r->expires_at - r->issued_at, std::chrono::seconds(100));
}

// --- Entra 200 that is not a usable token --------------------------------------------------------

TEST_F(TokenResponseTest, EntraSuccessWithoutAccessTokenIsTransient) {
  expect_transient(entra(200, R"({"token_type":"Bearer","expires_in":3599})"));
  expect_transient(entra(200, R"({"token_type":"Bearer","expires_in":3599,"access_token":""})"));
  expect_transient(entra(200, R"({"token_type":"Bearer","expires_in":3599,"access_token":42})"));
  expect_transient(entra(200, R"({"token_type":"Bearer","expires_in":3599,"access_token":null})"));
}

TEST_F(TokenResponseTest, EntraNonJwtTokenIsTransientAndNotEchoed) {
  const auto r = entra(200, entra_success("3599", "opaque-secret-value"));
  expect_transient(r);
  EXPECT_EQ(r.error().upstream_status, 200u);
  EXPECT_EQ(r.error().description.find("opaque-secret-value"), std::string::npos)
      << r.error().description;
}

TEST_F(TokenResponseTest, EntraTokenTypeOtherThanBearerIsAnError) {
  const auto r =
      entra(200, R"({"token_type":"pop","expires_in":3599,"access_token":")" + kJwt + "\"}");
  expect_transient(r);
  EXPECT_EQ(r.error().description.find(kJwt), std::string::npos);
}

TEST_F(TokenResponseTest, EntraExpiresInMissingNegativeOrAbsurdIsAnError) {
  expect_transient(entra(200, R"({"token_type":"Bearer","access_token":")" + kJwt + "\"}"));
  for (const char* value :
       {"0", "-5", "\"-5\"", "\"abc\"", "\"\"", "\"3599s\"", "\" 3599\"", "34560001", "1e20",
        "18446744073709551615", "true", "null", "{}", "{\"value\":3599}", "[3599]"}) {
    SCOPED_TRACE(value);
    expect_transient(entra(200, entra_success(value)));
  }
}

TEST_F(TokenResponseTest, EntraLifetimeOfFourHundredDaysIsTheLimit) {
  EXPECT_TRUE(entra(200, entra_success("34560000")).has_value());
}

TEST_F(TokenResponseTest, NonJsonOrWrongShapeIsTransient) {
  for (const std::string& body :
       {std::string(""), std::string("<html>502 Bad Gateway</html>"), std::string("[]"),
        std::string("\"token\""), std::string("null"), std::string("{\"access_token\":")}) {
    SCOPED_TRACE(body);
    expect_transient(entra(200, body));
    expect_transient(mi(200, body));
  }
}

TEST_F(TokenResponseTest, EveryTruncationOfASuccessIsAnErrorNotACrash) {
  const std::string full = entra_success("3599");
  ASSERT_TRUE(entra(200, full).has_value());
  for (std::size_t n = 0; n < full.size(); ++n) {
    const auto r = entra(200, full.substr(0, n));
    ASSERT_FALSE(r.has_value()) << "prefix of length " << n;
    EXPECT_EQ(http_status(r.error()), 503u);
    EXPECT_EQ(r.error().description.find(kJwt), std::string::npos);
  }
}

TEST_F(TokenResponseTest, DeeplyNestedJsonIsAnErrorNotACrash) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  expect_transient(entra(200, deep));
  const auto r = entra(500, deep);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(http_status(r.error()), 503u);
}

// --- Entra errors --------------------------------------------------------------------------------

constexpr const char* kFicMismatch =
    R"({"error":"invalid_client","error_description":"AADSTS700213: No matching federated identity record found for presented assertion subject 'x'. Please note that the matching is done using a case-sensitive comparison.\r\nTrace ID: 0c1d\r\nCorrelation ID: 6f1f1a2b-0000-0000-0000-000000000001\r\nTimestamp: 2027-01-15 08:00:00Z","error_codes":[700213],"timestamp":"2027-01-15 08:00:00Z","trace_id":"0c1d","correlation_id":"6f1f1a2b-0000-0000-0000-000000000001","error_uri":"https://login.microsoftonline.com/error?code=700213"})";

TEST_F(TokenResponseTest, FicMismatchIsPermanent400WithTheAadstsText) {
  const auto r = entra(400, kFicMismatch);
  ASSERT_FALSE(r.has_value());
  const auto& e = r.error();
  EXPECT_EQ(e.kind, UpstreamError::Kind::permanent);
  EXPECT_EQ(http_status(e), 400u);
  EXPECT_EQ(e.error, "invalid_client");
  EXPECT_EQ(e.aadsts, 700213);
  EXPECT_EQ(e.description.rfind("AADSTS700213", 0), 0u) << e.description;
  EXPECT_EQ(e.description.find_first_of("\r\n"), std::string::npos) << "first line only";
  EXPECT_EQ(e.correlation_id, "6f1f1a2b-0000-0000-0000-000000000001");
  EXPECT_EQ(e.retry_after_seconds, 0);
  EXPECT_EQ(e.upstream_status, 400u);
}

TEST_F(TokenResponseTest, ErrorDescriptionNeverContainsATokenFromTheBody) {
  const std::string body =
      R"({"error":"invalid_client","error_description":"AADSTS700213: no match","error_codes":[700213],)"
      R"("access_token":")" +
      kJwt + R"(","client_assertion":")" + kJwtWithNbf + R"("})";
  const auto r = entra(400, body);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().description.find(kJwt), std::string::npos) << r.error().description;
  EXPECT_EQ(r.error().description.find(kJwtWithNbf), std::string::npos) << r.error().description;
  EXPECT_EQ(r.error().error.find(kJwt), std::string::npos);
}

TEST_F(TokenResponseTest, ErrorDescriptionRedactsATokenEchoedInTheDescription) {
  // If Entra (or something impersonating it) echoes the assertion, it must not reach callers or
  // logs: token.hpp promises descriptions never contain a token or an assertion.
  const std::string body =
      R"({"error":"invalid_grant","error_description":"AADSTS50027: JWT token is invalid: )" +
      kJwt + R"(","error_codes":[50027]})";
  const auto r = entra(400, body);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().description.rfind("AADSTS50027", 0), 0u) << r.error().description;
  EXPECT_EQ(r.error().description.find(kJwt), std::string::npos) << r.error().description;
}

TEST_F(TokenResponseTest, LongDescriptionsAreBounded) {
  const std::string body = R"({"error":"invalid_request","error_description":"AADSTS9002313: )" +
                           std::string(10000, 'x') + R"(","error_codes":[9002313]})";
  const auto r = entra(400, body);
  ASSERT_FALSE(r.has_value());
  EXPECT_LE(r.error().description.size(), 1024u);
  EXPECT_EQ(r.error().description.rfind("AADSTS9002313", 0), 0u);
}

TEST_F(TokenResponseTest, ExpiredAssertionIsAssertionRejected) {
  for (int code : {700024, 500133}) {
    SCOPED_TRACE(code);
    const std::string body =
        R"({"error":"invalid_client","error_description":"AADSTS)" + std::to_string(code) +
        R"(: Client assertion is not within its valid time range.","error_codes":[)" +
        std::to_string(code) + "]}";
    const auto r = entra(400, body);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().kind, UpstreamError::Kind::assertion_rejected);
    EXPECT_EQ(r.error().aadsts, code);
    EXPECT_EQ(http_status(r.error()), 400u);
  }
}

TEST_F(TokenResponseTest, ThrottlingHonoursRetryAfter) {
  const auto r =
      entra(429, R"({"error":"temporarily_unavailable","error_description":"slow"})", "7");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, UpstreamError::Kind::throttled);
  EXPECT_EQ(http_status(r.error()), 429u);
  EXPECT_EQ(r.error().retry_after_seconds, 7);
}

TEST_F(TokenResponseTest, ThrottlingWithoutRetryAfterStillAsksCallersToWait) {
  const auto r = entra(429, "");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, UpstreamError::Kind::throttled);
  EXPECT_EQ(http_status(r.error()), 429u);
  EXPECT_GT(r.error().retry_after_seconds, 0);
}

TEST_F(TokenResponseTest, ServerErrorsAreTransient) {
  for (unsigned status : {500u, 502u, 503u, 504u}) {
    SCOPED_TRACE(status);
    expect_transient(entra(status, R"({"error":"server_error","error_description":"oops"})"));
    expect_transient(entra(status, "<html>gateway</html>"));
  }
  const auto r = entra(503, "", "30");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().retry_after_seconds, 30);
}

TEST_F(TokenResponseTest, TransientAadstsCodesOn400AreTransient) {
  for (int code : {90024, 90055}) {
    SCOPED_TRACE(code);
    const std::string body = R"({"error":"invalid_request","error_description":"AADSTS)" +
                             std::to_string(code) + R"(: budget exceeded","error_codes":[)" +
                             std::to_string(code) + "]}";
    const auto r = entra(400, body);
    expect_transient(r);
    EXPECT_EQ(r.error().aadsts, code);
  }
}

TEST_F(TokenResponseTest, TemporarilyUnavailableErrorOn400IsTransient) {
  expect_transient(
      entra(400, R"({"error":"temporarily_unavailable","error_description":"try later"})"));
}

TEST_F(TokenResponseTest, ClientErrorsWithoutJsonArePermanent) {
  for (unsigned status : {400u, 401u, 403u}) {
    SCOPED_TRACE(status);
    const auto r = entra(status, "Bad Request");
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().kind, UpstreamError::Kind::permanent);
    EXPECT_EQ(http_status(r.error()), 400u);
    EXPECT_NE(r.error().description.find(std::to_string(status)), std::string::npos);
  }
}

TEST_F(TokenResponseTest, ErrorCodesOfTheWrongTypeAreIgnored) {
  for (const char* codes : {"\"700213\"", "[\"x\"]", "[]", "[{}]", "{}"}) {
    SCOPED_TRACE(codes);
    const auto r =
        entra(400, std::string(R"({"error":"invalid_client","error_codes":)") + codes + "}");
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(http_status(r.error()), 400u);
  }
}

// --- Managed identity (IMDS / App Service) -------------------------------------------------------

TEST_F(TokenResponseTest, ManagedIdentitySuccessWithStringExpiresIn) {
  const auto r = mi(200, R"({"access_token":")" + kJwt + R"(","expires_in":"3599","expires_on":")" +
                             std::to_string(kNow + 3599) +
                             R"(","resource":"api://AzureADTokenExchange","token_type":"Bearer"})");
  ASSERT_TRUE(r.has_value()) << r.error().description;
  EXPECT_EQ(r->access_token, kJwt);
  EXPECT_EQ(r->expires_on, kNow + 3599);
  EXPECT_EQ(r->expires_at, clock_.now() + std::chrono::seconds(3599));
}

TEST_F(TokenResponseTest, ManagedIdentitySuccessWithOnlyExpiresOn) {
  // App Service 2019 sends expires_on (epoch seconds, as a string) and no expires_in.
  const auto r = mi(200, R"({"access_token":")" + kJwt + R"(","expires_on":")" +
                             std::to_string(kNow + 1800) + R"(","token_type":"Bearer"})");
  ASSERT_TRUE(r.has_value()) << r.error().description;
  EXPECT_EQ(r->expires_on, kNow + 1800);
  EXPECT_EQ(r->expires_at, clock_.now() + std::chrono::seconds(1800));
}

TEST_F(TokenResponseTest, ManagedIdentitySuccessWithNumericExpiresOn) {
  const auto r = mi(
      200, R"({"access_token":")" + kJwt + R"(","expires_on":)" + std::to_string(kNow + 600) + "}");
  ASSERT_TRUE(r.has_value()) << r.error().description;
  EXPECT_EQ(r->expires_on, kNow + 600);
}

TEST_F(TokenResponseTest, ManagedIdentityExpiresOnInThePastIsAnError) {
  expect_transient(mi(200, R"({"access_token":")" + kJwt + R"(","expires_on":")" +
                               std::to_string(kNow - 1) + "\"}"));
  expect_transient(mi(
      200, R"({"access_token":")" + kJwt + R"(","expires_on":")" + std::to_string(kNow) + "\"}"));
}

TEST_F(TokenResponseTest, ManagedIdentityDateStringExpiresOnIsAnError) {
  // The 2017 format is for answering, not for reading.
  expect_transient(
      mi(200, R"({"access_token":")" + kJwt + R"(","expires_on":"01/15/2027 08:00:00 +00:00"})"));
}

TEST_F(TokenResponseTest, ManagedIdentityWithoutTokenOrLifetimeIsAnError) {
  expect_transient(mi(200, R"({"expires_in":"3599"})"));
  expect_transient(mi(200, R"({"access_token":")" + kJwt + "\"}"));
  expect_transient(mi(200, R"({"access_token":"not-a-jwt","expires_in":"3599"})"));
  expect_transient(mi(200, R"({"access_token":")" + kJwt + R"(","expires_in":{"s":1}})"));
}

TEST_F(TokenResponseTest, ImdsUpdatingAndServerErrorsAreTransient) {
  for (unsigned status : {404u, 408u, 410u, 500u, 503u}) {
    SCOPED_TRACE(status);
    const auto r = mi(status, R"({"error":"unknown","error_description":"IMDS is updating"})");
    expect_transient(r);
    EXPECT_EQ(r.error().upstream_status, status);
    EXPECT_NE(r.error().description.find("IMDS"), std::string::npos) << r.error().description;
  }
}

TEST_F(TokenResponseTest, ManagedIdentityThrottlingIsThrottled) {
  const auto r = mi(429, "", "3");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, UpstreamError::Kind::throttled);
  EXPECT_EQ(http_status(r.error()), 429u);
  EXPECT_EQ(r.error().retry_after_seconds, 3);
}

TEST_F(TokenResponseTest, ManagedIdentity400IsPermanentWithItsErrorAndDescription) {
  const auto r = mi(400, R"({"error":"invalid_request","error_description":"Identity not found"})");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, UpstreamError::Kind::permanent);
  EXPECT_EQ(http_status(r.error()), 400u);
  EXPECT_EQ(r.error().error, "invalid_request");
  EXPECT_EQ(r.error().description, "IMDS: Identity not found");
}

TEST_F(TokenResponseTest, AppServiceMessageIsUsedWhenThereIsNoDescription) {
  const auto r = parse_managed_identity_response(
      400, R"({"statusCode":400,"message":"No MSI found for specified ClientId"})", "", clock_,
      "App Service");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().description, "App Service: No MSI found for specified ClientId");
}

// --- transport_error and parse_retry_after
// --------------------------------------------------------

TEST(TransportErrorTest, TimeoutsAreTransientAndNameTheUpstream) {
  const auto e = transport_error(make_error_code(errc::upstream_timeout), "Entra");
  EXPECT_EQ(e.kind, UpstreamError::Kind::transient);
  EXPECT_EQ(http_status(e), 503u);
  EXPECT_EQ(e.error, "temporarily_unavailable");
  EXPECT_GT(e.retry_after_seconds, 0);
  EXPECT_NE(e.description.find("Entra"), std::string::npos);
  EXPECT_NE(e.description.find("in time"), std::string::npos) << e.description;
  EXPECT_EQ(e.upstream_status, 0u) << "no HTTP status for a transport failure";
}

TEST(TransportErrorTest, OversizedResponsesSaySo) {
  const auto e = transport_error(make_error_code(errc::too_large), "IMDS");
  EXPECT_EQ(e.kind, UpstreamError::Kind::transient);
  EXPECT_NE(e.description.find("IMDS"), std::string::npos);
  EXPECT_NE(e.description.find("size limit"), std::string::npos) << e.description;
}

TEST(TransportErrorTest, OtherFailuresCarryTheSystemMessage) {
  const error_code refused = boost::asio::error::connection_refused;
  const auto e = transport_error(refused, "App Service");
  EXPECT_EQ(e.kind, UpstreamError::Kind::transient);
  EXPECT_EQ(http_status(e), 503u);
  EXPECT_NE(e.description.find("App Service"), std::string::npos);
  EXPECT_NE(e.description.find(refused.message()), std::string::npos) << e.description;
}

TEST(ParseRetryAfterTest, ReadsDeltaSeconds) {
  EXPECT_EQ(parse_retry_after("7"), 7);
  EXPECT_EQ(parse_retry_after(" 7 "), 7);
  EXPECT_EQ(parse_retry_after("0"), 0);
  EXPECT_EQ(parse_retry_after("3600"), 3600);
}

TEST(ParseRetryAfterTest, CapsLongWaits) { EXPECT_EQ(parse_retry_after("86400"), 3600); }

TEST(ParseRetryAfterTest, WaitsTooLongForAnIntAreCappedNotIgnored) {
  // "wait very long" must not turn into "no Retry-After" (which lets callers retry at once).
  EXPECT_EQ(parse_retry_after("2147483648"), 3600);
  EXPECT_EQ(parse_retry_after("99999999999999999999"), 3600);
}

TEST(ParseRetryAfterTest, AnythingElseIsZero) {
  for (const char* header :
       {"", " ", "abc", "-1", "7.5", "7s", "+7", "Wed, 21 Oct 2015 07:28:00 GMT"}) {
    SCOPED_TRACE(header);
    EXPECT_EQ(parse_retry_after(header), 0);
  }
}

}  // namespace
}  // namespace ficbroker
