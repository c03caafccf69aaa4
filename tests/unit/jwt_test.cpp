// Reading JWT claims without verifying them.
#include "ficbroker/util/jwt.hpp"

#include "ficbroker/util/encoding.hpp"

#include <boost/json.hpp>

#include <gtest/gtest.h>

#include <string>

namespace ficbroker {
namespace {

std::string make_jwt(std::string_view payload_json, std::string_view signature = "c2ln") {
  return base64url_encode(R"({"alg":"RS256","typ":"JWT"})") + "." + base64url_encode(payload_json) +
         "." + std::string(signature);
}

TEST(LooksLikeJwtTest, AcceptsThreeBase64UrlSegments) {
  EXPECT_TRUE(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.c2ln"));
  EXPECT_TRUE(looks_like_jwt("a-_b.C9d.e"));
  EXPECT_TRUE(looks_like_jwt(make_jwt(R"({"exp":1})")));
}

TEST(LooksLikeJwtTest, AcceptsAnEmptySignatureSegment) {
  // An unsecured JWS ("alg":"none") ends in a dot.
  EXPECT_TRUE(looks_like_jwt("aGVhZA.Ym9keQ."));
}

TEST(LooksLikeJwtTest, RejectsWrongSegmentCounts) {
  EXPECT_FALSE(looks_like_jwt(""));
  EXPECT_FALSE(looks_like_jwt("abc"));
  EXPECT_FALSE(looks_like_jwt("a.b"));
  EXPECT_FALSE(looks_like_jwt("a.b.c.d"));
  EXPECT_FALSE(looks_like_jwt("a.b.c.d.e"));  // a JWE has five
}

TEST(LooksLikeJwtTest, RejectsEmptyHeaderOrPayload) {
  EXPECT_FALSE(looks_like_jwt(".b.c"));
  EXPECT_FALSE(looks_like_jwt("a..c"));
  EXPECT_FALSE(looks_like_jwt(".."));
}

TEST(LooksLikeJwtTest, RejectsCharactersOutsideBase64Url) {
  EXPECT_FALSE(looks_like_jwt("a.b c.d"));
  EXPECT_FALSE(looks_like_jwt("a.b\".d"));
  EXPECT_FALSE(looks_like_jwt("a.b\\.d"));
  EXPECT_FALSE(looks_like_jwt("a.b.c\n"));
  EXPECT_FALSE(looks_like_jwt("Bearer a.b.c"));
}

TEST(DecodeJwtClaimsTest, ReturnsThePayloadObject) {
  const auto claims =
      decode_jwt_claims(make_jwt(R"({"aud":"api://AzureADTokenExchange","exp":1800003600})"));
  ASSERT_TRUE(claims.has_value());
  EXPECT_EQ(claims->at("aud").as_string(), "api://AzureADTokenExchange");
  EXPECT_EQ(claims->at("exp").as_int64(), 1800003600);
}

TEST(DecodeJwtClaimsTest, AcceptsAPaddedPayloadSegment) {
  // {"a":1} is 7 bytes: base64 needs one '=' of padding.
  const std::string payload = base64url_encode(R"({"a":1})") + "=";
  const auto claims = decode_jwt_claims("eyJhbGciOiJub25lIn0." + payload + ".sig");
  ASSERT_TRUE(claims.has_value());
  EXPECT_EQ(claims->at("a").as_int64(), 1);
}

TEST(DecodeJwtClaimsTest, RejectsAPayloadThatIsNotJson) {
  EXPECT_FALSE(decode_jwt_claims(make_jwt("not json")).has_value());
  EXPECT_FALSE(decode_jwt_claims(make_jwt(R"({"exp":)")).has_value());
}

TEST(DecodeJwtClaimsTest, RejectsAPayloadThatIsNotAnObject) {
  EXPECT_FALSE(decode_jwt_claims(make_jwt("[1,2]")).has_value());
  EXPECT_FALSE(decode_jwt_claims(make_jwt("42")).has_value());
  EXPECT_FALSE(decode_jwt_claims(make_jwt(R"("s")")).has_value());
}

TEST(DecodeJwtClaimsTest, RejectsAPayloadThatIsNotBase64Url) {
  // Five characters: a length no base64 text can have.
  EXPECT_FALSE(decode_jwt_claims("aGVhZA.abcde.sig").has_value());
}

TEST(DecodeJwtClaimsTest, RejectsSomethingThatIsNotAJwt) {
  EXPECT_FALSE(decode_jwt_claims("opaque-token").has_value());
  EXPECT_FALSE(decode_jwt_claims("").has_value());
}

TEST(NumericClaimTest, ReadsIntegers) {
  boost::json::object claims{{"exp", 1800003600}, {"nbf", 0}, {"neg", -5}};
  EXPECT_EQ(numeric_claim(claims, "exp"), std::optional<std::int64_t>(1800003600));
  EXPECT_EQ(numeric_claim(claims, "nbf"), std::optional<std::int64_t>(0));
  EXPECT_EQ(numeric_claim(claims, "neg"), std::optional<std::int64_t>(-5));
}

TEST(NumericClaimTest, TruncatesAFractionalNumericDate) {
  boost::json::object claims{{"exp", 1800003600.75}};
  EXPECT_EQ(numeric_claim(claims, "exp"), std::optional<std::int64_t>(1800003600));
}

TEST(NumericClaimTest, ReadsLargeUnsignedValues) {
  boost::json::object claims{{"exp", std::uint64_t{1} << 40}};
  EXPECT_EQ(numeric_claim(claims, "exp"), std::optional<std::int64_t>(std::int64_t{1} << 40));
}

TEST(NumericClaimTest, AbsentOrNonNumericClaimsAreNullopt) {
  boost::json::object claims{{"s", "1800003600"}, {"b", true}, {"n", nullptr}, {"o", {{"a", 1}}}};
  EXPECT_FALSE(numeric_claim(claims, "missing").has_value());
  EXPECT_FALSE(numeric_claim(claims, "s").has_value());
  EXPECT_FALSE(numeric_claim(claims, "b").has_value());
  EXPECT_FALSE(numeric_claim(claims, "n").has_value());
  EXPECT_FALSE(numeric_claim(claims, "o").has_value());
}

TEST(NumericClaimTest, UnsignedValuesBeyondInt64AreNullopt) {
  boost::json::object claims{{"exp", std::uint64_t{18446744073709551615ULL}}};
  EXPECT_FALSE(numeric_claim(claims, "exp").has_value());
}

TEST(NumericClaimTest, DoublesBeyondInt64AreNullopt) {
  // Converting 1e300 to int64 is undefined behaviour; a hostile or broken token must not reach
  // it (make_token reads nbf of every upstream token through numeric_claim).
  const auto claims = decode_jwt_claims(make_jwt(R"({"nbf":1e300,"exp":-1e300})"));
  ASSERT_TRUE(claims.has_value());
  EXPECT_FALSE(numeric_claim(*claims, "nbf").has_value());
  EXPECT_FALSE(numeric_claim(*claims, "exp").has_value());
}

}  // namespace
}  // namespace ficbroker
