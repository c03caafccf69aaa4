#include "ficbroker/upstream/token_response.hpp"

#include "ficbroker/util/encoding.hpp"
#include "ficbroker/util/error.hpp"
#include "ficbroker/util/jwt.hpp"

#include <boost/json.hpp>

#include <cctype>
#include <charconv>

namespace ficbroker {
namespace json = boost::json;

namespace {

constexpr std::int64_t kMaxLifetime = 400LL * 24 * 3600;

std::optional<std::int64_t> as_integer(const json::value* v) {
  if (!v) return std::nullopt;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64() && v->get_uint64() < (1ULL << 62)) {
    return static_cast<std::int64_t>(v->get_uint64());
  }
  if (v->is_double() && v->get_double() > 0 && v->get_double() < 1e15) {
    return static_cast<std::int64_t>(v->get_double());
  }
  if (v->is_string()) {
    const auto& s = v->get_string();
    std::int64_t n = 0;
    const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec == std::errc{} && ptr == s.data() + s.size()) return n;
  }
  return std::nullopt;
}

std::string string_field(const json::object& obj, std::string_view key) {
  const auto* v = obj.if_contains(key);
  if (v && v->is_string()) return std::string(v->get_string());
  return {};
}

// Entra's error_description carries "\r\nTrace ID: …\r\nCorrelation ID: …\r\nTimestamp: …";
// the first line is the part worth showing.
// Replaces anything shaped like a JWT (three base64url segments, the first starting "eyJ") with a
// placeholder: an upstream may echo the assertion it rejected.
std::string redact_jwts(std::string text) {
  std::size_t pos = 0;
  while ((pos = text.find("eyJ", pos)) != std::string::npos) {
    std::size_t end = pos;
    int dots = 0;
    while (end < text.size()) {
      const char c = text[end];
      const bool b64 = std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
      if (c == '.') {
        ++dots;
      } else if (!b64) {
        break;
      }
      ++end;
    }
    if (dots >= 2) {
      text.replace(pos, end - pos, "[redacted token]");
      pos += 16;
    } else {
      pos = end;
    }
  }
  return text;
}

std::string first_line(std::string_view text, std::size_t limit = 600) {
  const auto end = text.find_first_of("\r\n");
  text = text.substr(0, end);
  if (text.size() > limit) text = text.substr(0, limit);
  std::string out;
  out.reserve(text.size());
  for (char c : text) out.push_back(static_cast<unsigned char>(c) < 0x20 ? ' ' : c);
  // Redaction replaces a JWT with a marker that can be longer than a short JWT-shaped run, so the
  // limit is applied again afterwards: a caller's cap holds whatever upstream sent.
  out = redact_jwts(std::move(out));
  if (out.size() > limit) out.resize(limit);
  return out;
}

UpstreamError status_error(unsigned status, std::string_view retry_after, std::string_view who) {
  const int after = parse_retry_after(retry_after);
  const std::string answered = std::string(who) + " answered HTTP " + std::to_string(status);
  UpstreamError e;
  if (status == 429) {
    e = UpstreamError::throttled(std::string(who) + " is throttling requests (HTTP 429)",
                                 after > 0 ? after : 5);
  } else if (status >= 500 || status == 404 || status == 408 || status == 410) {
    // IMDS documents 404/410 as "updating": transient, like 5xx.
    e = UpstreamError::transient(answered, after > 0 ? after : 1);
  } else {
    e = UpstreamError::permanent("invalid_request", answered);
    e.retry_after_seconds = after;
  }
  e.upstream_status = status;
  return e;
}

UpstreamError malformed(std::string_view who, std::string_view what) {
  UpstreamError e = UpstreamError::transient(
      std::string(who) + " answered with an unusable token response: " + std::string(what), 1);
  e.upstream_status = 200;
  return e;
}

bool is_transient_aadsts(int code) {
  switch (code) {
    case 90024:  // RequestBudgetExceededError
    case 90006:
    case 90033:
    case 90090:
    case 90055:  // TenantThrottlingError
    case 50196:  // loop detected
      return true;
    default:
      return false;
  }
}

bool is_assertion_rejected(int code) {
  switch (code) {
    case 700024:  // assertion outside its valid time range
    case 500133:  // assertion expired
    case 50013:   // assertion failed (expired, bad signature...)
      return true;
    default:
      return false;
  }
}

Token make_token(std::string access_token, std::int64_t expires_in, std::int64_t ext_expires_in,
                 const Clock& clock) {
  Token t;
  const auto now_epoch = clock.epoch_seconds();
  const auto now = clock.now();
  t.access_token = std::move(access_token);
  t.issued_at = now;
  t.expires_at = now + std::chrono::seconds(expires_in);
  t.expires_on = now_epoch + expires_in;
  t.ext_expires_on =
      now_epoch +
      (ext_expires_in > 0 && ext_expires_in <= kMaxLifetime ? ext_expires_in : expires_in);
  t.not_before = now_epoch;
  if (auto claims = decode_jwt_claims(t.access_token)) {
    if (auto nbf = numeric_claim(*claims, "nbf")) t.not_before = *nbf;
    // Receipt time + expires_in can land a second after the token's own exp: never promise
    // more than the token has.
    if (auto exp = numeric_claim(*claims, "exp"); exp && *exp<t.expires_on&& * exp> now_epoch) {
      t.expires_at -= std::chrono::seconds(t.expires_on - *exp);
      t.expires_on = *exp;
    }
  }
  return t;
}

}  // namespace

int parse_retry_after(std::string_view header) {
  while (!header.empty() && header.front() == ' ') header.remove_prefix(1);
  while (!header.empty() && header.back() == ' ') header.remove_suffix(1);
  std::uint64_t n = 0;
  const auto [ptr, ec] = std::from_chars(header.data(), header.data() + header.size(), n);
  if (ptr != header.data() + header.size() || header.empty()) return 0;
  if (ec == std::errc::result_out_of_range) return 3600;  // all digits, just huge: cap it
  if (ec != std::errc{}) return 0;
  return n > 3600 ? 3600 : static_cast<int>(n);
}

TokenResult parse_entra_response(unsigned status, std::string_view body,
                                 std::string_view retry_after, const Clock& clock) {
  constexpr std::string_view who = "Entra";
  error_code ec;
  json::value doc = json::parse(body, ec);
  const json::object* obj = (!ec && doc.is_object()) ? &doc.get_object() : nullptr;

  if (status != 200) {
    UpstreamError e = status_error(status, retry_after, who);
    if (!obj) return e;
    const std::string error = string_field(*obj, "error");
    const std::string description = first_line(string_field(*obj, "error_description"));
    if (const auto* codes = obj->if_contains("error_codes");
        codes && codes->is_array() && !codes->get_array().empty()) {
      e.aadsts = static_cast<int>(as_integer(&codes->get_array()[0]).value_or(0));
    }
    e.correlation_id = first_line(string_field(*obj, "correlation_id"), 64);
    if (auto code = first_line(error, 64); code.find_first_not_of(' ') != std::string::npos) {
      e.error = std::move(code);
    }
    if (!description.empty()) e.description = description;
    if (e.kind == UpstreamError::Kind::permanent) {
      if (is_transient_aadsts(e.aadsts) || e.error == "temporarily_unavailable") {
        // Keeps Entra's own error code: only the kind (and so the caller's status) changes.
        e.kind = UpstreamError::Kind::transient;
        if (e.retry_after_seconds == 0) e.retry_after_seconds = 5;
      } else if (is_assertion_rejected(e.aadsts)) {
        e.kind = UpstreamError::Kind::assertion_rejected;
      }
    }
    return e;
  }

  if (!obj) return malformed(who, "not a JSON object");
  const auto* token = obj->if_contains("access_token");
  if (!token || !token->is_string() || token->get_string().empty()) {
    return malformed(who, "no access_token");
  }
  if (!looks_like_jwt(token->get_string())) return malformed(who, "access_token is not a JWT");
  const auto type = string_field(*obj, "token_type");
  if (!type.empty() && !iequals(type, "Bearer")) {
    return malformed(who, "token_type is not Bearer");
  }
  const auto expires_in = as_integer(obj->if_contains("expires_in"));
  if (!expires_in || *expires_in <= 0 || *expires_in > kMaxLifetime) {
    return malformed(who, "expires_in missing or out of range");
  }
  const auto ext = as_integer(obj->if_contains("ext_expires_in")).value_or(0);
  return make_token(std::string(token->get_string()), *expires_in, ext, clock);
}

TokenResult parse_managed_identity_response(unsigned status, std::string_view body,
                                            std::string_view retry_after, const Clock& clock,
                                            std::string_view who) {
  error_code ec;
  json::value doc = json::parse(body, ec);
  const json::object* obj = (!ec && doc.is_object()) ? &doc.get_object() : nullptr;
  if (status != 200) {
    UpstreamError e = status_error(status, retry_after, who);
    if (obj) {
      auto description = first_line(string_field(*obj, "error_description"));
      if (description.empty()) description = first_line(string_field(*obj, "message"));
      if (!description.empty()) e.description = std::string(who) + ": " + description;
      if (e.kind == UpstreamError::Kind::permanent) {
        auto code = first_line(string_field(*obj, "error"), 64);
        if (code.find_first_not_of(' ') != std::string::npos) e.error = std::move(code);
      }
    }
    return e;
  }
  if (!obj) return malformed(who, "not a JSON object");
  const auto* token = obj->if_contains("access_token");
  if (!token || !token->is_string() || token->get_string().empty()) {
    return malformed(who, "no access_token");
  }
  if (!looks_like_jwt(token->get_string())) return malformed(who, "access_token is not a JWT");
  std::optional<std::int64_t> expires_in = as_integer(obj->if_contains("expires_in"));
  if (!expires_in && obj->contains("expires_in")) {
    return malformed(who, "expires_in is not a number");
  }
  if (!expires_in) {
    if (auto on = as_integer(obj->if_contains("expires_on")); on && *on > 0 && *on < (1LL << 40)) {
      expires_in = *on - clock.epoch_seconds();
    }
  }
  if (!expires_in || *expires_in <= 0 || *expires_in > kMaxLifetime) {
    return malformed(who, "expires_in/expires_on missing or out of range");
  }
  const auto ext = as_integer(obj->if_contains("ext_expires_in")).value_or(0);
  return make_token(std::string(token->get_string()), *expires_in, ext, clock);
}

UpstreamError transport_error(const error_code& ec, std::string_view who) {
  std::string description;
  if (ec == errc::upstream_timeout) {
    description = std::string(who) + " did not answer in time";
  } else if (ec == errc::too_large) {
    description = std::string(who) + " answered with a response over the size limit";
  } else {
    description = std::string(who) + " could not be reached: " + ec.message();
  }
  return UpstreamError::transient(std::move(description), 1);
}

}  // namespace ficbroker
