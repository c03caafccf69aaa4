// The emulator's pure decision logic: the world (identities, apps with FICs, tenants), the
// Entra client-credentials/FIC checks, scope → resource, the Entra error catalogue and the fault
// rule queue. No sockets, no clocks: every time-dependent function takes `now` (epoch seconds).
#pragma once

#include "ficbroker/util/encoding.hpp"

#include <boost/json/object.hpp>

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ficbroker::emulator {

inline constexpr std::string_view kTokenExchangeAudience = "api://AzureADTokenExchange";
inline constexpr std::string_view kJwtBearerAssertionType =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Claim the emulator's Entra endpoint puts into every token it issues: "this token was obtained
/// with a federated identity credential" (so it may not be used as one: AADSTS700231).
inline constexpr std::string_view kFicDerivedClaim = "xms_ficd";

// ---------------------------------------------------------------------------------------------
// World

/// A user-assigned managed identity served by the IMDS / App Service endpoints.
struct Identity {
  std::string name;
  std::string client_id;
  std::string object_id;
  std::string resource_id;
};

/// A federated identity credential on an app registration. Matching is exact and case-sensitive.
struct Fic {
  std::string name;
  std::string issuer;
  std::string subject;
  std::vector<std::string> audiences;
  /// AADSTS70021 is answered for this FIC until this many seconds after the FIC epoch.
  std::int64_t propagation_delay_s = 0;
};

/// A (multi-tenant) app registration in the home tenant.
struct App {
  std::string name;
  std::string client_id;
  std::vector<Fic> fics;
};

/// A resource tenant the Entra endpoint knows.
struct Tenant {
  std::string id;
  std::vector<std::string> service_principals;  ///< client ids provisioned in this tenant
  std::vector<std::string> resources;           ///< resource identifiers (scope minus "/.default")
};

struct World {
  std::string home_tenant;
  std::string identity_header;
  std::vector<Identity> identities;
  std::vector<App> apps;
  std::vector<Tenant> tenants;
  std::vector<std::string> external_issuers;

  /// `https://login.microsoftonline.com/{home}/v2.0` — the issuer of IMDS tokens for
  /// api://AzureADTokenExchange and the issuer MI-as-FIC credentials name.
  std::string home_issuer_v2() const;
  /// `https://sts.windows.net/{home}/` — the issuer of other IMDS tokens.
  std::string home_issuer_v1() const;

  /// Case-insensitive (GUIDs): Entra accepts any case for client and tenant ids.
  const App* find_app(std::string_view client_id) const;
  const Tenant* find_tenant(std::string_view tenant_id) const;
  bool is_external_issuer(std::string_view issuer) const;
};

/// The embedded default world used by the demo.
std::string_view default_world_json();

/// Parses and validates a world document (unknown keys are rejected so typos surface).
/// On failure returns nullopt and sets `error` to "<json path>: <problem>".
std::optional<World> parse_world(std::string_view json_text, std::string& error);

// ---------------------------------------------------------------------------------------------
// Managed identity selection (IMDS and App Service query parameters)

enum class MiEndpoint { imds, app_service };

struct IdentitySelection {
  const Identity* identity = nullptr;  ///< set on success
  std::string error;                   ///< error_description when identity is null
};

/// IMDS accepts client_id | object_id | msi_res_id | mi_res_id; App Service accepts
/// client_id | principal_id | object_id | mi_res_id. No selector → the first identity.
/// Ids compare case-insensitively (GUIDs and ARM resource ids are case-insensitive).
IdentitySelection select_identity(const World& world, const QueryParams& query, MiEndpoint ep);

// ---------------------------------------------------------------------------------------------
// Entra errors

/// One Entra error answer (the JSON body is built by entra_error_json).
struct EntraError {
  unsigned http_status = 400;
  std::string error;  ///< OAuth error, e.g. "invalid_client"
  std::uint32_t code = 0;
  std::string text;  ///< description after "AADSTSnnnn: "
};

/// Values that AADSTS message templates mention. Empty members print as empty strings.
struct ErrorContext {
  std::string tenant;
  std::string client_id;
  std::string param;  ///< offending form parameter
  std::string grant_type;
  std::string issuer;
  std::string subject;
  std::string audience;
  std::string scope;
  std::string resource;
  std::int64_t now = 0;
  std::int64_t nbf = 0;
  std::int64_t exp = 0;
};

/// The catalogue entry for `code` (status, OAuth error, realistic text with `ctx` filled in).
/// Unknown codes get status 400, "invalid_request" and a generic text.
EntraError entra_error(std::uint32_t code, const ErrorContext& ctx);

/// Entra's error JSON: error, error_description ("AADSTSn: text\r\nTrace ID: …\r\nCorrelation ID:
/// …\r\nTimestamp: YYYY-MM-DD HH:MM:SSZ"), error_codes, timestamp, trace_id, correlation_id,
/// error_uri.
std::string entra_error_json(const EntraError& err, std::string_view trace_id,
                             std::string_view correlation_id, std::int64_t now);

/// "YYYY-MM-DD HH:MM:SSZ" (UTC).
std::string format_entra_timestamp(std::int64_t epoch_s);

// ---------------------------------------------------------------------------------------------
// JWTs and the FIC exchange

/// A compact JWS split and decoded. The signature is not checked here.
struct ParsedJwt {
  boost::json::object header;
  boost::json::object payload;
  std::string signing_input;  ///< "b64(header).b64(payload)"
  std::string signature;      ///< raw bytes
};

/// nullopt unless the token is three base64url parts whose first two are JSON objects.
std::optional<ParsedJwt> parse_jwt(std::string_view token);

/// Which emulator key must have signed an assertion from a given issuer.
enum class IssuerKey { entra, oidc };

/// Signature check used by evaluate_exchange (injected so the policy is testable without keys).
using SignatureCheck = std::function<bool(IssuerKey, const ParsedJwt&)>;

/// The outcome of one token request to POST /{tenant}/oauth2/v2.0/token.
struct ExchangeOutcome {
  std::optional<EntraError> error;  ///< set when the request is refused
  // On success:
  const Tenant* tenant = nullptr;
  const App* app = nullptr;
  std::string resource;  ///< the scope before its last '/', as requested (the token's aud)
  // Filled as far as the checks got (for logs and tests):
  ErrorContext ctx;
};

/// Resource of a client-credentials scope: exactly one scope ending in "/.default"; the resource
/// is everything before the last '/'. nullopt when the scope is not of that form.
std::optional<std::string> resource_from_scope(std::string_view scope);

/// True when `resource` is one of the tenant's resources, compared exactly or with/without one
/// trailing slash.
bool tenant_has_resource(const Tenant& tenant, std::string_view resource);

/// Applies Entra's checks, in order: tenant (90002); grant_type (900144/70003), duplicated
/// parameters (9000411), client_id/client_assertion_type/client_assertion/scope presence
/// (900144); app + service principal in the tenant (700016); assertion: malformed (50027),
/// unknown issuer (700211), signature (7000274), FIC-derived (700231), time range (700024);
/// FIC match on issuer (700211), subject (700213), audience (700212), propagation (70021);
/// scope (70011) and resource (500011).
/// `form` is nullopt when the body could not be decoded (90100). `fic_epoch` is when FICs were
/// "created" (emulator start), for propagation_delay_s.
ExchangeOutcome evaluate_exchange(const World& world, std::string_view tenant,
                                  const std::optional<QueryParams>& form,
                                  const SignatureCheck& check_signature, std::int64_t now,
                                  std::int64_t fic_epoch);

/// Best-effort ErrorContext for a token request that is *not* evaluated (an injected fault): the
/// form's client_id/scope/resource and the assertion's unverified iss/sub/aud/nbf/exp.
ErrorContext describe_exchange_request(std::string_view tenant, const QueryParams& form,
                                       std::int64_t now);

/// A stable fake service-principal object id for (tenant, app): a UUID built from SHA-256.
std::string service_principal_object_id(std::string_view tenant, std::string_view client_id);

// ---------------------------------------------------------------------------------------------
// Faults

enum class FaultTarget { imds, app_service, entra, any };
enum class FaultAction {
  delay,        ///< answer normally after delay_ms (also used when only delay_ms is given)
  status,       ///< HTTP status with an endpoint-shaped error body
  reset,        ///< close the connection with RST, no answer
  garbage,      ///< 200 with a non-JSON body
  truncate,     ///< 200 whose Content-Length exceeds the bytes sent, then close
  huge,         ///< 200 with a > 2 MiB JSON body
  hang,         ///< never answer; wait for the client to give up
  not_jwt,      ///< 200 token response whose access_token is "not-a-jwt"
  wrong_types,  ///< 200 token response with expires_in (and expires_on) as objects
  interim,      ///< the real answer, after interim 103 Early Hints and 100 Continue responses
};

struct FaultRule {
  FaultTarget target = FaultTarget::any;
  FaultAction action = FaultAction::status;
  unsigned status = 0;  ///< 0: the endpoint's default (503, or the AADSTS code's status)
  std::optional<std::string> retry_after;
  std::optional<std::uint32_t> aadsts;
  std::int64_t delay_ms = 0;
  std::int64_t count = 1;  ///< remaining applications; -1 = until cleared
};

/// Parses a POST /_emulator/faults body. nullopt with `error` set on bad input.
std::optional<FaultRule> parse_fault_rule(const boost::json::object& body, std::string& error);
boost::json::object fault_rule_to_json(const FaultRule& rule);
std::string_view to_string(FaultTarget target);
std::string_view to_string(FaultAction action);

/// Ordered fault rules: the first rule whose target matches a request applies and loses one use.
class FaultQueue {
 public:
  void add(FaultRule rule) { rules_.push_back(std::move(rule)); }
  void clear() noexcept { rules_.clear(); }
  /// The rule to apply to a request for `target` (never FaultTarget::any), consuming one use.
  std::optional<FaultRule> take(FaultTarget target);
  const std::deque<FaultRule>& rules() const noexcept { return rules_; }

 private:
  std::deque<FaultRule> rules_;
};

}  // namespace ficbroker::emulator
