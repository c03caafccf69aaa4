// fuzz_token_response: parse_entra_response() and parse_managed_identity_response().
//
// Input: byte 0 = options, bytes 1-2 = HTTP status (big endian), the rest = response body.
//   options bit 0:    0 = Entra, 1 = managed identity
//   options bit 1:    managed identity upstream name: 0 = "IMDS", 1 = "App Service"
//   options bits 2-4: Retry-After header (see kRetryAfter)
//   options bit 5:    clock epoch: 0 = 1'800'000'000, 1 = 1'506'480'000 (the IMDS docs' samples)
// A status above 999 is mapped onto a list of statuses upstreams really send.
//
// Invariants: a success has a non-empty, JWT-shaped access_token whose lifetime is positive and
// at most 400 days; an error has a kind that fits the upstream status, an error code, a one-line
// description, a sane Retry-After; and no part of an error carries the body's access_token (when
// the body has one of at least 16 JWT characters that appears nowhere else in the body).
#include "ficbroker/upstream/token_response.hpp"
#include "ficbroker/util/clock.hpp"
#include "ficbroker/util/jwt.hpp"

#include "fuzz_common.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace ficbroker::fuzz {
namespace {

constexpr std::array<std::string_view, 8> kRetryAfter = {
    "", "5", "120", " 7 ", "-1", "99999", "Wed, 21 Oct 2015 07:28:00 GMT", "0"};
constexpr std::array<unsigned, 16> kStatuses = {200, 200, 200, 200, 400, 401, 403, 404,
                                                408, 410, 429, 500, 502, 503, 504, 302};
constexpr std::int64_t kMaxLifetime = 400LL * 24 * 3600;

bool jwt_chars_only(std::string_view s) {
  for (char c : s) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.' || c == '=';
    if (!ok) return false;
  }
  return true;
}

// Counts the strings (keys and values, at any depth) of `v` that contain `needle`.
std::size_t strings_containing(const boost::json::value& v, std::string_view needle) {
  std::size_t n = 0;
  switch (v.kind()) {
    case boost::json::kind::string:
      return std::string_view(v.get_string()).find(needle) != std::string_view::npos ? 1 : 0;
    case boost::json::kind::array:
      for (const auto& item : v.get_array()) n += strings_containing(item, needle);
      return n;
    case boost::json::kind::object:
      for (const auto& kv : v.get_object()) {
        if (kv.key().find(needle) != std::string_view::npos) ++n;
        n += strings_containing(kv.value(), needle);
      }
      return n;
    default:
      return 0;
  }
}

// The body's access_token when it is a secret worth guarding: at least 16 JWT characters, and
// present in the body only as the access_token value (otherwise it could legitimately reach an
// error text through error_description and the like).
std::optional<std::string> guarded_token(std::string_view body) {
  boost::json::parse_options options;
  options.allow_invalid_utf8 = true;
  boost::system::error_code ec;
  const auto doc = boost::json::parse(body, ec, {}, options);
  if (ec || !doc.is_object()) return std::nullopt;
  const auto* token = string_member(doc.get_object(), "access_token");
  if (!token || token->size() < 16 || !jwt_chars_only(*token)) return std::nullopt;
  if (strings_containing(doc, *token) != 1) return std::nullopt;
  // Fixed error codes use JWT characters too ("temporarily_unavailable" contains the "token"
  // "emporarily_unavailab"); the fixed descriptions have spaces, so no 16-character run.
  for (std::string_view fixed :
       {"temporarily_unavailable", "too_many_requests", "invalid_request"}) {
    if (fixed.find(*token) != std::string_view::npos) return std::nullopt;
  }
  return std::string(*token);
}

void check_success(const Token& t, const Clock& clock, const std::string& ctx) {
  FUZZ_CHECK("success-token", !t.access_token.empty() && looks_like_jwt(t.access_token), ctx);
  FUZZ_CHECK("success-expires-at", t.expires_at > t.issued_at, ctx);
  FUZZ_CHECK("success-issued-now", t.issued_at == clock.now(), ctx);
  const auto now = clock.epoch_seconds();
  FUZZ_CHECK("success-expires-on", t.expires_on > now && t.expires_on - now <= kMaxLifetime,
             ctx + " expires_on=" + std::to_string(t.expires_on));
  FUZZ_CHECK("success-steady-matches-epoch",
             std::chrono::duration_cast<std::chrono::seconds>(t.expires_at - t.issued_at).count() ==
                 t.expires_on - now,
             ctx);
  FUZZ_CHECK("success-ext-expires-on", t.ext_expires_on >= t.expires_on || t.ext_expires_on > now,
             ctx + " ext_expires_on=" + std::to_string(t.ext_expires_on));
}

void check_error(const UpstreamError& e, unsigned status, const std::string& ctx) {
  const std::string ectx = ctx + " -> " + std::to_string(http_status(e)) + " " +
                           printable(e.error) + ": " + printable(e.description);
  FUZZ_CHECK("error-code", !e.error.empty(), ectx);
  // first_line() caps upstream error codes and correlation ids at 64 bytes.
  FUZZ_CHECK("error-code-length", e.error.size() <= 64 && e.correlation_id.size() <= 64, ectx);
  FUZZ_CHECK("error-description", !e.description.empty(), ectx);
  FUZZ_CHECK("error-one-line",
             e.description.find_first_of("\r\n") == std::string::npos &&
                 e.error.find_first_of("\r\n") == std::string::npos &&
                 e.correlation_id.find_first_of("\r\n") == std::string::npos,
             ectx);
  FUZZ_CHECK("error-retry-after", e.retry_after_seconds >= 0 && e.retry_after_seconds <= 3600,
             ectx);
  // The caller's status follows from the kind (http_status); what is left to check is that the
  // kind fits the upstream's answer.
  switch (e.kind) {
    case UpstreamError::Kind::throttled:
      FUZZ_CHECK("error-kind-upstream", status == 429, ectx);
      break;
    case UpstreamError::Kind::transient:
      FUZZ_CHECK("error-kind-retry-after", e.retry_after_seconds > 0, ectx);
      break;
    case UpstreamError::Kind::permanent:
    case UpstreamError::Kind::assertion_rejected:
      FUZZ_CHECK("error-kind-upstream", status != 200, ectx);
      break;
  }
}

}  // namespace
}  // namespace ficbroker::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ficbroker;
  using namespace ficbroker::fuzz;
  if (size < 3) return 0;
  const unsigned options = data[0];
  unsigned status = (static_cast<unsigned>(data[1]) << 8) | data[2];
  if (status > 999) status = kStatuses[status % kStatuses.size()];
  const std::string_view body(reinterpret_cast<const char*>(data + 3), size - 3);
  const std::string_view retry_after = kRetryAfter[(options >> 2) & 7];
  const ManualClock clock((options & 0x20) ? 1'506'480'000 : 1'800'000'000);
  const bool managed = options & 1;
  const std::string_view who = (options & 2) ? "App Service" : "IMDS";

  const TokenResult result =
      managed ? parse_managed_identity_response(status, body, retry_after, clock, who)
              : parse_entra_response(status, body, retry_after, clock);
  const std::string ctx = std::string(managed ? "managed identity" : "Entra") + " HTTP " +
                          std::to_string(status) + " body=" + printable(body);
  if (result) {
    FUZZ_CHECK("success-needs-200", status == 200, ctx);
    check_success(*result, clock, ctx);
    return 0;
  }
  const UpstreamError& e = result.error();
  check_error(e, status, ctx);
  if (const auto token = guarded_token(body)) {
    FUZZ_CHECK("error-leaks-token",
               e.description.find(*token) == std::string::npos &&
                   e.error.find(*token) == std::string::npos &&
                   e.correlation_id.find(*token) == std::string::npos,
               ctx + "\n-> " + printable(e.description));
  }
  return 0;
}
