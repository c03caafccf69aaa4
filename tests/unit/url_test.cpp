// Upstream URL parsing and the loopback/link-local test that decides where plain http is allowed.
#include "ficbroker/util/url.hpp"

#include <gtest/gtest.h>

namespace ficbroker {
namespace {

TEST(ParseUrlTest, HttpsWithoutPortDefaultsTo443AndRootPath) {
  const auto url = parse_url("https://login.microsoftonline.com");
  ASSERT_TRUE(url.has_value());
  EXPECT_EQ(url->scheme, "https");
  EXPECT_EQ(url->host, "login.microsoftonline.com");
  EXPECT_EQ(url->port, 443);
  EXPECT_EQ(url->path, "/");
  EXPECT_TRUE(url->is_https());
  EXPECT_EQ(url->host_header(), "login.microsoftonline.com");
}

TEST(ParseUrlTest, HttpWithoutPortDefaultsTo80) {
  const auto url = parse_url("http://169.254.169.254");
  ASSERT_TRUE(url.has_value());
  EXPECT_EQ(url->port, 80);
  EXPECT_FALSE(url->is_https());
  EXPECT_EQ(url->host_header(), "169.254.169.254");
}

TEST(ParseUrlTest, ExplicitPortAndPathAreKept) {
  const auto url = parse_url("http://127.0.0.1:8081/msi/token");
  ASSERT_TRUE(url.has_value());
  EXPECT_EQ(url->host, "127.0.0.1");
  EXPECT_EQ(url->port, 8081);
  EXPECT_EQ(url->path, "/msi/token");
  EXPECT_EQ(url->host_header(), "127.0.0.1:8081");
}

TEST(ParseUrlTest, SchemeAndHostAreLowerCasedButPathIsNot) {
  const auto url = parse_url("HTTPS://Login.MicrosoftOnline.COM/Tenant");
  ASSERT_TRUE(url.has_value());
  EXPECT_EQ(url->scheme, "https");
  EXPECT_EQ(url->host, "login.microsoftonline.com");
  EXPECT_EQ(url->path, "/Tenant");
}

TEST(ParseUrlTest, BracketedIpv6HostLosesItsBracketsAndKeepsThePort) {
  const auto url = parse_url("http://[::1]:8181/x");
  ASSERT_TRUE(url.has_value());
  EXPECT_EQ(url->host, "::1");
  EXPECT_EQ(url->port, 8181);
  EXPECT_EQ(url->path, "/x");
  EXPECT_EQ(url->host_header(), "[::1]:8181");
}

TEST(ParseUrlTest, BracketedIpv6WithoutPortUsesTheDefault) {
  const auto url = parse_url("https://[fe80::1]");
  ASSERT_TRUE(url.has_value());
  EXPECT_EQ(url->host, "fe80::1");
  EXPECT_EQ(url->port, 443);
  EXPECT_EQ(url->host_header(), "[fe80::1]");
}

TEST(ParseUrlTest, HostHeaderShowsANonDefaultPortForHttps) {
  const auto url = parse_url("https://example.com:8443");
  ASSERT_TRUE(url.has_value());
  EXPECT_EQ(url->host_header(), "example.com:8443");
}

TEST(ParseUrlTest, OnlyHttpAndHttpsSchemesAreAccepted) {
  EXPECT_FALSE(parse_url("ftp://example.com").has_value());
  EXPECT_FALSE(parse_url("file:///etc/passwd").has_value());
  EXPECT_FALSE(parse_url("httpx://example.com").has_value());
  EXPECT_FALSE(parse_url("example.com").has_value());
  EXPECT_FALSE(parse_url("//example.com").has_value());
  EXPECT_FALSE(parse_url("").has_value());
}

TEST(ParseUrlTest, UserinfoIsRefused) {
  EXPECT_FALSE(parse_url("https://user@example.com").has_value());
  EXPECT_FALSE(parse_url("https://user:pass@example.com/").has_value());
  // The classic confusion: which host is this?
  EXPECT_FALSE(parse_url("http://127.0.0.1@evil.example").has_value());
}

TEST(ParseUrlTest, QueryFragmentBackslashAndSpaceAreRefused) {
  EXPECT_FALSE(parse_url("https://example.com/?a=1").has_value());
  EXPECT_FALSE(parse_url("https://example.com/#frag").has_value());
  EXPECT_FALSE(parse_url("https://example.com\\path").has_value());
  EXPECT_FALSE(parse_url("https://exa mple.com").has_value());
}

TEST(ParseUrlTest, BadPortsAreRefused) {
  EXPECT_FALSE(parse_url("https://example.com:0").has_value());
  EXPECT_FALSE(parse_url("https://example.com:65536").has_value());
  EXPECT_FALSE(parse_url("https://example.com:-1").has_value());
  EXPECT_FALSE(parse_url("https://example.com:80a").has_value());
  EXPECT_TRUE(parse_url("https://example.com:65535").has_value());
}

TEST(ParseUrlTest, EmptyHostIsRefused) {
  EXPECT_FALSE(parse_url("https://").has_value());
  EXPECT_FALSE(parse_url("https://:443").has_value());
  EXPECT_FALSE(parse_url("https:///path").has_value());
  EXPECT_FALSE(parse_url("http://[]:80").has_value());
}

TEST(ParseUrlTest, MalformedIpv6LiteralsAreRefused) {
  EXPECT_FALSE(parse_url("http://[::1").has_value()) << "no closing bracket";
  EXPECT_FALSE(parse_url("http://[::1]x").has_value()) << "garbage after the bracket";
}

TEST(ParseUrlTest, UnbracketedIpv6LiteralIsRefused) {
  // "http://::1" must not turn into host ":" port 1.
  const auto url = parse_url("http://::1");
  EXPECT_FALSE(url.has_value()) << "parsed as host '" << url->host << "' port " << url->port;
}

struct HostCase {
  const char* host;
  bool loopback_or_link_local;
  bool loopback;
};

class LoopbackTest : public ::testing::TestWithParam<HostCase> {};

TEST_P(LoopbackTest, ClassifiesTheHost) {
  const auto& c = GetParam();
  EXPECT_EQ(is_loopback_or_link_local(c.host), c.loopback_or_link_local) << c.host;
  EXPECT_EQ(is_loopback(c.host), c.loopback) << c.host;
}

INSTANTIATE_TEST_SUITE_P(
    Hosts, LoopbackTest,
    ::testing::Values(HostCase{"localhost", true, true}, HostCase{"LocalHost", true, true},
                      HostCase{"127.0.0.1", true, true}, HostCase{"127.0.0.2", true, true},
                      HostCase{"127.255.255.254", true, true}, HostCase{"::1", true, true},
                      HostCase{"::ffff:127.0.0.1", true, true},
                      HostCase{"169.254.169.254", true, false},
                      HostCase{"169.254.0.1", true, false},
                      HostCase{"::ffff:169.254.169.254", true, false},
                      HostCase{"fe80::1", true, false}, HostCase{"febf::1", true, false},
                      HostCase{"10.0.0.1", false, false}, HostCase{"192.168.1.1", false, false},
                      HostCase{"169.255.0.1", false, false}, HostCase{"128.0.0.1", false, false},
                      HostCase{"fec0::1", false, false}, HostCase{"::", false, false},
                      HostCase{"0.0.0.0", false, false}, HostCase{"example.com", false, false},
                      HostCase{"localhost.evil.example", false, false},
                      HostCase{"127.0.0.1.nip.io", false, false}, HostCase{"", false, false}));

}  // namespace
}  // namespace ficbroker
