// base64url, percent-encoding and query parsing: the byte-level helpers every request and every
// JWT goes through.
#include "ficbroker/util/encoding.hpp"

#include <gtest/gtest.h>

#include <string>

namespace ficbroker {
namespace {

// Bytes 0..n-1 chosen to hit every 6-bit group boundary, including high bytes.
std::string sample_bytes(std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out.push_back(static_cast<char>((i * 97 + 251) & 0xFF));
  return out;
}

TEST(Base64UrlTest, EveryLengthFromZeroToTenRoundTrips) {
  for (std::size_t n = 0; n <= 10; ++n) {
    const std::string bytes = sample_bytes(n);
    const std::string encoded = base64url_encode(bytes);
    EXPECT_EQ(encoded.size(), (n * 4 + 2) / 3) << "unpadded length for n=" << n;
    EXPECT_EQ(encoded.find('='), std::string::npos) << "no padding for n=" << n;
    const auto decoded = base64url_decode(encoded);
    ASSERT_TRUE(decoded.has_value()) << "n=" << n;
    EXPECT_EQ(*decoded, bytes) << "n=" << n;
  }
}

TEST(Base64UrlTest, EncodesWithTheUrlSafeAlphabet) {
  // 0xFB 0xFF 0xBF encodes to "+/+/" in standard base64.
  EXPECT_EQ(base64url_encode("\xFB\xFF\xBF"), "-_-_");
  EXPECT_EQ(base64url_encode("Man"), "TWFu");
  EXPECT_EQ(base64url_encode("Ma"), "TWE");
  EXPECT_EQ(base64url_encode("M"), "TQ");
  EXPECT_EQ(base64url_encode(""), "");
}

TEST(Base64UrlTest, DecodeAcceptsPaddedInput) {
  EXPECT_EQ(base64url_decode("TQ=="), std::optional<std::string>("M"));
  EXPECT_EQ(base64url_decode("TWE="), std::optional<std::string>("Ma"));
  EXPECT_EQ(base64url_decode("TWFu"), std::optional<std::string>("Man"));
}

TEST(Base64UrlTest, DecodeRejectsInvalidCharacters) {
  EXPECT_FALSE(base64url_decode("TW!u").has_value());
  EXPECT_FALSE(base64url_decode("TW u").has_value());
  EXPECT_FALSE(base64url_decode("TW.u").has_value());
  EXPECT_FALSE(base64url_decode(std::string("TW\0u", 4)).has_value());
  EXPECT_FALSE(base64url_decode("T=Fu").has_value()) << "padding in the middle";
}

TEST(Base64UrlTest, DecodeRejectsImpossibleLengths) {
  // One leftover character carries only six bits: never a whole byte.
  EXPECT_FALSE(base64url_decode("T").has_value());
  EXPECT_FALSE(base64url_decode("TWFuT").has_value());
  EXPECT_FALSE(base64url_decode("TWFuT===").has_value());
}

TEST(PercentEncodingTest, LeavesUnreservedCharactersAlone) {
  EXPECT_EQ(percent_encode("AZaz09-._~"), "AZaz09-._~");
}

TEST(PercentEncodingTest, EncodesReservedAndNonAsciiBytesAsUpperCaseHex) {
  EXPECT_EQ(percent_encode("https://x/.default"), "https%3A%2F%2Fx%2F.default");
  EXPECT_EQ(percent_encode("a b+c&d=e"), "a%20b%2Bc%26d%3De");
  EXPECT_EQ(percent_encode("\xC3\xA9"), "%C3%A9");
  EXPECT_EQ(percent_encode(std::string("\0", 1)), "%00");
}

TEST(PercentEncodingTest, DecodeInvertsEncode) {
  const std::string text = "scope=https://database.windows.net//.default & x+y \x01\xFF";
  EXPECT_EQ(percent_decode(percent_encode(text), false), std::optional<std::string>(text));
  EXPECT_EQ(percent_decode(percent_encode(text), true), std::optional<std::string>(text));
}

TEST(PercentEncodingTest, DecodeAcceptsBothHexCases) {
  EXPECT_EQ(percent_decode("%2f%2F%aB", false), std::optional<std::string>("//\xAB"));
}

TEST(PercentEncodingTest, PlusIsASpaceOnlyInFormMode) {
  EXPECT_EQ(percent_decode("a+b", true), std::optional<std::string>("a b"));
  EXPECT_EQ(percent_decode("a+b", false), std::optional<std::string>("a+b"));
  EXPECT_EQ(percent_decode("a%2Bb", true), std::optional<std::string>("a+b"));
}

TEST(PercentEncodingTest, MalformedEscapesAreErrors) {
  EXPECT_FALSE(percent_decode("%", false).has_value());
  EXPECT_FALSE(percent_decode("%4", false).has_value());
  EXPECT_FALSE(percent_decode("abc%", false).has_value());
  EXPECT_FALSE(percent_decode("abc%4", false).has_value());
  EXPECT_FALSE(percent_decode("%G1", false).has_value());
  EXPECT_FALSE(percent_decode("%1G", false).has_value());
  EXPECT_FALSE(percent_decode("%%41", false).has_value());
  EXPECT_EQ(percent_decode("%41", false), std::optional<std::string>("A")) << "escape at the end";
}

TEST(ParseQueryTest, KeepsOrderAndDuplicates) {
  const auto params = parse_query("b=2&a=1&b=3");
  ASSERT_TRUE(params.has_value());
  const QueryParams expected{{"b", "2"}, {"a", "1"}, {"b", "3"}};
  EXPECT_EQ(*params, expected);
}

TEST(ParseQueryTest, DecodesKeysAndValues) {
  const auto params =
      parse_query("resource=https%3A%2F%2Fvault.azure.net&api%2Dversion=2018-02-01");
  ASSERT_TRUE(params.has_value());
  const QueryParams expected{{"resource", "https://vault.azure.net"},
                             {"api-version", "2018-02-01"}};
  EXPECT_EQ(*params, expected);
}

TEST(ParseQueryTest, PlusIsASpaceByDefaultAndLiteralOnRequest) {
  const auto form = parse_query("scope=a+b");
  ASSERT_TRUE(form.has_value());
  EXPECT_EQ(form->at(0).second, "a b");
  const auto raw = parse_query("scope=a+b", false);
  ASSERT_TRUE(raw.has_value());
  EXPECT_EQ(raw->at(0).second, "a+b");
}

TEST(ParseQueryTest, SkipsEmptySegmentsAndKeepsValuelessKeys) {
  const auto params = parse_query("&a=1&&flag&b=&");
  ASSERT_TRUE(params.has_value());
  const QueryParams expected{{"a", "1"}, {"flag", ""}, {"b", ""}};
  EXPECT_EQ(*params, expected);
}

TEST(ParseQueryTest, ValueMayContainEqualsSigns) {
  const auto params = parse_query("a=b=c");
  ASSERT_TRUE(params.has_value());
  EXPECT_EQ(*params, (QueryParams{{"a", "b=c"}}));
}

TEST(ParseQueryTest, EmptyQueryIsNoParameters) {
  const auto params = parse_query("");
  ASSERT_TRUE(params.has_value());
  EXPECT_TRUE(params->empty());
}

TEST(ParseQueryTest, MalformedEscapeInKeyOrValueFailsTheWholeQuery) {
  EXPECT_FALSE(parse_query("a=1&b=%zz").has_value());
  EXPECT_FALSE(parse_query("a%=1").has_value());
}

TEST(AsciiCaseTest, LowerAndIequalsTouchOnlyAsciiLetters) {
  EXPECT_EQ(ascii_lower("MeTaData-1\xC3\x89"), "metadata-1\xC3\x89");
  EXPECT_TRUE(iequals("Metadata", "mETADATA"));
  EXPECT_FALSE(iequals("true", "tru"));
  EXPECT_FALSE(iequals("true", "trye"));
  EXPECT_TRUE(iequals("", ""));
}

}  // namespace
}  // namespace ficbroker
