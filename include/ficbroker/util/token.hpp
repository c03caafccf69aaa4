// A token as the cache holds it, and the error an upstream call can end in.
#pragma once

#include "ficbroker/util/clock.hpp"

#include <boost/assert/source_location.hpp>
#include <boost/system/result.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace ficbroker {

struct Token {
  std::string access_token;
  std::int64_t expires_on = 0;      // Unix epoch seconds
  std::int64_t not_before = 0;      // Unix epoch seconds
  std::int64_t ext_expires_on = 0;  // Unix epoch seconds
  SteadyTime issued_at{};           // when ficbroker received it
  SteadyTime expires_at{};          // the same instant as expires_on, on the steady clock
};

/// Why an upstream call (IMDS, App Service, Entra, a token file) did not give a token.
/// `description` is safe to show a caller: it never contains a token or an assertion. Build one
/// with the named constructors; the caller's HTTP status follows from `kind` (http_status).
struct UpstreamError {
  enum class Kind {
    permanent,          // configuration error: retrying will not help (4xx to the caller)
    transient,          // timeouts, resets, 5xx: retry later (503 to the caller)
    throttled,          // 429 upstream
    assertion_rejected  // AADSTS700024 and kin: a fresh assertion may help
  };
  Kind kind = Kind::transient;
  std::string error;            // OAuth-style error code, e.g. invalid_client
  std::string description;      // human text, with the AADSTS code when Entra gave one
  int retry_after_seconds = 0;  // 0: none
  int aadsts = 0;
  std::string correlation_id;
  unsigned upstream_status = 0;  // the upstream's HTTP status; 0 for transport failures

  /// Worth retrying soon: error code "temporarily_unavailable".
  static UpstreamError transient(std::string description, int retry_after_seconds);
  /// The upstream asked us to slow down: error code "too_many_requests".
  static UpstreamError throttled(std::string description, int retry_after_seconds);
  /// Retrying will not help; `error` is the OAuth-style code to show (e.g. "invalid_request").
  static UpstreamError permanent(std::string error, std::string description);
  /// Entra refused the assertion itself (expired, not yet valid): a fresh one may help.
  static UpstreamError assertion_rejected(std::string error, std::string description);
};

/// The HTTP status a caller is answered with: 503 transient, 429 throttled, 400 otherwise.
unsigned http_status(const UpstreamError& error) noexcept;

/// Lets boost::system::result<T, UpstreamError>::value() throw on misuse.
[[noreturn]] void throw_exception_from_error(const UpstreamError& e,
                                             const boost::source_location& loc);

using TokenResult = boost::system::result<Token, UpstreamError>;

/// The OAuth 2 scope for a v1 resource: `resource + "/.default"`, keeping a trailing slash
/// (`https://database.windows.net/` -> `https://database.windows.net//.default`).
std::string resource_to_scope(std::string_view resource);
/// The inverse for `scope=` requests: strips one trailing `/.default`.
std::string scope_to_resource(std::string_view scope);

/// Whether `resource` is a FIC exchange audience (api://AzureADTokenExchange, its cloud variants
/// …USGov and …China, any case, any path): a token for it is an assertion.
bool is_exchange_audience(std::string_view resource);

/// A short, non-reversible fingerprint of a secret for logs (first 8 hex digits of SHA-256).
std::string fingerprint(std::string_view secret);

}  // namespace ficbroker
