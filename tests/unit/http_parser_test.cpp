// The strict front-door HTTP/1.1 parser: what it extracts for routing, and everything it refuses
// rather than guesses about (smuggling and header-confusion tricks).
#include "ficbroker/front_door/http_parser.hpp"

#include <gtest/gtest.h>

#include <string>

namespace ficbroker {
namespace {

const ParseLimits kLimits{};

ParseResult parse(std::string_view data, const ParseLimits& limits = kLimits) {
  return parse_request(data, limits);
}

void expect_status(std::string_view data, ParseStatus status, const ParseLimits& limits = kLimits) {
  const auto r = parse(data, limits);
  EXPECT_EQ(r.status, status) << "reason: " << r.reason << "\nrequest: " << data;
  if (status != ParseStatus::complete && status != ParseStatus::incomplete) {
    EXPECT_FALSE(r.reason.empty());
  }
}

constexpr std::string_view kImdsRequest =
    "GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=r HTTP/1.1\r\n"
    "Host: 127.0.0.1:8181\r\n"
    "Metadata: true\r\n"
    "x-client-SKU: MSAL.Node\r\n"
    "\r\n";

TEST(HttpParserTest, ParsesAnImdsRequest) {
  const auto r = parse(kImdsRequest);
  ASSERT_EQ(r.status, ParseStatus::complete) << r.reason;
  const RequestView& v = r.request.view;
  EXPECT_EQ(v.method, "GET");
  EXPECT_EQ(v.target, "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=r");
  EXPECT_EQ(v.host, std::optional<std::string_view>("127.0.0.1:8181"));
  EXPECT_EQ(v.metadata, std::optional<std::string_view>("true"));
  EXPECT_FALSE(v.identity_header.has_value());
  EXPECT_FALSE(v.secret.has_value());
  EXPECT_FALSE(v.forwarded);
  EXPECT_TRUE(v.body.empty());
  EXPECT_TRUE(r.request.keep_alive);
  EXPECT_FALSE(r.request.head);
  EXPECT_EQ(r.request.total_bytes, kImdsRequest.size());
}

TEST(HttpParserTest, HeaderNamesAreCaseInsensitiveAndValuesAreTrimmed) {
  const auto r = parse(
      "GET /msi/token HTTP/1.1\r\nHOST: localhost\r\nx-identity-HEADER: \t s3cret \t\r\n"
      "SECRET:legacy\r\nmetadata:True\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::complete) << r.reason;
  EXPECT_EQ(r.request.view.host, std::optional<std::string_view>("localhost"));
  EXPECT_EQ(r.request.view.identity_header, std::optional<std::string_view>("s3cret"));
  EXPECT_EQ(r.request.view.secret, std::optional<std::string_view>("legacy"));
  EXPECT_EQ(r.request.view.metadata, std::optional<std::string_view>("True"));
}

TEST(HttpParserTest, PostBodyIsDelimitedByContentLength) {
  const std::string request =
      "POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n"
      "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 10\r\n\r\n"
      "resource=rGET / HTTP/1.1\r\n";
  const auto r = parse(request);
  ASSERT_EQ(r.status, ParseStatus::complete) << r.reason;
  EXPECT_EQ(r.request.view.body, "resource=r");
  EXPECT_EQ(r.request.view.content_type, "application/x-www-form-urlencoded");
  EXPECT_EQ(r.request.total_bytes, request.size() - std::string_view("GET / HTTP/1.1\r\n").size());
}

TEST(HttpParserTest, PipelinedRequestsAreParsedOneAtATime) {
  const std::string two = std::string(kImdsRequest) + std::string(kImdsRequest);
  const auto first = parse(two);
  ASSERT_EQ(first.status, ParseStatus::complete);
  EXPECT_EQ(first.request.total_bytes, kImdsRequest.size());
  const auto second = parse(std::string_view(two).substr(first.request.total_bytes));
  EXPECT_EQ(second.status, ParseStatus::complete);
}

TEST(HttpParserTest, PartialRequestsAreIncomplete) {
  for (std::size_t n = 0; n < kImdsRequest.size(); ++n) {
    SCOPED_TRACE(n);
    EXPECT_EQ(parse(kImdsRequest.substr(0, n)).status, ParseStatus::incomplete);
  }
  expect_status("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nabc",
                ParseStatus::incomplete);
}

TEST(HttpParserTest, HeadIsFlagged) {
  const auto r = parse("HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::complete);
  EXPECT_TRUE(r.request.head);
}

TEST(HttpParserTest, ForwardedHeadersAreFlagged) {
  for (const char* header :
       {"X-Forwarded-For: 10.0.0.1", "x-forwarded-for: 1.2.3.4", "Forwarded: for=10.0.0.1"}) {
    SCOPED_TRACE(header);
    const auto r =
        parse(std::string("GET / HTTP/1.1\r\nHost: localhost\r\n") + header + "\r\n\r\n");
    ASSERT_EQ(r.status, ParseStatus::complete);
    EXPECT_TRUE(r.request.view.forwarded);
  }
}

TEST(HttpParserTest, ConnectionHandling) {
  const auto close = parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n");
  ASSERT_EQ(close.status, ParseStatus::complete);
  EXPECT_FALSE(close.request.keep_alive);
  const auto http10 = parse("GET / HTTP/1.0\r\n\r\n");
  ASSERT_EQ(http10.status, ParseStatus::complete) << "HTTP/1.0 needs no Host";
  EXPECT_FALSE(http10.request.keep_alive);
  EXPECT_FALSE(http10.request.view.host.has_value());
  const auto http10_keep = parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
  ASSERT_EQ(http10_keep.status, ParseStatus::complete);
  EXPECT_TRUE(http10_keep.request.keep_alive);
}

TEST(HttpParserTest, BareLineFeedsAreRefused) {
  expect_status("GET / HTTP/1.1\nHost: h\n\n", ParseStatus::bad_request);
  expect_status("GET / HTTP/1.1\n", ParseStatus::bad_request);
  expect_status("GET / HTTP/1.1\r\nHost: h\nMetadata: true\r\n\r\n", ParseStatus::bad_request);
  expect_status("GET / HTTP/1.1\r\nHost: h\rMetadata: true\r\n\r\n", ParseStatus::bad_request);
}

TEST(HttpParserTest, ObsoleteLineFoldingIsRefused) {
  expect_status("GET / HTTP/1.1\r\nHost: h\r\nMetadata:\r\n true\r\n\r\n",
                ParseStatus::bad_request);
  expect_status("GET / HTTP/1.1\r\nHost: h\r\n\tMetadata: true\r\n\r\n", ParseStatus::bad_request);
}

TEST(HttpParserTest, TransferEncodingIsNotImplemented) {
  expect_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                ParseStatus::not_implemented);
  expect_status("POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding: identity\r\n\r\n",
                ParseStatus::not_implemented);
  EXPECT_EQ(http_status_for(ParseStatus::not_implemented), 501u);
}

TEST(HttpParserTest, SecurityHeadersMayAppearOnlyOnce) {
  for (const char* dup :
       {"Host: a\r\nHost: b", "Metadata: true\r\nMetadata: true",
        "X-IDENTITY-HEADER: a\r\nx-identity-header: a", "secret: a\r\nSecret: b",
        "Content-Length: 0\r\nContent-Length: 0", "Content-Type: a\r\nContent-Type: b"}) {
    SCOPED_TRACE(dup);
    expect_status(std::string("GET / HTTP/1.1\r\n") +
                      (std::string(dup).starts_with("Host") ? "" : "Host: h\r\n") + dup +
                      "\r\n\r\n",
                  ParseStatus::bad_request);
  }
}

TEST(HttpParserTest, MalformedContentLengthIsRefused) {
  for (const char* cl : {"-1", "1a", "", "+1", "1 1", "1,1", "0x10", "99999999999999999999999"}) {
    SCOPED_TRACE(cl);
    expect_status(std::string("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: ") + cl + "\r\n\r\n",
                  ParseStatus::bad_request);
  }
}

TEST(HttpParserTest, OversizedBodyIs413) {
  ParseLimits limits;
  limits.max_body_bytes = 10;
  expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n",
                ParseStatus::body_too_large, limits);
  expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789",
                ParseStatus::complete, limits);
  EXPECT_EQ(http_status_for(ParseStatus::body_too_large), 413u);
}

TEST(HttpParserTest, OversizedHeadIs431) {
  ParseLimits limits;
  limits.max_header_bytes = 64;
  const std::string big = "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: " + std::string(100, 'a');
  expect_status(big, ParseStatus::header_too_large, limits);
  expect_status(big + "\r\n\r\n", ParseStatus::header_too_large, limits);
  EXPECT_EQ(http_status_for(ParseStatus::header_too_large), 431u);
}

TEST(HttpParserTest, TooManyHeaderFieldsIs431) {
  ParseLimits limits;
  limits.max_headers = 3;
  expect_status("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n", ParseStatus::complete, limits);
  expect_status("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
                ParseStatus::header_too_large, limits);
}

TEST(HttpParserTest, UnsupportedVersionsAre505) {
  expect_status("GET / HTTP/2.0\r\nHost: h\r\n\r\n", ParseStatus::bad_version);
  expect_status("GET / HTTP/0.9\r\nHost: h\r\n\r\n", ParseStatus::bad_version);
  expect_status("GET / FTP/1.1\r\nHost: h\r\n\r\n", ParseStatus::bad_request);
  expect_status("GET / http/1.1\r\nHost: h\r\n\r\n", ParseStatus::bad_request);
  EXPECT_EQ(http_status_for(ParseStatus::bad_version), 505u);
}

TEST(HttpParserTest, Http11WithoutHostIsRefused) {
  expect_status("GET / HTTP/1.1\r\nMetadata: true\r\n\r\n", ParseStatus::bad_request);
}

TEST(HttpParserTest, MalformedRequestLinesAreRefused) {
  for (const char* line :
       {"GET  / HTTP/1.1", "GET / HTTP/1.1 ", " GET / HTTP/1.1", "GET /", "GET", "G(T / HTTP/1.1",
        "GET /a b HTTP/1.1", "GET /\x7f HTTP/1.1", "GET /\x80 HTTP/1.1", "GET\t/ HTTP/1.1"}) {
    SCOPED_TRACE(line);
    expect_status(std::string(line) + "\r\nHost: h\r\n\r\n", ParseStatus::bad_request);
  }
}

TEST(HttpParserTest, MalformedHeaderFieldsAreRefused) {
  for (const char* field :
       {"NoColon", ": empty-name", "Bad Name: x", "Bad\tName: x", "Host : h2", "Na(me: x"}) {
    SCOPED_TRACE(field);
    expect_status(std::string("GET / HTTP/1.1\r\nHost: h\r\n") + field + "\r\n\r\n",
                  ParseStatus::bad_request);
  }
}

TEST(HttpParserTest, NulInAHeaderValueIsRefused) {
  expect_status(std::string("GET / HTTP/1.1\r\nHost: h\r\nMetadata: tr\0ue\r\n\r\n", 44),
                ParseStatus::bad_request);
}

TEST(HttpParserTest, OtherErrorsMapTo400) {
  EXPECT_EQ(http_status_for(ParseStatus::bad_request), 400u);
}

}  // namespace
}  // namespace ficbroker
