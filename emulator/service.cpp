#include "service.hpp"

#include "ficbroker/util/encoding.hpp"

#include <boost/json/array.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <openssl/rand.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>

namespace ficbroker::emulator {
namespace json = boost::json;

namespace {

constexpr std::string_view kEntraKid = "emu-entra-1";
constexpr std::string_view kOidcKid = "emu-oidc-1";
constexpr std::string_view kDefaultOidcIssuer = "https://oidc.emulator.test/cluster";
constexpr std::string_view kDefaultOidcSubject = "system:serviceaccount:default:workload";
constexpr std::size_t kHugeBodyBytes = 2 * 1024 * 1024 + 4096;

std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    throw_openssl_error("RAND_bytes");
  }
  return out;
}

std::string random_uuid() {
  std::string b = random_bytes(16);
  b[6] = static_cast<char>((b[6] & 0x0F) | 0x40);
  b[8] = static_cast<char>((b[8] & 0x3F) | 0x80);
  char out[37];
  auto u = [&b](int i) { return static_cast<unsigned>(static_cast<unsigned char>(b[i])); };
  std::snprintf(out, sizeof out,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u(0), u(1),
                u(2), u(3), u(4), u(5), u(6), u(7), u(8), u(9), u(10), u(11), u(12), u(13), u(14),
                u(15));
  return out;
}

HttpResponse json_response(unsigned status, const json::object& body, std::string note = {}) {
  HttpResponse res;
  res.status = status;
  res.body = json::serialize(body);
  res.note = std::move(note);
  return res;
}

HttpResponse simple_error(unsigned status, std::string_view error, std::string_view description) {
  json::object body;
  body["error"] = error;
  body["error_description"] = description;
  return json_response(status, body, std::string(error));
}

// App Service errors carry both the MSAL-parsed keys and the IMDS-style ones.
HttpResponse app_service_error(unsigned status, std::string_view error,
                               std::string_view description) {
  json::object body;
  body["statusCode"] = status;
  body["message"] = description;
  body["error"] = error;
  body["error_description"] = description;
  body["correlationId"] = random_uuid();
  return json_response(status, body, std::string(error));
}

std::string_view imds_error_name(unsigned status) {
  switch (status) {
    case 400:
      return "invalid_request";
    case 401:
      return "unauthorized_client";
    case 403:
      return "forbidden";
    case 404:
      return "not_found";
    case 405:
      return "method_not_allowed";
    case 429:
      return "too_many_requests";
    case 503:
      return "service_unavailable";
    default:
      return status >= 500 ? "server_error" : "bad_request";
  }
}

std::string_view imds_status_text(unsigned status) {
  switch (status) {
    case 404:
      return "IMDS endpoint is updating";
    case 410:
      return "IMDS is going through updates. IMDS will be available within 70 seconds";
    case 429:
      return "IMDS Throttle limit reached";
    case 500:
      return "Failed to retrieve token from the Active directory";
    default:
      return "Emulated failure";
  }
}

void split_target(std::string_view target, std::string_view& path, std::string_view& query) {
  const std::size_t q = target.find('?');
  path = target.substr(0, q);
  query = q == std::string_view::npos ? std::string_view{} : target.substr(q + 1);
}

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> parts;
  while (!path.empty()) {
    if (path.front() == '/') {
      path.remove_prefix(1);
      continue;
    }
    const std::size_t slash = path.find('/');
    parts.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash);
  }
  return parts;
}

const std::string* query_value(const QueryParams& q, std::string_view key) {
  for (const auto& [k, v] : q) {
    if (k == key) return &v;
  }
  return nullptr;
}

json::object query_to_json(const QueryParams& q) {
  json::object o;
  for (const auto& [k, v] : q) o[k] = v;
  return o;
}

bool starts_with_ci(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

// Parses an optional JSON object body; an empty body is an empty object.
std::optional<json::object> parse_body_object(const std::string& body, std::string& error) {
  if (body.find_first_not_of(" \t\r\n") == std::string::npos) return json::object{};
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec) {
    error = "invalid JSON: " + ec.message();
    return std::nullopt;
  }
  if (!v.is_object()) {
    error = "the body must be a JSON object";
    return std::nullopt;
  }
  return std::move(v.get_object());
}

std::optional<std::int64_t> json_int(const json::value& v) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64() && v.get_uint64() <= static_cast<std::uint64_t>(INT64_MAX)) {
    return static_cast<std::int64_t>(v.get_uint64());
  }
  if (v.is_double() && v.get_double() == v.get_double() && v.get_double() > -9e18 &&
      v.get_double() < 9e18) {
    return static_cast<std::int64_t>(v.get_double());
  }
  return std::nullopt;
}

}  // namespace

const std::string* HttpRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (iequals(k, name)) return &v;
  }
  return nullptr;
}

Service::Service(World world, ServiceOptions options, RsaKey entra_key, RsaKey oidc_key,
                 Clock clock)
    : world_(std::move(world)),
      options_(options),
      entra_(std::move(entra_key), std::string(kEntraKid)),
      oidc_(std::move(oidc_key), std::string(kOidcKid)),
      clock_(clock ? std::move(clock) : Clock([] {
        return static_cast<std::int64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count());
      })),
      started_at_(clock_()),
      fic_epoch_(started_at_),
      settings_{options.token_lifetime_s, options.mi_token_lifetime_s, 0} {}

HttpResponse Service::handle(const HttpRequest& req) {
  std::string_view path;
  std::string_view query;
  split_target(req.target, path, query);

  if (path.starts_with("/_emulator/")) return handle_control(req, path);

  if (!req.tls) {
    if (iequals(path, "/metadata/identity/oauth2/token")) return handle_imds(req, query);
    if (iequals(path, "/msi/token")) return handle_app_service(req, query);
  } else {
    const std::vector<std::string_view> parts = split_path(path);
    if (parts.size() == 4 && parts[1] == "oauth2" && parts[2] == "v2.0" && parts[3] == "token") {
      return handle_entra_token(req, parts[0]);
    }
    if (parts.size() == 4 && parts[1] == "discovery" && parts[2] == "v2.0" && parts[3] == "keys") {
      return handle_discovery(req, parts[0], false);
    }
    if (parts.size() == 3 && parts[1] == "discovery" && parts[2] == "keys") {
      return handle_discovery(req, parts[0], false);
    }
    if (parts.size() == 4 && parts[1] == "v2.0" && parts[2] == ".well-known" &&
        parts[3] == "openid-configuration") {
      return handle_discovery(req, parts[0], true);
    }
  }
  return simple_error(404, "not_found", "No such endpoint on this listener");
}

// ---------------------------------------------------------------------------------------------
// Token endpoints: shared fault / delay / counting logic

template <class Describe, class Answer>
HttpResponse Service::serve_token_endpoint(Ep ep, const HttpRequest& req, Describe&& describe,
                                           Answer&& answer) {
  EndpointStats& stats = ep == Ep::imds          ? imds_stats_
                         : ep == Ep::app_service ? app_service_stats_
                                                 : entra_stats_;
  const FaultTarget target = ep == Ep::imds          ? FaultTarget::imds
                             : ep == Ep::app_service ? FaultTarget::app_service
                                                     : FaultTarget::entra;
  ++stats.requests;
  const std::optional<FaultRule> fault = faults_.take(target);
  HttpResponse res;
  if (fault && fault->action != FaultAction::delay && fault->action != FaultAction::interim) {
    ++stats.faulted;
    res = fault_response(*fault, ep, req, describe());
  } else {
    res = answer();
    if (fault && fault->action == FaultAction::interim) {
      ++stats.faulted;
      res.delivery = Delivery::interim;
      res.note += " fault:interim";
    }
    if (res.status == 200) {
      ++stats.ok;
    } else {
      ++stats.error;
    }
  }
  res.delay = std::chrono::milliseconds(settings_.delay_ms + (fault ? fault->delay_ms : 0));
  return res;
}

HttpResponse Service::fault_response(const FaultRule& rule, Ep ep, const HttpRequest& req,
                                     const ErrorContext& ctx) {
  const std::int64_t t = now();
  // Bodies shaped like the endpoint's success answer, for the 200-with-bad-content faults.
  auto token_shape = [&](json::value access_token, json::value expires) {
    json::object body;
    body["access_token"] = std::move(access_token);
    if (ep == Ep::entra) {
      body["token_type"] = "Bearer";
      body["expires_in"] = expires;
      body["ext_expires_in"] = settings_.token_lifetime_s;
    } else if (ep == Ep::imds) {
      body["client_id"] = world_.identities.front().client_id;
      body["expires_in"] = expires;
      body["expires_on"] = std::to_string(t + settings_.mi_token_lifetime_s);
      body["ext_expires_in"] = std::to_string(settings_.mi_token_lifetime_s);
      body["not_before"] = std::to_string(t);
      body["resource"] = "https://management.azure.com/";
      body["token_type"] = "Bearer";
    } else {
      body["expires_on"] = expires;
      body["resource"] = "https://management.azure.com/";
      body["token_type"] = "Bearer";
      body["client_id"] = world_.identities.front().client_id;
    }
    return body;
  };
  auto default_expires = [&]() -> json::value {
    if (ep == Ep::entra) return settings_.token_lifetime_s;
    if (ep == Ep::imds) return json::string(std::to_string(settings_.mi_token_lifetime_s));
    return json::string(std::to_string(t + settings_.mi_token_lifetime_s));
  };

  HttpResponse res;
  res.note = "fault:" + std::string(to_string(rule.action));
  switch (rule.action) {
    case FaultAction::delay:
    case FaultAction::interim:
      break;  // not a fault response; handled by the caller
    case FaultAction::status: {
      if (ep == Ep::entra) {
        std::uint32_t code = rule.aadsts.value_or(0);
        if (code == 0) {
          code = rule.status == 429                         ? 90055
                 : (rule.status == 0 || rule.status >= 500) ? 90024
                                                            : 90100;
        }
        EntraError err = entra_error(code, ctx);
        if (rule.status != 0) err.http_status = rule.status;
        if (!rule.aadsts && rule.status != 0 && rule.status < 500 && rule.status != 429) {
          err.error = rule.status == 401 ? "invalid_client" : "invalid_request";
        }
        res = entra_error_response(err, req);
      } else {
        const unsigned status = rule.status != 0 ? rule.status : 503;
        std::string description(imds_status_text(status));
        if (rule.aadsts) {
          description =
              "AADSTS" + std::to_string(*rule.aadsts) + ": " + entra_error(*rule.aadsts, ctx).text;
        }
        res = ep == Ep::imds ? simple_error(status, imds_error_name(status), description)
                             : app_service_error(status, imds_error_name(status), description);
      }
      res.note = "fault:status " + std::to_string(res.status);
      break;
    }
    case FaultAction::reset:
      res.delivery = Delivery::reset;
      break;
    case FaultAction::hang:
      res.delivery = Delivery::hang;
      break;
    case FaultAction::garbage:
      res.body = "<html><body>502 Bad Gateway (emulated garbage, not JSON)</body></html>\n";
      break;
    case FaultAction::truncate:
      res.body = json::serialize(token_shape("not-a-jwt", default_expires()));
      res.body.resize(res.body.size() / 2);
      res.delivery = Delivery::truncate;
      break;
    case FaultAction::huge: {
      json::object body = token_shape("not-a-jwt", default_expires());
      body["padding"] = std::string(kHugeBodyBytes, 'x');
      res.body = json::serialize(body);
      break;
    }
    case FaultAction::not_jwt:
      res.body = json::serialize(token_shape("not-a-jwt", default_expires()));
      break;
    case FaultAction::wrong_types:
      res.body = json::serialize(
          token_shape(json::string(mint_mi_token(world_.identities.front(),
                                                 std::string(kTokenExchangeAudience), t)),
                      json::object{{"seconds", 3599}}));
      break;
  }
  if (rule.retry_after) res.headers.emplace_back("Retry-After", *rule.retry_after);
  return res;
}

// ---------------------------------------------------------------------------------------------
// IMDS and App Service

std::string Service::mint_mi_token(const Identity& id, const std::string& resource,
                                   std::int64_t t) {
  const bool exchange = resource.starts_with(kTokenExchangeAudience);
  json::object claims;
  claims["aud"] = resource;
  claims["iss"] = exchange ? world_.home_issuer_v2() : world_.home_issuer_v1();
  claims["iat"] = t;
  claims["nbf"] = t;
  claims["exp"] = t + settings_.mi_token_lifetime_s;
  claims["appid"] = id.client_id;
  claims["azp"] = id.client_id;
  claims["idtyp"] = "app";
  claims["oid"] = id.object_id;
  claims["sub"] = id.object_id;
  claims["tid"] = world_.home_tenant;
  claims["uti"] = base64url_encode(random_bytes(16));
  claims["ver"] = exchange ? "2.0" : "1.0";
  claims["xms_mirid"] = id.resource_id;
  return entra_.sign(json::serialize(claims));
}

HttpResponse Service::mi_token_response(Ep ep, const Identity& id, const std::string& resource) {
  const std::int64_t t = now();
  const std::int64_t lifetime = settings_.mi_token_lifetime_s;
  json::object body;
  body["access_token"] = mint_mi_token(id, resource, t);
  if (ep == Ep::imds) {
    body["client_id"] = id.client_id;
    body["expires_in"] = std::to_string(lifetime);
    body["expires_on"] = std::to_string(t + lifetime);
    body["ext_expires_in"] = std::to_string(lifetime);
    body["not_before"] = std::to_string(t);
    body["resource"] = resource;
    body["token_type"] = "Bearer";
  } else {
    body["expires_on"] = std::to_string(t + lifetime);
    body["resource"] = resource;
    body["token_type"] = "Bearer";
    body["client_id"] = id.client_id;
  }
  return json_response(200, body, id.name);
}

ErrorContext Service::describe_mi_request(std::string_view query_text, MiEndpoint ep) const {
  // An MI endpoint failing with an AADSTS code is Entra refusing the identity's own token
  // request: describe it from that identity's point of view.
  ErrorContext ctx;
  ctx.tenant = world_.home_tenant;
  ctx.now = now();
  ctx.issuer = world_.home_issuer_v2();
  ctx.audience = std::string(kTokenExchangeAudience);
  const QueryParams query = parse_query(query_text, true).value_or(QueryParams{});
  const IdentitySelection sel = select_identity(world_, query, ep);
  const Identity& id = sel.identity != nullptr ? *sel.identity : world_.identities.front();
  ctx.client_id = id.client_id;
  ctx.subject = id.object_id;
  if (const std::string* resource = query_value(query, "resource")) ctx.resource = *resource;
  return ctx;
}

HttpResponse Service::handle_imds(const HttpRequest& req, std::string_view query_text) {
  auto describe = [&] { return describe_mi_request(query_text, MiEndpoint::imds); };
  return serve_token_endpoint(Ep::imds, req, describe, [&]() -> HttpResponse {
    if (req.method != "GET") {
      return simple_error(405, "method_not_allowed", "The request method is not supported");
    }
    const std::string* metadata = req.header("Metadata");
    if (metadata == nullptr || *metadata != "true") {
      return simple_error(400, "invalid_request", "Required metadata header not specified");
    }
    if (req.header("X-Forwarded-For") != nullptr) {
      return simple_error(400, "invalid_request",
                          "Requests with an X-Forwarded-For header are not allowed");
    }
    const std::optional<QueryParams> query = parse_query(query_text, true);
    if (!query) return simple_error(400, "invalid_request", "Malformed query string");
    last_imds_query_ = query_to_json(*query);
    for (std::size_t i = 0; i < query->size(); ++i) {
      for (std::size_t j = i + 1; j < query->size(); ++j) {
        if ((*query)[i].first == (*query)[j].first) {
          return simple_error(400, "invalid_request",
                              "Duplicate query parameter '" + (*query)[i].first + "'");
        }
      }
    }
    const std::string* api_version = query_value(*query, "api-version");
    if (api_version == nullptr || api_version->empty()) {
      json::object body;
      body["error"] =
          "Bad request. api-version was not specified in the request. For more information "
          "refer to aka.ms/azureimds";
      body["newest-versions"] = json::array{"2023-07-01", "2021-12-13", "2021-11-15"};
      return json_response(400, body, "no api-version");
    }
    const std::string* resource = query_value(*query, "resource");
    if (resource == nullptr || resource->empty()) {
      return simple_error(400, "invalid_request", "Required audience parameter not specified");
    }
    const IdentitySelection sel = select_identity(world_, *query, MiEndpoint::imds);
    if (sel.identity == nullptr) return simple_error(400, "invalid_request", sel.error);
    return mi_token_response(Ep::imds, *sel.identity, *resource);
  });
}

HttpResponse Service::handle_app_service(const HttpRequest& req, std::string_view query_text) {
  auto describe = [&] { return describe_mi_request(query_text, MiEndpoint::app_service); };
  return serve_token_endpoint(Ep::app_service, req, describe, [&]() -> HttpResponse {
    if (req.method != "GET") {
      return app_service_error(405, "method_not_allowed", "The request method is not supported");
    }
    const std::string* secret = req.header("X-IDENTITY-HEADER");
    if (secret == nullptr || *secret != world_.identity_header) {
      return app_service_error(401, "unauthorized_client",
                               "Unauthorized: the X-IDENTITY-HEADER header is missing or invalid");
    }
    const std::optional<QueryParams> query = parse_query(query_text, true);
    if (!query) return app_service_error(400, "invalid_request", "Malformed query string");
    last_app_service_query_ = query_to_json(*query);
    const std::string* api_version = query_value(*query, "api-version");
    if (api_version == nullptr || api_version->empty()) {
      return app_service_error(400, "invalid_request", "api-version was not specified");
    }
    const std::string* resource = query_value(*query, "resource");
    if (resource == nullptr || resource->empty()) {
      return app_service_error(400, "invalid_request", "Required resource parameter not specified");
    }
    const IdentitySelection sel = select_identity(world_, *query, MiEndpoint::app_service);
    if (sel.identity == nullptr) return app_service_error(400, "invalid_request", sel.error);
    return mi_token_response(Ep::app_service, *sel.identity, *resource);
  });
}

// ---------------------------------------------------------------------------------------------
// Entra

HttpResponse Service::entra_error_response(const EntraError& err, const HttpRequest& req) {
  const std::string trace_id = random_uuid();
  const std::string* client_request_id = req.header("client-request-id");
  const std::string correlation_id =
      client_request_id != nullptr && !client_request_id->empty() && client_request_id->size() <= 64
          ? *client_request_id
          : random_uuid();
  HttpResponse res;
  res.status = err.http_status;
  res.body = entra_error_json(err, trace_id, correlation_id, now());
  res.headers.emplace_back("x-ms-request-id", trace_id);
  if (client_request_id != nullptr) res.headers.emplace_back("client-request-id", correlation_id);
  res.headers.emplace_back("Cache-Control", "no-store, no-cache");
  res.note = "AADSTS" + std::to_string(err.code);
  return res;
}

HttpResponse Service::handle_entra_token(const HttpRequest& req, std::string_view tenant) {
  // Record what the client sent (minus the assertion itself) before anything else can fail.
  std::optional<QueryParams> form = QueryParams{};
  const std::string* content_type = req.header("Content-Type");
  if (content_type != nullptr &&
      starts_with_ci(*content_type, "application/x-www-form-urlencoded")) {
    form = parse_query(req.body, true);
  }
  last_entra_tenant_ = std::string(tenant);
  last_entra_form_.clear();
  if (form) {
    for (const auto& [k, v] : *form) {
      if (k == "client_assertion" || k == "client_secret") {
        last_entra_form_[k] = v.size();
      } else {
        last_entra_form_[k] = v;
      }
    }
  }

  auto describe = [&] {
    return describe_exchange_request(tenant, form.value_or(QueryParams{}), now());
  };
  return serve_token_endpoint(Ep::entra, req, describe, [&]() -> HttpResponse {
    if (req.method != "POST") {
      ErrorContext ctx;
      ctx.tenant = std::string(tenant);
      EntraError err = entra_error(900561, ctx);
      err.text = "The endpoint only accepts POST requests. Received a " + req.method + " request.";
      ++entra_errors_by_code_[err.code];
      return entra_error_response(err, req);
    }
    const std::int64_t t = now();
    const SignatureCheck check = [this](IssuerKey key, const ParsedJwt& jwt) {
      const JwtSigner& signer = key == IssuerKey::entra ? entra_ : oidc_;
      if (const json::value* kid = jwt.header.if_contains("kid")) {
        if (!kid->is_string() || kid->get_string() != signer.kid()) return false;
      }
      return signer.verify(jwt.signing_input, jwt.signature);
    };
    const ExchangeOutcome outcome = evaluate_exchange(world_, tenant, form, check, t, fic_epoch_);
    if (outcome.error) {
      ++entra_errors_by_code_[outcome.error->code];
      return entra_error_response(*outcome.error, req);
    }

    const std::int64_t lifetime = settings_.token_lifetime_s;
    const std::string sp_id =
        service_principal_object_id(outcome.tenant->id, outcome.app->client_id);
    json::object claims;
    claims["aud"] = outcome.resource;
    claims["iss"] = "https://sts.windows.net/" + outcome.tenant->id + "/";
    claims["iat"] = t;
    claims["nbf"] = t;
    claims["exp"] = t + lifetime;
    claims["appid"] = outcome.app->client_id;
    claims["azp"] = outcome.app->client_id;
    claims["idtyp"] = "app";
    claims["oid"] = sp_id;
    claims["sub"] = sp_id;
    claims["tid"] = outcome.tenant->id;
    claims["uti"] = base64url_encode(random_bytes(16));
    claims["ver"] = "1.0";
    claims[kFicDerivedClaim] = true;

    json::object body;
    body["token_type"] = "Bearer";
    body["expires_in"] = lifetime;
    body["ext_expires_in"] = lifetime;
    body["access_token"] = entra_.sign(json::serialize(claims));
    HttpResponse res = json_response(200, body, "ok " + outcome.app->name);
    res.headers.emplace_back("Cache-Control", "no-store, no-cache");
    if (const std::string* id = req.header("client-request-id")) {
      res.headers.emplace_back("client-request-id", *id);
    }
    return res;
  });
}

HttpResponse Service::handle_discovery(const HttpRequest& req, std::string_view tenant,
                                       bool openid_configuration) {
  ++discovery_;
  const Tenant* t = world_.find_tenant(tenant);
  const bool home = iequals(tenant, world_.home_tenant);
  if (t == nullptr && !home) {
    ErrorContext ctx;
    ctx.tenant = std::string(tenant);
    return entra_error_response(entra_error(90002, ctx), req);
  }
  const std::string id = t != nullptr ? t->id : world_.home_tenant;
  if (!openid_configuration) {
    boost::system::error_code ec;
    json::object body;
    body["keys"] = json::array{json::parse(entra_.jwk_json(), ec)};
    return json_response(200, body, "jwks");
  }
  const std::string* host = req.header("Host");
  const std::string base = "https://" + (host != nullptr ? *host : std::string("localhost"));
  json::object body;
  body["issuer"] = "https://login.microsoftonline.com/" + id + "/v2.0";
  body["token_endpoint"] = base + "/" + id + "/oauth2/v2.0/token";
  body["jwks_uri"] = base + "/" + id + "/discovery/v2.0/keys";
  body["token_endpoint_auth_methods_supported"] =
      json::array{"client_secret_post", "private_key_jwt", "client_secret_basic"};
  body["id_token_signing_alg_values_supported"] = json::array{"RS256"};
  body["tenant_region_scope"] = "EU";
  return json_response(200, body, "openid-configuration");
}

// ---------------------------------------------------------------------------------------------
// Control API

void Service::request_begun(bool tls) {
  InProgress& p = tls ? https_in_progress_ : http_in_progress_;
  p.peak = std::max(p.peak, ++p.now);
}

void Service::request_ended(bool tls) {
  InProgress& p = tls ? https_in_progress_ : http_in_progress_;
  --p.now;
}

HttpResponse Service::stats_response() const {
  json::object body;
  auto put = [&body](std::string_view name, const EndpointStats& s) {
    const std::string n(name);
    body[n] = s.requests;
    body[n + "_ok"] = s.ok;
    body[n + "_error"] = s.error;
    body[n + "_faulted"] = s.faulted;
  };
  put("imds", imds_stats_);
  put("app_service", app_service_stats_);
  put("entra", entra_stats_);
  json::object by_code;
  for (const auto& [code, n] : entra_errors_by_code_) by_code[std::to_string(code)] = n;
  body["entra_errors_by_code"] = std::move(by_code);
  body["oidc_tokens"] = oidc_tokens_;
  body["discovery"] = discovery_;
  body["last_entra_form"] = last_entra_form_;
  body["last_entra_tenant"] = last_entra_tenant_;
  body["last_imds_query"] = last_imds_query_;
  body["last_app_service_query"] = last_app_service_query_;
  body["http_peak_in_progress"] = http_in_progress_.peak;
  body["https_peak_in_progress"] = https_in_progress_.peak;
  body["active_faults"] = faults_.rules().size();
  body["uptime_s"] = now() - started_at_;
  return json_response(200, body, "stats");
}

HttpResponse Service::settings_response() const {
  json::object body;
  body["token_lifetime"] = settings_.token_lifetime_s;
  body["mi_token_lifetime"] = settings_.mi_token_lifetime_s;
  body["delay_ms"] = settings_.delay_ms;
  body["fic_epoch"] = fic_epoch_;
  return json_response(200, body, "settings");
}

HttpResponse Service::oidc_token_response(const HttpRequest& req) {
  std::string error;
  const std::optional<json::object> in = parse_body_object(req.body, error);
  if (!in) return simple_error(400, "invalid_request", error);
  for (const auto& member : *in) {
    const std::string_view k = member.key();
    if (k != "subject" && k != "audience" && k != "lifetime" && k != "issuer" &&
        k != "not_before_offset" && k != "claims" && k != "bad_signature") {
      return simple_error(400, "invalid_request", "unknown key '" + std::string(k) + "'");
    }
  }
  const std::int64_t t = now();
  json::object claims;
  claims["iss"] = kDefaultOidcIssuer;
  claims["sub"] = kDefaultOidcSubject;
  claims["aud"] = kTokenExchangeAudience;
  std::int64_t lifetime = 3600;
  std::int64_t nbf_offset = 0;
  bool bad_signature = false;
  for (const std::string_view key : {"issuer", "subject"}) {
    if (const json::value* v = in->if_contains(key)) {
      if (!v->is_string()) {
        return simple_error(400, "invalid_request", std::string(key) + " must be a string");
      }
      claims[key == "issuer" ? "iss" : "sub"] = *v;
    }
  }
  if (const json::value* v = in->if_contains("audience")) {
    bool ok = v->is_string();
    if (v->is_array()) {
      ok = !v->get_array().empty();
      for (const json::value& a : v->get_array()) ok = ok && a.is_string();
    }
    if (!ok) {
      return simple_error(400, "invalid_request",
                          "audience must be a string or a non-empty array of strings");
    }
    claims["aud"] = *v;
  }
  for (const auto& [key, out] : {std::pair<std::string_view, std::int64_t*>{"lifetime", &lifetime},
                                 {"not_before_offset", &nbf_offset}}) {
    if (const json::value* v = in->if_contains(key)) {
      const auto n = json_int(*v);
      if (!n) return simple_error(400, "invalid_request", std::string(key) + " must be a number");
      *out = *n;
    }
  }
  if (const json::value* v = in->if_contains("bad_signature")) {
    if (!v->is_bool()) return simple_error(400, "invalid_request", "bad_signature must be a bool");
    bad_signature = v->get_bool();
  }
  claims["iat"] = t;
  claims["nbf"] = t + nbf_offset;
  claims["exp"] = t + lifetime;
  claims["jti"] = random_uuid();
  if (const json::value* v = in->if_contains("claims")) {
    if (!v->is_object()) return simple_error(400, "invalid_request", "claims must be an object");
    for (const auto& member : v->get_object()) claims[member.key()] = member.value();
  }
  std::string token = oidc_.sign(json::serialize(claims));
  if (bad_signature) {
    // Keep the shape, replace the signature with one over different bytes.
    token = token.substr(0, token.rfind('.') + 1) +
            base64url_encode(oidc_.key().sign_sha256("not the signing input"));
  }
  ++oidc_tokens_;
  json::object body;
  body["token"] = std::move(token);
  return json_response(200, body, "oidc-token");
}

HttpResponse Service::handle_control(const HttpRequest& req, std::string_view path) {
  const std::string& m = req.method;
  auto method_not_allowed = [] {
    return simple_error(405, "method_not_allowed", "Method not allowed on this endpoint");
  };

  if (path == "/_emulator/stats") {
    return m == "GET" ? stats_response() : method_not_allowed();
  }
  if (path == "/_emulator/reset") {
    if (m != "POST") return method_not_allowed();
    imds_stats_ = {};
    app_service_stats_ = {};
    entra_stats_ = {};
    entra_errors_by_code_.clear();
    http_in_progress_.peak = http_in_progress_.now;
    https_in_progress_.peak = https_in_progress_.now;
    oidc_tokens_ = 0;
    discovery_ = 0;
    last_entra_form_.clear();
    last_entra_tenant_.clear();
    last_imds_query_.clear();
    last_app_service_query_.clear();
    faults_.clear();
    settings_ = Settings{options_.token_lifetime_s, options_.mi_token_lifetime_s, 0};
    return json_response(200, json::object{{"ok", true}}, "reset");
  }
  if (path == "/_emulator/faults") {
    if (m == "DELETE") {
      faults_.clear();
      return json_response(200, json::object{{"ok", true}, {"active_faults", 0}}, "faults cleared");
    }
    if (m == "GET") {
      json::array rules;
      for (const FaultRule& r : faults_.rules()) rules.push_back(fault_rule_to_json(r));
      return json_response(200, json::object{{"faults", std::move(rules)}}, "faults");
    }
    if (m != "POST") return method_not_allowed();
    std::string error;
    const std::optional<json::object> body = parse_body_object(req.body, error);
    if (!body) return simple_error(400, "invalid_request", error);
    std::optional<FaultRule> rule = parse_fault_rule(*body, error);
    if (!rule) return simple_error(400, "invalid_request", error);
    json::object answer{{"ok", true}, {"rule", fault_rule_to_json(*rule)}};
    const std::string note = "fault added: " + std::string(to_string(rule->target)) + " " +
                             std::string(to_string(rule->action));
    faults_.add(std::move(*rule));
    answer["active_faults"] = faults_.rules().size();
    return json_response(200, answer, note);
  }
  if (path == "/_emulator/settings") {
    if (m == "GET") return settings_response();
    if (m != "POST") return method_not_allowed();
    std::string error;
    const std::optional<json::object> body = parse_body_object(req.body, error);
    if (!body) return simple_error(400, "invalid_request", error);
    Settings next = settings_;
    bool restart_propagation = false;
    for (const auto& member : *body) {
      const std::string_view k = member.key();
      if (k == "restart_propagation") {
        if (!member.value().is_bool()) {
          return simple_error(400, "invalid_request", "restart_propagation must be a bool");
        }
        restart_propagation = member.value().get_bool();
        continue;
      }
      const auto n = json_int(member.value());
      std::int64_t* target = k == "token_lifetime"      ? &next.token_lifetime_s
                             : k == "mi_token_lifetime" ? &next.mi_token_lifetime_s
                             : k == "delay_ms"          ? &next.delay_ms
                                                        : nullptr;
      if (target == nullptr) {
        return simple_error(400, "invalid_request", "unknown key '" + std::string(k) + "'");
      }
      if (!n || *n < (k == "delay_ms" ? 0 : 1) || *n > 100LL * 365 * 24 * 3600) {
        return simple_error(400, "invalid_request",
                            std::string(k) + " must be a number (lifetimes >= 1, delay_ms >= 0)");
      }
      *target = *n;
    }
    settings_ = next;
    if (restart_propagation) fic_epoch_ = now();
    return settings_response();
  }
  if (path == "/_emulator/oidc-token") {
    return m == "POST" ? oidc_token_response(req) : method_not_allowed();
  }
  if (path == "/_emulator/jwks") {
    if (m != "GET") return method_not_allowed();
    boost::system::error_code ec;
    json::array keys{json::parse(entra_.jwk_json(), ec), json::parse(oidc_.jwk_json(), ec)};
    return json_response(200, json::object{{"keys", std::move(keys)}}, "jwks");
  }
  return simple_error(404, "not_found", "No such control endpoint");
}

}  // namespace ficbroker::emulator
