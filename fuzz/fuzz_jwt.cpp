// fuzz_jwt: the byte-level helpers every untrusted string goes through.
//   looks_like_jwt / decode_jwt_claims / numeric_claim (also on the input as a claims object)
//   base64url_decode / base64url_encode (both round trips)
//   percent_decode / percent_encode / parse_query (round trips)
//   parse_url / Url::host_header / is_loopback / is_loopback_or_link_local
//   ascii_lower / iequals
// The whole input goes to each of them.
#include "ficbroker/util/encoding.hpp"
#include "ficbroker/util/jwt.hpp"
#include "ficbroker/util/url.hpp"

#include "fuzz_common.hpp"

#include <cstddef>
#include <cstdint>
#include <string>

namespace ficbroker::fuzz {
namespace {

bool b64url_alphabet_only(std::string_view s) {
  for (char c : s) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

void check_jwt(std::string_view in) {
  const bool shaped = looks_like_jwt(in);
  const auto claims = decode_jwt_claims(in);
  FUZZ_CHECK("jwt-claims-need-shape", shaped || !claims, printable(in));
  if (shaped) {
    // Three segments, the first two non-empty.
    const auto first = in.find('.');
    const auto second = in.find('.', first + 1);
    FUZZ_CHECK("jwt-shape",
               first != std::string_view::npos && first > 0 && second != std::string_view::npos &&
                   second > first + 1 && in.find('.', second + 1) == std::string_view::npos,
               printable(in));
  }
  if (claims) {
    for (const char* name : {"exp", "nbf", "iat", "ext_expires_in", ""}) {
      (void)numeric_claim(*claims, name);
    }
  }
}

// The input as the claims of an unsigned JWT, so that numeric_claim sees arbitrary JSON without
// the fuzzer having to find it through base64.
void check_claims_json(std::string_view in) {
  if (in.empty() || in.front() != '{') return;
  const std::string token = "eyJhbGciOiJub25lIn0." + base64url_encode(in) + ".c2ln";
  const auto claims = decode_jwt_claims(token);
  if (!claims) return;
  for (const char* name : {"exp", "nbf", "iat"}) (void)numeric_claim(*claims, name);
}

void check_base64(std::string_view in) {
  // bytes -> text -> bytes is the identity.
  const std::string encoded = base64url_encode(in);
  FUZZ_CHECK("b64-encode-alphabet", b64url_alphabet_only(encoded), printable(encoded));
  FUZZ_CHECK("b64-encode-length", encoded.size() == (in.size() * 4 + 2) / 3,
             std::to_string(in.size()) + " bytes -> " + std::to_string(encoded.size()));
  const auto back = base64url_decode(encoded);
  FUZZ_CHECK("b64-roundtrip-bytes", back && *back == in, printable(in));

  // text -> bytes -> text -> bytes gives the same bytes.
  const auto decoded = base64url_decode(in);
  if (decoded) {
    FUZZ_CHECK("b64-decode-length", decoded->size() <= in.size() * 3 / 4, printable(in));
    const std::string again = base64url_encode(*decoded);
    const auto decoded_again = base64url_decode(again);
    FUZZ_CHECK("b64-roundtrip-text", decoded_again && *decoded_again == *decoded, printable(in));
  }
}

void check_percent(std::string_view in) {
  const std::string encoded = percent_encode(in);
  for (bool plus : {false, true}) {
    const auto back = percent_decode(encoded, plus);
    FUZZ_CHECK("pct-roundtrip", back && *back == in, printable(in));
    const auto decoded = percent_decode(in, plus);
    if (decoded) {
      FUZZ_CHECK("pct-decode-length", decoded->size() <= in.size(), printable(in));
    }
  }
  const auto params = parse_query(in);
  if (params) {
    std::string rebuilt;
    for (const auto& [k, v] : *params) {
      if (!rebuilt.empty()) rebuilt.push_back('&');
      rebuilt += percent_encode(k);
      rebuilt.push_back('=');
      rebuilt += percent_encode(v);
    }
    const auto again = parse_query(rebuilt);
    FUZZ_CHECK("query-roundtrip", again && *again == *params, printable(in));
  }
  (void)parse_query(in, false);
}

void check_url(std::string_view in) {
  const auto url = parse_url(in);
  if (!url) return;
  const std::string ctx = printable(in);
  FUZZ_CHECK("url-scheme", url->scheme == "http" || url->scheme == "https", ctx);
  FUZZ_CHECK("url-host", !url->host.empty() && url->host == ascii_lower(url->host), ctx);
  FUZZ_CHECK("url-port", url->port != 0, ctx);
  FUZZ_CHECK("url-path", !url->path.empty() && url->path.front() == '/', ctx);
  FUZZ_CHECK("url-no-query",
             url->path.find_first_of("?#") == std::string::npos &&
                 url->host.find_first_of("/?#@\\ ") == std::string::npos,
             ctx);
  // The host ends up in a Host header, a CONNECT line and SNI: no controls, spaces or delimiters
  // (brackets only around an IPv6 literal, which parse_url strips).
  constexpr std::string_view kBad = "[]<>\"{}|^`/?#@\\";
  bool host_chars = true;
  for (char c : url->host) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7F || kBad.find(c) != std::string_view::npos) host_chars = false;
  }
  FUZZ_CHECK("url-host-chars", host_chars, ctx + " host=" + printable(url->host));
  // Reassembled from its parts, the URL parses to the same parts.
  const std::string rebuilt = url->scheme + "://" + url->host_header() + url->path;
  const auto again = parse_url(rebuilt);
  FUZZ_CHECK("url-roundtrip",
             again && again->scheme == url->scheme && again->host == url->host &&
                 again->port == url->port && again->path == url->path,
             ctx + " -> " + printable(rebuilt));
  if (is_loopback(url->host)) {
    FUZZ_CHECK("url-loopback-is-local", is_loopback_or_link_local(url->host), ctx);
  }
}

void check_case(std::string_view in) {
  const std::string lower = ascii_lower(in);
  FUZZ_CHECK("lower-length", lower.size() == in.size(), printable(in));
  FUZZ_CHECK("iequals-lower", iequals(in, lower) && iequals(lower, in), printable(in));
  FUZZ_CHECK("lower-idempotent", ascii_lower(lower) == lower, printable(in));
  // A Host value or config host with a NUL after a loopback literal ("127.0.0.1\0.evil.example")
  // must not count as loopback: C APIs would see only the part before the NUL.
  if (is_loopback(in)) {
    FUZZ_CHECK("loopback-no-nul", in.find('\0') == std::string_view::npos, printable(in));
  }
  (void)is_loopback_or_link_local(in);
}

}  // namespace
}  // namespace ficbroker::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ficbroker::fuzz;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  check_jwt(input);
  check_claims_json(input);
  check_base64(input);
  check_percent(input);
  check_url(input);
  check_case(input);
  return 0;
}
