// The JSON bodies callers parse: every SDK's expectations of the success body (all values strings,
// both expires_in and expires_on), and error bodies.
#include "ficbroker/front_door/response.hpp"

#include <boost/json.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>

namespace ficbroker {
namespace {

namespace json = boost::json;

constexpr std::int64_t kNow = 1'800'000'000;
constexpr std::string_view kJwt = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE4MDAwMDM2MDB9.c2lnbmF0dXJl";

Token sample_token() {
  Token t;
  t.access_token = std::string(kJwt);
  t.expires_on = kNow + 3599;
  t.not_before = kNow - 300;
  t.ext_expires_on = kNow + 7199;
  return t;
}

json::object parse_object(const std::string& body) {
  json::error_code ec;
  auto value = json::parse(body, ec);
  EXPECT_FALSE(ec) << "not JSON: " << body;
  if (ec || !value.is_object()) {
    ADD_FAILURE() << "not a JSON object: " << body;
    return {};
  }
  return value.as_object();
}

std::string str(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (!v || !v->is_string()) {
    ADD_FAILURE() << key << " is missing or not a string";
    return {};
  }
  return std::string(v->as_string());
}

TEST(FormatTokenBodyTest, HasExactlyTheEightKeysAndAllValuesAreStrings) {
  const std::string body =
      format_token_body(sample_token(), "https://vault.azure.net", "client-1", kNow);
  const auto o = parse_object(body);
  std::set<std::string> keys;
  for (const auto& kv : o) {
    keys.emplace(kv.key());
    EXPECT_TRUE(kv.value().is_string()) << kv.key() << " is not a string in " << body;
  }
  const std::set<std::string> expected{"access_token",   "client_id",  "expires_in", "expires_on",
                                       "ext_expires_in", "not_before", "resource",   "token_type"};
  EXPECT_EQ(keys, expected);
  EXPECT_EQ(o.size(), 8u) << "no duplicate keys";
}

TEST(FormatTokenBodyTest, ValuesMatchTheToken) {
  const auto o =
      parse_object(format_token_body(sample_token(), "https://vault.azure.net", "client-1", kNow));
  EXPECT_EQ(str(o, "access_token"), kJwt);
  EXPECT_EQ(str(o, "client_id"), "client-1");
  EXPECT_EQ(str(o, "expires_in"), "3599");
  EXPECT_EQ(str(o, "expires_on"), std::to_string(kNow + 3599));
  EXPECT_EQ(str(o, "ext_expires_in"), "7199");
  EXPECT_EQ(str(o, "not_before"), std::to_string(kNow - 300));
  EXPECT_EQ(str(o, "resource"), "https://vault.azure.net");
  EXPECT_EQ(str(o, "token_type"), "Bearer");
}

TEST(FormatTokenBodyTest, ExpiresInIsExpiresOnMinusNow) {
  const Token t = sample_token();
  for (std::int64_t now : {kNow, kNow + 1, kNow + 1000, kNow + 3598}) {
    const auto o = parse_object(format_token_body(t, "r", "c", now));
    EXPECT_EQ(std::stoll(str(o, "expires_in")), t.expires_on - now);
    EXPECT_EQ(std::stoll(str(o, "expires_on")), t.expires_on) << "absolute time does not move";
  }
}

TEST(FormatTokenBodyTest, ExpiresInIsNeverNegative) {
  const Token t = sample_token();
  for (std::int64_t now : {t.expires_on, t.expires_on + 1, t.expires_on + 100000}) {
    SCOPED_TRACE(now - t.expires_on);
    const auto o = parse_object(format_token_body(t, "r", "c", now));
    EXPECT_EQ(str(o, "expires_in"), "0");
    EXPECT_EQ(std::stoll(str(o, "ext_expires_in")),
              std::max<std::int64_t>(0, t.ext_expires_on - now));
  }
  const auto o = parse_object(format_token_body(t, "r", "c", t.ext_expires_on + 1));
  EXPECT_EQ(str(o, "ext_expires_in"), "0");
}

TEST(FormatTokenBodyTest, NumericValuesAreNeverEmptyStrings) {
  // MSAL Go does strconv.Atoi on these: "" would fail.
  Token t;
  t.access_token = std::string(kJwt);
  const auto o = parse_object(format_token_body(t, "r", "", kNow));
  for (const char* key : {"expires_in", "expires_on", "ext_expires_in", "not_before"}) {
    const std::string v = str(o, key);
    EXPECT_FALSE(v.empty()) << key;
    EXPECT_EQ(v.find_first_not_of("-0123456789"), std::string::npos) << key << "=" << v;
  }
}

TEST(FormatTokenBodyTest, ResourceIsEchoedVerbatimWithJsonEscaping) {
  for (std::string resource :
       {std::string("https://database.windows.net/"), std::string(R"(api://x"y\z)"),
        std::string("a\nb\tc\rd"), std::string("ctl\x01\x1f"), std::string("caf\xC3\xA9"),
        std::string("</script>")}) {
    SCOPED_TRACE(resource);
    const auto body = format_token_body(sample_token(), resource, "c", kNow);
    const auto o = parse_object(body);
    EXPECT_EQ(str(o, "resource"), resource) << body;
  }
}

TEST(FormatTokenBodyTest, ClientIdIsEscapedToo) {
  const auto o = parse_object(format_token_body(sample_token(), "r", "a\"b\\c", kNow));
  EXPECT_EQ(str(o, "client_id"), "a\"b\\c");
}

TEST(AppendJsonStringTest, EscapesQuotesBackslashesAndControlCharacters) {
  std::string out = "x";
  append_json_string(out, std::string("a\"b\\c\n\x01", 7));
  EXPECT_EQ(out, "x\"a\\\"b\\\\c\\n\\u0001\"");
  std::string nul;
  append_json_string(nul, std::string_view("\0", 1));
  EXPECT_EQ(nul, "\"\\u0000\"");
}

TEST(FormatErrorBodyTest, PlainShapeHasErrorAndDescription) {
  const std::string body =
      format_error_body(400, "invalid_request", "Required metadata header not specified", false);
  EXPECT_EQ(
      body,
      R"({"error":"invalid_request","error_description":"Required metadata header not specified"})");
}

TEST(FormatErrorBodyTest, AppServiceShapeAddsStatusCodeAndMessage) {
  const auto o = parse_object(format_error_body(401, "unauthorized", "bad \"header\"", true));
  EXPECT_EQ(o.size(), 4u);
  EXPECT_EQ(str(o, "error"), "unauthorized");
  EXPECT_EQ(str(o, "error_description"), "bad \"header\"");
  EXPECT_EQ(str(o, "message"), "bad \"header\"");
  ASSERT_TRUE(o.contains("statusCode"));
  ASSERT_TRUE(o.at("statusCode").is_number());
  EXPECT_EQ(o.at("statusCode").to_number<int>(), 401);
}

TEST(FormatErrorBodyTest, DescriptionsWithControlCharactersStayValidJson) {
  const auto o = parse_object(format_error_body(503, "e", "line1\r\nline2\x02", false));
  EXPECT_EQ(str(o, "error_description"), "line1\r\nline2\x02");
}

}  // namespace
}  // namespace ficbroker
