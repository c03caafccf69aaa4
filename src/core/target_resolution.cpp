#include "ficbroker/core/target_resolution.hpp"

#include "ficbroker/util/encoding.hpp"

#include <stdexcept>

namespace ficbroker {
namespace {

ResolveResult by_tenant(const TokenQuery& query, const std::string& value, const Config& config) {
  const TargetConfig* match = nullptr;
  for (const auto& t : config.targets) {
    if (t.tenant_id != query.tenant) continue;
    if (query.selector == SelectorKind::client_id && t.client_id != value) continue;
    if (!match || t.is_default) match = &t;
  }
  if (match) return Resolved{match, nullptr};
  if (query.selector == SelectorKind::client_id) {
    return Unresolved{"no target is configured for tenant '" + query.tenant + "' with client_id '" +
                      query.selector_value + "'"};
  }
  return Unresolved{"unknown tenant '" + query.tenant + "': no target is configured for it"};
}

// A selector naming a source's own identity asks for a plain managed-identity token.
const SourceConfig* source_with_identity(const TokenQuery& query, const std::string& value,
                                         const Config& config) {
  if (value.empty()) return nullptr;
  for (const auto& [name, source] : config.sources) {
    const bool mints = source.type == SourceType::imds || source.type == SourceType::app_service;
    if (!mints) continue;
    const bool match =
        (query.selector == SelectorKind::client_id && ascii_lower(source.client_id) == value) ||
        (query.selector == SelectorKind::object_id && ascii_lower(source.object_id) == value) ||
        (query.selector == SelectorKind::resource_id && ascii_lower(source.resource_id) == value);
    if (match) return &source;
  }
  return nullptr;
}

ResolveResult by_selector(const TokenQuery& query, const std::string& value, const Config& config) {
  Resolved r;
  if (query.selector == SelectorKind::client_id) {
    for (const auto& t : config.targets) {
      if (t.client_id == value && (!r.target || t.is_default)) r.target = &t;
    }
  }
  if (!r.target) r.source = source_with_identity(query, value, config);
  if (r.target || r.source) return r;
  return Unresolved{"unknown " + query.selector_name + " '" + query.selector_value +
                    "': it names neither a target's app nor a source's identity"};
}

}  // namespace

void throw_exception_from_error(const Unresolved& e, const boost::source_location&) {
  throw std::runtime_error("unresolved token query: " + e.description);
}

ResolveResult resolve_query(const TokenQuery& query, const Config& config) {
  const std::string value = ascii_lower(query.selector_value);
  ResolveResult r = Unresolved{};
  if (!query.tenant.empty()) {
    r = by_tenant(query, value, config);
  } else if (query.selector != SelectorKind::none) {
    r = by_selector(query, value, config);
  } else if (const TargetConfig* target = config.default_target()) {
    r = Resolved{target, nullptr};
  } else {
    r = Unresolved{"no default target is configured; pass tenant= or client_id="};
  }
  if (!r || !r->target || r->target->allowed_resources.empty()) return r;
  for (const auto& res : r->target->allowed_resources) {
    if (res == query.resource) return r;
  }
  return Unresolved{"resource '" + query.resource + "' is not allowed for tenant '" +
                    r->target->tenant_id + "'"};
}

Reply unresolved_reply(const Unresolved& unresolved, Route route) {
  return error_reply(400, "invalid_request", unresolved.description, route);
}

Resolution resolve_target(const TokenQuery& query, Route route, const Config& config) {
  Resolution out;
  const ResolveResult r = resolve_query(query, config);
  if (!r) {
    out.error = unresolved_reply(r.error(), route);
    return out;
  }
  out.target = r->target;
  out.source = r->source;
  return out;
}

}  // namespace ficbroker
