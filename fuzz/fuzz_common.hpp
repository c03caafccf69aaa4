// Shared helpers for the libFuzzer targets: invariant checks that abort with a readable message
// (libFuzzer then saves the input and prints the stack), and the JSON checks several targets share.
#pragma once

#include "ficbroker/config/config.hpp"
#include "ficbroker/core/target_resolution.hpp"
#include "ficbroker/front_door/router.hpp"

#include <boost/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

namespace ficbroker::fuzz {

/// Checks named in FICBROKER_FUZZ_IGNORE (comma-separated) are skipped, so that a long run can keep
/// exploring past a finding that is already saved and reported. Empty by default: every check is
/// fatal, which is what CI wants.
inline bool ignored(std::string_view check) {
  static const std::string list = [] {
    const char* env = std::getenv("FICBROKER_FUZZ_IGNORE");
    return std::string(env ? env : "");
  }();
  std::string_view rest = list;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    if (rest.substr(0, comma) == check) return true;
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return false;
}

/// At most `limit` bytes of `text`, with anything unprintable escaped, for failure messages.
inline std::string printable(std::string_view text, std::size_t limit = 400) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < limit; ++i) {
    const auto u = static_cast<unsigned char>(text[i]);
    if (u >= 0x20 && u < 0x7F && u != '\\') {
      out.push_back(static_cast<char>(u));
    } else {
      out += "\\x";
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  if (text.size() > limit) out += "...";
  return out;
}

[[noreturn]] inline void fail(const char* check, const char* file, int line,
                              const std::string& detail) {
  std::fprintf(stderr, "\n==FUZZ CHECK FAILED== [%s] at %s:%d\n%s\n", check, file, line,
               detail.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace ficbroker::fuzz

/// Aborts (a libFuzzer crash) unless `cond` holds or the check `name` is ignored. `detail` is only
/// evaluated on failure.
#define FUZZ_CHECK(name, cond, detail)                                          \
  do {                                                                          \
    if (!(cond) && !::ficbroker::fuzz::ignored(name)) {                         \
      ::ficbroker::fuzz::fail((name), __FILE__, __LINE__, std::string(detail)); \
    }                                                                           \
  } while (0)

namespace ficbroker::fuzz {

/// Parses `text` as JSON. Invalid UTF-8 is accepted here; `valid_utf8` says whether a strict parser
/// (what clients use) would also accept it.
struct JsonCheck {
  std::optional<boost::json::value> value;
  bool valid_utf8 = false;
};

inline JsonCheck parse_json(std::string_view text) {
  JsonCheck out;
  boost::json::parse_options lenient;
  lenient.allow_invalid_utf8 = true;
  boost::system::error_code ec;
  auto value = boost::json::parse(text, ec, {}, lenient);
  if (ec) return out;
  out.value = std::move(value);
  boost::system::error_code strict_ec;
  (void)boost::json::parse(text, strict_ec);
  out.valid_utf8 = !strict_ec;
  return out;
}

inline const boost::json::string* string_member(const boost::json::object& obj,
                                                std::string_view key) {
  const auto* v = obj.if_contains(key);
  return v && v->is_string() ? &v->get_string() : nullptr;
}

/// The invariants of every error answer ficbroker decides without I/O: a 4xx/5xx status and a
/// JSON object body with string `error` and `error_description` (plus `statusCode`/`message` on
/// App Service routes), valid UTF-8 so that every SDK's JSON parser accepts it.
inline void check_error_reply(const Reply& reply, Route route, const char* where) {
  const std::string ctx = std::string(where) + ": HTTP " + std::to_string(reply.status) +
                          " body=" + printable(reply.body);
  FUZZ_CHECK("reply-status", reply.status >= 400 && reply.status <= 599, ctx);
  FUZZ_CHECK("reply-content-type",
             reply.content_type != nullptr &&
                 std::string_view(reply.content_type).starts_with("application/json"),
             ctx);
  FUZZ_CHECK("reply-retry-after", reply.retry_after_seconds >= 0, ctx);
  const auto json = parse_json(reply.body);
  // Structure first; when a structural check is ignored, stop before dereferencing.
  if (!json.value || !json.value->is_object()) {
    FUZZ_CHECK("reply-json", false, ctx);
    return;
  }
  const auto& obj = json.value->get_object();
  const auto* error = string_member(obj, "error");
  const auto* description = string_member(obj, "error_description");
  FUZZ_CHECK("reply-json", error != nullptr && !error->empty() && description != nullptr, ctx);
  if (is_app_service_route(route)) {
    const auto* code = obj.if_contains("statusCode");
    const auto* message = string_member(obj, "message");
    FUZZ_CHECK("reply-json",
               code && code->is_int64() && code->get_int64() == static_cast<int>(reply.status) &&
                   message && description && *message == *description,
               ctx);
  }
  FUZZ_CHECK("reply-utf8", json.valid_utf8,
             ctx + "\n(the body is not valid UTF-8, so it is not JSON to a strict client)");
}

/// The identity lookup as the Broker starts it: the configured ids of the sources that mint
/// plain managed-identity tokens (the fuzzers have no sources to learn more from).
inline SourceIdentities configured_identities(const Config& config) {
  SourceIdentities ids;
  for (const auto& [name, s] : config.sources) {
    if (s.type == SourceType::imds || s.type == SourceType::app_service) {
      ids.emplace(name, IdentityIds{s.client_id, s.object_id, s.resource_id});
    }
  }
  return ids;
}

}  // namespace ficbroker::fuzz
