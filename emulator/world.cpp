#include "world.hpp"

#include <boost/json/array.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <openssl/evp.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <initializer_list>
#include <set>
#include <utility>

namespace ficbroker::emulator {
namespace json = boost::json;

namespace {

constexpr std::string_view kDefaultWorld = R"json({
  "home_tenant": "11111111-1111-1111-1111-111111111111",
  "identity_header": "emulator-identity-header",
  "identities": [
    {"name": "uami-demo", "client_id": "aaaaaaaa-0000-0000-0000-000000000001",
     "object_id": "bbbbbbbb-0000-0000-0000-000000000001",
     "resource_id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-demo/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uami-demo"},
    {"name": "uami-other", "client_id": "aaaaaaaa-0000-0000-0000-000000000002",
     "object_id": "bbbbbbbb-0000-0000-0000-000000000002",
     "resource_id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-demo/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uami-other"}
  ],
  "apps": [
    {"name": "ficbroker-demo-app", "client_id": "cccccccc-0000-0000-0000-000000000001",
     "fics": [
       {"name": "uami-demo",
        "issuer": "https://login.microsoftonline.com/11111111-1111-1111-1111-111111111111/v2.0",
        "subject": "bbbbbbbb-0000-0000-0000-000000000001",
        "audiences": ["api://AzureADTokenExchange"]},
       {"name": "aks-sa", "issuer": "https://oidc.emulator.test/cluster",
        "subject": "system:serviceaccount:default:workload",
        "audiences": ["api://AzureADTokenExchange"]}
     ]},
    {"name": "app-without-fic-for-other", "client_id": "cccccccc-0000-0000-0000-000000000002",
     "fics": [
       {"name": "x",
        "issuer": "https://login.microsoftonline.com/11111111-1111-1111-1111-111111111111/v2.0",
        "subject": "bbbbbbbb-0000-0000-0000-000000000099",
        "audiences": ["api://AzureADTokenExchange"]}
     ]}
  ],
  "tenants": [
    {"id": "22222222-2222-2222-2222-222222222222",
     "service_principals": ["cccccccc-0000-0000-0000-000000000001",
                            "cccccccc-0000-0000-0000-000000000002"],
     "resources": ["https://cognitiveservices.azure.com", "https://ai.azure.com",
                   "https://graph.microsoft.com", "https://vault.azure.net",
                   "https://database.windows.net/", "https://management.azure.com/",
                   "https://storage.azure.com"]},
    {"id": "33333333-3333-3333-3333-333333333333",
     "service_principals": ["cccccccc-0000-0000-0000-000000000001"],
     "resources": ["https://graph.microsoft.com", "https://vault.azure.net"]},
    {"id": "44444444-4444-4444-4444-444444444444", "service_principals": [],
     "resources": ["https://graph.microsoft.com"]}
  ],
  "external_issuers": [{"issuer": "https://oidc.emulator.test/cluster"}]
})json";

// Entra's documented limit of federated identity credentials per application.
constexpr std::size_t kMaxFicsPerApp = 20;

std::optional<std::int64_t> as_int64(const json::value* v) {
  if (v == nullptr) return std::nullopt;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64()) {
    if (v->get_uint64() > static_cast<std::uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<std::int64_t>(v->get_uint64());
  }
  if (v->is_double()) {
    const double d = v->get_double();
    if (d != d || d < -9.2e18 || d > 9.2e18) return std::nullopt;
    return static_cast<std::int64_t>(d);
  }
  return std::nullopt;
}

// Reads typed members of JSON objects, recording the first problem with its JSON path.
class Reader {
 public:
  explicit Reader(std::string& error) : error_(error) {}

  bool fail(const std::string& path, std::string_view problem) {
    if (error_.empty()) error_ = path + ": " + std::string(problem);
    return false;
  }

  // Rejects members not in `allowed` ("comment" and "description" are always allowed).
  bool only_keys(const json::object& obj, const std::string& path,
                 std::initializer_list<std::string_view> allowed) {
    for (const auto& member : obj) {
      const std::string_view key = member.key();
      if (key == "comment" || key == "description") continue;
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        return fail(path + "." + std::string(key), "unknown key");
      }
    }
    return true;
  }

  bool string(const json::object& obj, std::string_view key, const std::string& path,
              std::string& out, bool required = true) {
    const json::value* v = obj.if_contains(key);
    const std::string where = path + "." + std::string(key);
    if (v == nullptr) return required ? fail(where, "missing") : true;
    if (!v->is_string()) return fail(where, "must be a string");
    out = std::string(v->get_string());
    if (required && out.empty()) return fail(where, "must not be empty");
    return true;
  }

  bool string_array(const json::object& obj, std::string_view key, const std::string& path,
                    std::vector<std::string>& out) {
    const json::value* v = obj.if_contains(key);
    const std::string where = path + "." + std::string(key);
    if (v == nullptr) return fail(where, "missing");
    if (!v->is_array()) return fail(where, "must be an array of strings");
    const json::array& arr = v->get_array();
    for (std::size_t i = 0; i < arr.size(); ++i) {
      if (!arr[i].is_string()) {
        return fail(where + "[" + std::to_string(i) + "]", "must be a string");
      }
      out.emplace_back(arr[i].get_string());
    }
    return true;
  }

  const json::array* array(const json::object& obj, std::string_view key, const std::string& path) {
    const json::value* v = obj.if_contains(key);
    const std::string where = path + "." + std::string(key);
    if (v == nullptr) {
      fail(where, "missing");
      return nullptr;
    }
    if (!v->is_array()) {
      fail(where, "must be an array");
      return nullptr;
    }
    return &v->get_array();
  }

  const json::object* object(const json::value& v, const std::string& path) {
    if (!v.is_object()) {
      fail(path, "must be an object");
      return nullptr;
    }
    return &v.get_object();
  }

 private:
  std::string& error_;
};

bool parse_fic(Reader& r, const json::value& v, const std::string& path, Fic& fic) {
  const json::object* o = r.object(v, path);
  if (o == nullptr) return false;
  if (!r.only_keys(*o, path, {"name", "issuer", "subject", "audiences", "propagation_delay_s"})) {
    return false;
  }
  if (!r.string(*o, "name", path, fic.name) || !r.string(*o, "issuer", path, fic.issuer) ||
      !r.string(*o, "subject", path, fic.subject) ||
      !r.string_array(*o, "audiences", path, fic.audiences)) {
    return false;
  }
  if (fic.audiences.empty()) return r.fail(path + ".audiences", "must not be empty");
  if (const json::value* d = o->if_contains("propagation_delay_s")) {
    const auto delay = as_int64(d);
    if (!delay || *delay < 0) {
      return r.fail(path + ".propagation_delay_s", "must be a non-negative number");
    }
    fic.propagation_delay_s = *delay;
  }
  return true;
}

bool parse_world_object(Reader& r, const json::object& root, World& w) {
  const std::string p = "$";
  if (!r.only_keys(root, p,
                   {"home_tenant", "identity_header", "identities", "apps", "tenants",
                    "external_issuers"})) {
    return false;
  }
  if (!r.string(root, "home_tenant", p, w.home_tenant) ||
      !r.string(root, "identity_header", p, w.identity_header)) {
    return false;
  }

  const json::array* ids = r.array(root, "identities", p);
  if (ids == nullptr) return false;
  if (ids->empty()) return r.fail(p + ".identities", "must not be empty");
  for (std::size_t i = 0; i < ids->size(); ++i) {
    const std::string path = p + ".identities[" + std::to_string(i) + "]";
    const json::object* o = r.object((*ids)[i], path);
    if (o == nullptr) return false;
    Identity id;
    if (!r.only_keys(*o, path, {"name", "client_id", "object_id", "resource_id"}) ||
        !r.string(*o, "name", path, id.name) || !r.string(*o, "client_id", path, id.client_id) ||
        !r.string(*o, "object_id", path, id.object_id) ||
        !r.string(*o, "resource_id", path, id.resource_id)) {
      return false;
    }
    w.identities.push_back(std::move(id));
  }

  const json::array* apps = r.array(root, "apps", p);
  if (apps == nullptr) return false;
  for (std::size_t i = 0; i < apps->size(); ++i) {
    const std::string path = p + ".apps[" + std::to_string(i) + "]";
    const json::object* o = r.object((*apps)[i], path);
    if (o == nullptr) return false;
    App app;
    if (!r.only_keys(*o, path, {"name", "client_id", "fics"}) ||
        !r.string(*o, "name", path, app.name) || !r.string(*o, "client_id", path, app.client_id)) {
      return false;
    }
    const json::array* fics = r.array(*o, "fics", path);
    if (fics == nullptr) return false;
    if (fics->size() > kMaxFicsPerApp) {
      return r.fail(path + ".fics", "at most 20 federated identity credentials per app");
    }
    std::set<std::pair<std::string, std::string>> issuer_subjects;
    for (std::size_t j = 0; j < fics->size(); ++j) {
      const std::string fpath = path + ".fics[" + std::to_string(j) + "]";
      Fic fic;
      if (!parse_fic(r, (*fics)[j], fpath, fic)) return false;
      if (!issuer_subjects.emplace(fic.issuer, fic.subject).second) {
        return r.fail(fpath, "issuer and subject combination must be unique per app");
      }
      app.fics.push_back(std::move(fic));
    }
    w.apps.push_back(std::move(app));
  }

  const json::array* tenants = r.array(root, "tenants", p);
  if (tenants == nullptr) return false;
  for (std::size_t i = 0; i < tenants->size(); ++i) {
    const std::string path = p + ".tenants[" + std::to_string(i) + "]";
    const json::object* o = r.object((*tenants)[i], path);
    if (o == nullptr) return false;
    Tenant t;
    if (!r.only_keys(*o, path, {"id", "service_principals", "resources"}) ||
        !r.string(*o, "id", path, t.id) ||
        !r.string_array(*o, "service_principals", path, t.service_principals) ||
        !r.string_array(*o, "resources", path, t.resources)) {
      return false;
    }
    w.tenants.push_back(std::move(t));
  }

  if (root.contains("external_issuers")) {
    const json::array* issuers = r.array(root, "external_issuers", p);
    if (issuers == nullptr) return false;
    for (std::size_t i = 0; i < issuers->size(); ++i) {
      const std::string path = p + ".external_issuers[" + std::to_string(i) + "]";
      const json::object* o = r.object((*issuers)[i], path);
      if (o == nullptr) return false;
      std::string issuer;
      if (!r.only_keys(*o, path, {"issuer"}) || !r.string(*o, "issuer", path, issuer)) {
        return false;
      }
      w.external_issuers.push_back(std::move(issuer));
    }
  }

  // Ids must be unique, or lookups would silently pick the first.
  std::set<std::string> seen;
  for (std::size_t i = 0; i < w.identities.size(); ++i) {
    if (!seen.insert("mi:" + ascii_lower(w.identities[i].client_id)).second ||
        !seen.insert("mo:" + ascii_lower(w.identities[i].object_id)).second) {
      return r.fail(p + ".identities[" + std::to_string(i) + "]", "duplicate client_id/object_id");
    }
  }
  for (std::size_t i = 0; i < w.apps.size(); ++i) {
    if (!seen.insert("app:" + ascii_lower(w.apps[i].client_id)).second) {
      return r.fail(p + ".apps[" + std::to_string(i) + "]", "duplicate client_id");
    }
  }
  for (std::size_t i = 0; i < w.tenants.size(); ++i) {
    if (!seen.insert("t:" + ascii_lower(w.tenants[i].id)).second) {
      return r.fail(p + ".tenants[" + std::to_string(i) + "]", "duplicate id");
    }
  }
  return true;
}

std::string format_utc(std::int64_t epoch_s, const char* fmt) {
  const std::time_t t = static_cast<std::time_t>(epoch_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  const std::size_t n = std::strftime(buf, sizeof buf, fmt, &tm);
  return std::string(buf, n);
}

// The precise format Entra uses inside AADSTS700024 texts.
std::string format_iso_7(std::int64_t epoch_s) {
  return format_utc(epoch_s, "%Y-%m-%dT%H:%M:%S") + ".0000000Z";
}

constexpr std::string_view kFicDocs =
    "https://learn.microsoft.com/entra/workload-id/workload-identity-federation";

std::string_view trim_spaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// World

std::string World::home_issuer_v2() const {
  return "https://login.microsoftonline.com/" + home_tenant + "/v2.0";
}

std::string World::home_issuer_v1() const { return "https://sts.windows.net/" + home_tenant + "/"; }

const App* World::find_app(std::string_view client_id) const {
  for (const App& app : apps) {
    if (iequals(app.client_id, client_id)) return &app;
  }
  return nullptr;
}

const Tenant* World::find_tenant(std::string_view tenant_id) const {
  for (const Tenant& t : tenants) {
    if (iequals(t.id, tenant_id)) return &t;
  }
  return nullptr;
}

bool World::is_external_issuer(std::string_view issuer) const {
  return std::find(external_issuers.begin(), external_issuers.end(), issuer) !=
         external_issuers.end();
}

std::string_view default_world_json() { return kDefaultWorld; }

std::optional<World> parse_world(std::string_view json_text, std::string& error) {
  error.clear();
  boost::system::error_code ec;
  const json::value root = json::parse(json_text, ec);
  if (ec) {
    error = "$: invalid JSON: " + ec.message();
    return std::nullopt;
  }
  Reader reader(error);
  const json::object* obj = reader.object(root, "$");
  World world;
  if (obj == nullptr || !parse_world_object(reader, *obj, world)) return std::nullopt;
  return world;
}

// ---------------------------------------------------------------------------------------------
// Managed identity selection

IdentitySelection select_identity(const World& world, const QueryParams& query, MiEndpoint ep) {
  enum Field { kClientId, kObjectId, kResourceId };
  struct Selector {
    std::string_view name;
    Field field;
  };
  static constexpr Selector kImds[] = {{"client_id", kClientId},
                                       {"object_id", kObjectId},
                                       {"msi_res_id", kResourceId},
                                       {"mi_res_id", kResourceId}};
  static constexpr Selector kAppService[] = {{"client_id", kClientId},
                                             {"principal_id", kObjectId},
                                             {"object_id", kObjectId},
                                             {"mi_res_id", kResourceId}};
  const auto& selectors = ep == MiEndpoint::imds ? kImds : kAppService;

  const Selector* chosen = nullptr;
  const std::string* value = nullptr;
  for (const auto& [key, val] : query) {
    for (const Selector& s : selectors) {
      if (key != s.name) continue;
      if (chosen != nullptr && (chosen->name != s.name || *value != val)) {
        return {nullptr,
                "Only one of the identity parameters (client_id, object_id/principal_id, "
                "msi_res_id/mi_res_id) may be specified"};
      }
      chosen = &s;
      value = &val;
    }
  }
  if (chosen == nullptr) return {&world.identities.front(), {}};
  for (const Identity& id : world.identities) {
    const std::string& candidate = chosen->field == kClientId   ? id.client_id
                                   : chosen->field == kObjectId ? id.object_id
                                                                : id.resource_id;
    if (iequals(candidate, *value)) return {&id, {}};
  }
  return {nullptr, "Identity not found"};
}

// ---------------------------------------------------------------------------------------------
// Entra errors

EntraError entra_error(std::uint32_t code, const ErrorContext& c) {
  auto e = [code](unsigned status, std::string error, std::string text) {
    return EntraError{status, std::move(error), code, std::move(text)};
  };
  const std::string fic_hint =
      ". Please check your federated identity credential Subject, Audience and Issuer against "
      "the presented assertion. ";
  switch (code) {
    case 90002:
      return e(400, "invalid_request",
               "Tenant '" + c.tenant +
                   "' not found. Check to make sure you have the correct tenant ID and are signing "
                   "into the correct cloud. Check with your subscription administrator, this may "
                   "happen if there are no active subscriptions for the tenant.");
    case 90100:
      return e(400, "invalid_request",
               "InvalidRequestParameter - The request body could not be decoded as "
               "application/x-www-form-urlencoded.");
    case 900144:
      return e(400, "invalid_request",
               "The request body must contain the following parameter: '" + c.param + "'.");
    case 9000411:
      return e(
          400, "invalid_request",
          "The request is not properly formatted. The parameter '" + c.param + "' is duplicated.");
    case 900561:
      return e(400, "invalid_request",
               "The endpoint only accepts POST requests. Received a GET request.");
    case 70003:
      return e(400, "unsupported_grant_type",
               "The app requested an unsupported grant type '" + c.grant_type + "'.");
    case 700016:
      return e(400, "unauthorized_client",
               "Application with identifier '" + c.client_id +
                   "' was not found in the directory '" + c.tenant +
                   "'. This can happen if the application has not been installed by the "
                   "administrator of the tenant or consented to by any user in the tenant. You "
                   "may have sent your authentication request to the wrong tenant.");
    case 50027:
      return e(401, "invalid_client", "JWT token is invalid or malformed.");
    case 700211:
      return e(401, "invalid_client",
               "No matching federated identity record found for presented assertion issuer '" +
                   c.issuer + "'" + fic_hint + std::string(kFicDocs));
    case 700212:
      return e(401, "invalid_client",
               "No matching federated identity record found for presented assertion audience '" +
                   c.audience + "'" + fic_hint + std::string(kFicDocs));
    case 700213:
      return e(401, "invalid_client",
               "No matching federated identity record found for presented assertion subject '" +
                   c.subject + "'" + fic_hint +
                   "Note that matching is done using a case-sensitive comparison. " +
                   std::string(kFicDocs));
    case 7000274:
      return e(401, "invalid_client",
               "Client assertion failed signature validation. The signing key was not found or "
               "the signature is invalid.");
    case 700231:
      return e(400, "invalid_request",
               "Token obtained using a federated identity credential may not be used as a "
               "federated identity credential.");
    case 700024:
      return e(400, "invalid_client",
               "Client assertion is not within its valid time range. Current time: " +
                   format_iso_7(c.now) + ", assertion valid from " + format_iso_7(c.nbf) +
                   ", expiry time of assertion " + format_iso_7(c.exp) +
                   ". Review the documentation at "
                   "https://learn.microsoft.com/entra/identity-platform/certificate-credentials .");
    case 70021:
      return e(400, "invalid_request",
               "No matching federated identity record found for presented assertion. Assertion "
               "Issuer: '" +
                   c.issuer + "'. Assertion Subject: '" + c.subject + "'. Assertion Audience: '" +
                   c.audience + "'. " + std::string(kFicDocs));
    case 70011:
      return e(400, "invalid_scope",
               "The provided value for the input parameter 'scope' is not valid. The scope '" +
                   c.scope +
                   "' is not valid. Client credential flows must have a scope value with "
                   "/.default suffixed to the resource identifier (application ID URI).");
    case 500011:
      return e(400, "invalid_resource",
               "The resource principal named " + c.resource +
                   " was not found in the tenant named " + c.tenant +
                   ". This can happen if the application has not been installed by the "
                   "administrator of the tenant or consented to by any user in the tenant. You "
                   "might have sent your authentication request to the wrong tenant.");
    case 700222:
      return e(400, "invalid_request",
               "AAD-issued tokens may not be used for federated identity flows.");
    case 700236:
      return e(400, "invalid_request",
               "Entra ID tokens issued by issuer '" + c.issuer +
                   "' may not be used for federated identity credential flows for applications "
                   "or managed identities registered in this tenant.");
    case 7000112:
      return e(400, "unauthorized_client", "Application '" + c.client_id + "' is disabled.");
    case 53003:
      return e(400, "invalid_grant",
               "Access has been blocked by Conditional Access policies. The access policy does "
               "not allow token issuance.");
    case 90024:
      return e(503, "temporarily_unavailable",
               "RequestBudgetExceededError - A transient error has occurred. Try again.");
    case 90033:
      return e(503, "temporarily_unavailable", "A transient error has occurred. Please try again.");
    case 90055:
      return e(429, "temporarily_unavailable",
               "TenantThrottlingError - There are too many incoming requests. This exception is "
               "thrown for blocked tenants.");
    default:
      return e(400, "invalid_request", "Emulated error.");
  }
}

std::string format_entra_timestamp(std::int64_t epoch_s) {
  return format_utc(epoch_s, "%Y-%m-%d %H:%M:%SZ");
}

std::string entra_error_json(const EntraError& err, std::string_view trace_id,
                             std::string_view correlation_id, std::int64_t now) {
  const std::string ts = format_entra_timestamp(now);
  json::object body;
  body["error"] = err.error;
  body["error_description"] = "AADSTS" + std::to_string(err.code) + ": " + err.text +
                              "\r\nTrace ID: " + std::string(trace_id) +
                              "\r\nCorrelation ID: " + std::string(correlation_id) +
                              "\r\nTimestamp: " + ts;
  body["error_codes"] = json::array{err.code};
  body["timestamp"] = ts;
  body["trace_id"] = trace_id;
  body["correlation_id"] = correlation_id;
  body["error_uri"] = "https://login.microsoftonline.com/error?code=" + std::to_string(err.code);
  return json::serialize(body);
}

// ---------------------------------------------------------------------------------------------
// JWTs and the FIC exchange

std::optional<ParsedJwt> parse_jwt(std::string_view token) {
  const std::size_t d1 = token.find('.');
  if (d1 == std::string_view::npos) return std::nullopt;
  const std::size_t d2 = token.find('.', d1 + 1);
  if (d2 == std::string_view::npos || token.find('.', d2 + 1) != std::string_view::npos) {
    return std::nullopt;
  }
  const auto header_text = base64url_decode(token.substr(0, d1));
  const auto payload_text = base64url_decode(token.substr(d1 + 1, d2 - d1 - 1));
  auto signature = base64url_decode(token.substr(d2 + 1));
  if (!header_text || !payload_text || !signature || d1 == 0 || d2 == d1 + 1) return std::nullopt;

  boost::system::error_code ec;
  json::value header = json::parse(*header_text, ec);
  if (ec || !header.is_object()) return std::nullopt;
  json::value payload = json::parse(*payload_text, ec);
  if (ec || !payload.is_object()) return std::nullopt;

  ParsedJwt jwt;
  jwt.header = std::move(header.get_object());
  jwt.payload = std::move(payload.get_object());
  jwt.signing_input = std::string(token.substr(0, d2));
  jwt.signature = std::move(*signature);
  return jwt;
}

std::optional<std::string> resource_from_scope(std::string_view scope) {
  constexpr std::string_view kSuffix = "/.default";
  scope = trim_spaces(scope);
  if (scope.find(' ') != std::string_view::npos || scope.size() <= kSuffix.size() ||
      scope.substr(scope.size() - kSuffix.size()) != kSuffix) {
    return std::nullopt;
  }
  return std::string(scope.substr(0, scope.size() - kSuffix.size()));
}

bool tenant_has_resource(const Tenant& tenant, std::string_view resource) {
  for (const std::string& r : tenant.resources) {
    if (r == resource) return true;
    if (r.size() + 1 == resource.size() && resource.back() == '/' &&
        resource.substr(0, r.size()) == r) {
      return true;
    }
    if (resource.size() + 1 == r.size() && r.back() == '/' &&
        std::string_view(r).substr(0, resource.size()) == resource) {
      return true;
    }
  }
  return false;
}

ExchangeOutcome evaluate_exchange(const World& world, std::string_view tenant_id,
                                  const std::optional<QueryParams>& form,
                                  const SignatureCheck& check_signature, std::int64_t now,
                                  std::int64_t fic_epoch) {
  ExchangeOutcome out;
  ErrorContext& ctx = out.ctx;
  ctx.tenant = std::string(tenant_id);
  ctx.now = now;
  auto refuse = [&out](std::uint32_t code) {
    out.error = entra_error(code, out.ctx);
    return out;
  };

  // 1. Tenant.
  const Tenant* tenant = world.find_tenant(tenant_id);
  if (tenant == nullptr) return refuse(90002);
  ctx.tenant = tenant->id;

  // 2. Request parameters.
  if (!form) return refuse(90100);
  auto param = [&form](std::string_view key) -> const std::string* {
    for (const auto& [k, v] : *form) {
      if (k == key) return &v;
    }
    return nullptr;
  };
  const std::string* grant_type = param("grant_type");
  if (grant_type == nullptr) {
    ctx.param = "grant_type";
    return refuse(900144);
  }
  if (*grant_type != "client_credentials") {
    ctx.grant_type = *grant_type;
    return refuse(70003);
  }
  for (std::size_t i = 0; i < form->size(); ++i) {
    for (std::size_t j = i + 1; j < form->size(); ++j) {
      if ((*form)[i].first == (*form)[j].first) {
        ctx.param = (*form)[i].first;
        return refuse(9000411);
      }
    }
  }
  for (const std::string_view required : {"client_id", "client_assertion_type"}) {
    const std::string* v = param(required);
    if (v == nullptr || v->empty()) {
      ctx.param = std::string(required);
      return refuse(900144);
    }
  }
  if (*param("client_assertion_type") != kJwtBearerAssertionType) {
    ctx.param = "client_assertion_type";
    out.error = entra_error(900144, ctx);
    out.error->text =
        "The value of the parameter 'client_assertion_type' is not valid; expected '" +
        std::string(kJwtBearerAssertionType) + "'.";
    return out;
  }
  for (const std::string_view required : {"client_assertion", "scope"}) {
    const std::string* v = param(required);
    if (v == nullptr || v->empty()) {
      ctx.param = std::string(required);
      return refuse(900144);
    }
  }
  const std::string& client_id = *param("client_id");
  const std::string& assertion = *param("client_assertion");
  const std::string& scope = *param("scope");
  ctx.client_id = client_id;

  // 3. The app and its service principal in the resource tenant.
  const App* app = world.find_app(client_id);
  const bool provisioned =
      app != nullptr &&
      std::any_of(tenant->service_principals.begin(), tenant->service_principals.end(),
                  [&](const std::string& sp) { return iequals(sp, client_id); });
  if (!provisioned) return refuse(700016);

  // 4. The assertion itself.
  const std::optional<ParsedJwt> jwt = parse_jwt(assertion);
  if (!jwt) return refuse(50027);
  const json::value* iss = jwt->payload.if_contains("iss");
  const json::value* sub = jwt->payload.if_contains("sub");
  const json::value* aud = jwt->payload.if_contains("aud");
  const auto exp = as_int64(jwt->payload.if_contains("exp"));
  const json::value* nbf_value = jwt->payload.if_contains("nbf");
  const auto nbf = as_int64(nbf_value);
  std::vector<std::string> audiences;
  if (aud != nullptr && aud->is_string()) {
    audiences.emplace_back(aud->get_string());
  } else if (aud != nullptr && aud->is_array()) {
    for (const json::value& a : aud->get_array()) {
      if (!a.is_string()) return refuse(50027);
      audiences.emplace_back(a.get_string());
    }
  }
  if (iss == nullptr || !iss->is_string() || sub == nullptr || !sub->is_string() ||
      audiences.empty() || !exp || (nbf_value != nullptr && !nbf)) {
    return refuse(50027);
  }
  ctx.issuer = std::string(iss->get_string());
  ctx.subject = std::string(sub->get_string());
  for (const std::string& a : audiences) {
    if (!ctx.audience.empty()) ctx.audience += ',';
    ctx.audience += a;
  }
  ctx.exp = *exp;
  ctx.nbf = nbf ? *nbf : as_int64(jwt->payload.if_contains("iat")).value_or(0);

  std::optional<IssuerKey> key;
  if (ctx.issuer == world.home_issuer_v2() || ctx.issuer == world.home_issuer_v1()) {
    key = IssuerKey::entra;
  } else {
    for (const Tenant& t : world.tenants) {
      if (ctx.issuer == "https://sts.windows.net/" + t.id + "/" ||
          ctx.issuer == "https://login.microsoftonline.com/" + t.id + "/v2.0") {
        key = IssuerKey::entra;
      }
    }
    if (!key && world.is_external_issuer(ctx.issuer)) key = IssuerKey::oidc;
  }
  if (!key) return refuse(700211);

  const json::value* alg = jwt->header.if_contains("alg");
  if (alg == nullptr || !alg->is_string() || alg->get_string() != "RS256" ||
      !check_signature(*key, *jwt)) {
    return refuse(7000274);
  }
  if (const json::value* ficd = jwt->payload.if_contains(kFicDerivedClaim);
      ficd != nullptr && ficd->is_bool() && ficd->get_bool()) {
    return refuse(700231);
  }
  // No skew for expiry, five minutes for not-before.
  if (now > *exp || (nbf && now + 300 < *nbf)) return refuse(700024);

  // 5. Federated identity credential matching: exact and case-sensitive.
  std::vector<const Fic*> candidates;
  for (const Fic& fic : app->fics) {
    if (fic.issuer == ctx.issuer) candidates.push_back(&fic);
  }
  if (candidates.empty()) return refuse(700211);
  std::erase_if(candidates, [&](const Fic* fic) { return fic->subject != ctx.subject; });
  if (candidates.empty()) return refuse(700213);
  const Fic* matched = nullptr;
  for (const Fic* fic : candidates) {
    for (const std::string& a : audiences) {
      if (std::find(fic->audiences.begin(), fic->audiences.end(), a) != fic->audiences.end()) {
        matched = fic;
        break;
      }
    }
    if (matched != nullptr) break;
  }
  if (matched == nullptr) return refuse(700212);
  if (now < fic_epoch + matched->propagation_delay_s) return refuse(70021);

  // 6. Scope → resource in the tenant.
  ctx.scope = scope;
  const std::optional<std::string> resource = resource_from_scope(scope);
  if (!resource) return refuse(70011);
  ctx.resource = *resource;
  if (!tenant_has_resource(*tenant, *resource)) return refuse(500011);

  out.tenant = tenant;
  out.app = app;
  out.resource = *resource;
  return out;
}

ErrorContext describe_exchange_request(std::string_view tenant, const QueryParams& form,
                                       std::int64_t now) {
  ErrorContext ctx;
  ctx.tenant = std::string(tenant);
  ctx.now = now;
  for (const auto& [k, v] : form) {
    if (k == "client_id") ctx.client_id = v;
    if (k == "grant_type") ctx.grant_type = v;
    if (k == "scope") {
      ctx.scope = v;
      ctx.resource = resource_from_scope(v).value_or("");
    }
    if (k != "client_assertion") continue;
    const std::optional<ParsedJwt> jwt = parse_jwt(v);
    if (!jwt) continue;
    auto text = [&](std::string_view claim) -> std::string {
      const json::value* c = jwt->payload.if_contains(claim);
      if (c != nullptr && c->is_string()) return std::string(c->get_string());
      if (c != nullptr && c->is_array() && !c->get_array().empty() &&
          c->get_array()[0].is_string()) {
        return std::string(c->get_array()[0].get_string());
      }
      return {};
    };
    ctx.issuer = text("iss");
    ctx.subject = text("sub");
    ctx.audience = text("aud");
    ctx.exp = as_int64(jwt->payload.if_contains("exp")).value_or(0);
    ctx.nbf = as_int64(jwt->payload.if_contains("nbf")).value_or(0);
  }
  return ctx;
}

std::string service_principal_object_id(std::string_view tenant, std::string_view client_id) {
  const std::string input = "sp:" + ascii_lower(tenant) + "|" + ascii_lower(client_id);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(input.data(), input.size(), digest, &len, EVP_sha256(), nullptr);
  // RFC 4122 layout with version 5 ("name-based, SHA") and the variant bits set.
  digest[6] = static_cast<unsigned char>((digest[6] & 0x0F) | 0x50);
  digest[8] = static_cast<unsigned char>((digest[8] & 0x3F) | 0x80);
  char out[37];
  std::snprintf(
      out, sizeof out, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
      digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
      digest[8], digest[9], digest[10], digest[11], digest[12], digest[13], digest[14], digest[15]);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Faults

std::string_view to_string(FaultTarget target) {
  switch (target) {
    case FaultTarget::imds:
      return "imds";
    case FaultTarget::app_service:
      return "app_service";
    case FaultTarget::entra:
      return "entra";
    case FaultTarget::any:
      return "any";
  }
  return "any";
}

std::string_view to_string(FaultAction action) {
  switch (action) {
    case FaultAction::delay:
      return "delay";
    case FaultAction::status:
      return "status";
    case FaultAction::reset:
      return "reset";
    case FaultAction::garbage:
      return "garbage";
    case FaultAction::truncate:
      return "truncate";
    case FaultAction::huge:
      return "huge";
    case FaultAction::hang:
      return "hang";
    case FaultAction::not_jwt:
      return "not_jwt";
    case FaultAction::wrong_types:
      return "wrong_types";
    case FaultAction::interim:
      return "interim";
  }
  return "status";
}

std::optional<FaultRule> parse_fault_rule(const json::object& body, std::string& error) {
  error.clear();
  Reader r(error);
  if (!r.only_keys(body, "$",
                   {"target", "action", "status", "retry_after", "aadsts", "delay_ms", "count"})) {
    return std::nullopt;
  }
  FaultRule rule;
  std::string text;
  if (!r.string(body, "target", "$", text, false)) return std::nullopt;
  if (!text.empty()) {
    bool known = false;
    for (const FaultTarget t :
         {FaultTarget::imds, FaultTarget::app_service, FaultTarget::entra, FaultTarget::any}) {
      if (text == to_string(t)) {
        rule.target = t;
        known = true;
      }
    }
    if (!known) {
      r.fail("$.target", "must be one of imds, app_service, entra, any");
      return std::nullopt;
    }
  }
  auto integer = [&](std::string_view key, std::int64_t& out) {
    const json::value* v = body.if_contains(key);
    if (v == nullptr) return true;
    const auto n = as_int64(v);
    if (!n) return r.fail("$." + std::string(key), "must be a number");
    out = *n;
    return true;
  };
  std::int64_t status = 0;
  std::int64_t aadsts = 0;
  if (!integer("status", status) || !integer("aadsts", aadsts) ||
      !integer("delay_ms", rule.delay_ms) || !integer("count", rule.count)) {
    return std::nullopt;
  }
  if (body.contains("status")) {
    if (status < 100 || status > 599) {
      r.fail("$.status", "must be an HTTP status (100-599)");
      return std::nullopt;
    }
    rule.status = static_cast<unsigned>(status);
  } else {
    rule.status = 0;
  }
  if (body.contains("aadsts")) {
    if (aadsts <= 0 || aadsts > 99999999) {
      r.fail("$.aadsts", "must be a positive AADSTS code");
      return std::nullopt;
    }
    rule.aadsts = static_cast<std::uint32_t>(aadsts);
  }
  if (rule.delay_ms < 0 || rule.delay_ms > 3600 * 1000) {
    r.fail("$.delay_ms", "must be between 0 and 3600000");
    return std::nullopt;
  }
  if (rule.count == 0 || rule.count < -1) {
    r.fail("$.count", "must be -1 (until cleared) or a positive number");
    return std::nullopt;
  }
  if (const json::value* ra = body.if_contains("retry_after")) {
    if (ra->is_string()) {
      rule.retry_after = std::string(ra->get_string());
    } else if (const auto n = as_int64(ra)) {
      rule.retry_after = std::to_string(*n);
    } else {
      r.fail("$.retry_after", "must be a string or a number");
      return std::nullopt;
    }
  }
  text.clear();
  if (!r.string(body, "action", "$", text, false)) return std::nullopt;
  if (text.empty()) {
    if (!body.contains("action") && (rule.delay_ms > 0 || body.contains("delay_ms"))) {
      rule.action = FaultAction::delay;
    } else if (body.contains("status") || rule.aadsts) {
      rule.action = FaultAction::status;
    } else {
      r.fail("$.action", "missing");
      return std::nullopt;
    }
  } else {
    bool known = false;
    for (const FaultAction a :
         {FaultAction::delay, FaultAction::status, FaultAction::reset, FaultAction::garbage,
          FaultAction::truncate, FaultAction::huge, FaultAction::hang, FaultAction::not_jwt,
          FaultAction::wrong_types, FaultAction::interim}) {
      if (text == to_string(a)) {
        rule.action = a;
        known = true;
      }
    }
    if (!known) {
      r.fail("$.action",
             "must be one of status, reset, garbage, truncate, huge, hang, not_jwt, wrong_types, "
             "interim, delay");
      return std::nullopt;
    }
  }
  return rule;
}

json::object fault_rule_to_json(const FaultRule& rule) {
  json::object o;
  o["target"] = to_string(rule.target);
  o["action"] = to_string(rule.action);
  if (rule.status != 0) o["status"] = rule.status;
  if (rule.retry_after) o["retry_after"] = *rule.retry_after;
  if (rule.aadsts) o["aadsts"] = *rule.aadsts;
  o["delay_ms"] = rule.delay_ms;
  o["count"] = rule.count;
  return o;
}

std::optional<FaultRule> FaultQueue::take(FaultTarget target) {
  for (auto it = rules_.begin(); it != rules_.end(); ++it) {
    if (it->target != target && it->target != FaultTarget::any) continue;
    FaultRule applied = *it;
    if (it->count > 0 && --it->count == 0) rules_.erase(it);
    return applied;
  }
  return std::nullopt;
}

}  // namespace ficbroker::emulator
