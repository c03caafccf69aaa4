#include "ficbroker/util/token.hpp"

#include <openssl/sha.h>

#include <stdexcept>
#include <utility>

namespace ficbroker {

void throw_exception_from_error(const UpstreamError& e, const boost::source_location&) {
  throw std::runtime_error("upstream error: " + e.description);
}

UpstreamError UpstreamError::transient(std::string description, int retry_after_seconds) {
  UpstreamError e;
  e.kind = Kind::transient;
  e.error = "temporarily_unavailable";
  e.description = std::move(description);
  e.retry_after_seconds = retry_after_seconds;
  return e;
}

UpstreamError UpstreamError::throttled(std::string description, int retry_after_seconds) {
  UpstreamError e;
  e.kind = Kind::throttled;
  e.error = "too_many_requests";
  e.description = std::move(description);
  e.retry_after_seconds = retry_after_seconds;
  return e;
}

UpstreamError UpstreamError::permanent(std::string error, std::string description) {
  UpstreamError e;
  e.kind = Kind::permanent;
  e.error = std::move(error);
  e.description = std::move(description);
  return e;
}

UpstreamError UpstreamError::assertion_rejected(std::string error, std::string description) {
  UpstreamError e = permanent(std::move(error), std::move(description));
  e.kind = Kind::assertion_rejected;
  return e;
}

unsigned http_status(const UpstreamError& error) noexcept {
  switch (error.kind) {
    case UpstreamError::Kind::transient:
      return 503;
    case UpstreamError::Kind::throttled:
      return 429;
    case UpstreamError::Kind::permanent:
    case UpstreamError::Kind::assertion_rejected:
      break;
  }
  // A rejected assertion that a fresh one could not fix is the caller's configuration too.
  return 400;
}

std::string resource_to_scope(std::string_view resource) {
  constexpr std::string_view kSuffix = "/.default";
  if (resource.ends_with(kSuffix)) return std::string(resource);
  std::string scope(resource);
  scope += kSuffix;
  return scope;
}

std::string scope_to_resource(std::string_view scope) {
  constexpr std::string_view kSuffix = "/.default";
  if (scope.ends_with(kSuffix)) scope.remove_suffix(kSuffix.size());
  return std::string(scope);
}

std::string fingerprint(std::string_view secret) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(secret.data()), secret.size(), digest);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 4; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 15]);
  }
  return out;
}

bool is_exchange_audience(std::string_view resource) {
  // Scheme and host are case-insensitive to Entra; the cloud variants and paths share the prefix.
  constexpr std::string_view kPrefix = "api://azureadtokenexchange";
  if (resource.size() < kPrefix.size()) return false;
  for (std::size_t i = 0; i < kPrefix.size(); ++i) {
    const char c = resource[i];
    const char lower = (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
    if (lower != kPrefix[i]) return false;
  }
  return true;
}

}  // namespace ficbroker
