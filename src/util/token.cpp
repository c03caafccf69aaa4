#include "ficbroker/util/token.hpp"

#include <openssl/sha.h>

#include <stdexcept>

namespace ficbroker {

void throw_exception_from_error(const UpstreamError& e, const boost::source_location&) {
  throw std::runtime_error("upstream error: " + e.description);
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

}  // namespace ficbroker
