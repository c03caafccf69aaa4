#include "ficbroker/core/target_resolution.hpp"

#include "ficbroker/util/encoding.hpp"
#include "ficbroker/util/token.hpp"

#include <algorithm>
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

ResolveResult by_selector(const TokenQuery& query, const std::string& value, const Config& config,
                          const SourceIdentities& identities) {
  Resolved r;
  if (query.selector == SelectorKind::client_id) {
    for (const auto& t : config.targets) {
      if (t.client_id == value && (!r.target || t.is_default)) r.target = &t;
    }
  }
  // A selector naming a source's own identity asks for a plain managed-identity token.
  if (!r.target) r.source = source_for_selector(query.selector, value, config, identities);
  if (r.target || r.source) return r;
  return Unresolved{"unknown " + query.selector_name + " '" + query.selector_value +
                    "': it names neither a target's app nor a source's identity"};
}

}  // namespace

void throw_exception_from_error(const Unresolved& e, const boost::source_location&) {
  throw std::runtime_error("unresolved token query: " + e.description);
}

bool passthrough_allowed(const SourceConfig& source, std::string_view resource) {
  if (source.passthrough_resources) {
    const auto& allowed = *source.passthrough_resources;
    return std::find(allowed.begin(), allowed.end(), resource) != allowed.end();
  }
  return !is_exchange_audience(resource);
}

const SourceConfig* source_for_selector(SelectorKind selector, std::string_view value,
                                        const Config& config, const SourceIdentities& identities) {
  const std::string wanted = ascii_lower(value);
  if (wanted.empty()) return nullptr;
  for (const auto& [name, ids] : identities) {
    const std::string* id = selector == SelectorKind::client_id     ? &ids.client_id
                            : selector == SelectorKind::object_id   ? &ids.object_id
                            : selector == SelectorKind::resource_id ? &ids.resource_id
                                                                    : nullptr;
    if (!id || ascii_lower(*id) != wanted) continue;
    // Skips a name the config does not have (a lookup not yet rebuilt after a reload).
    if (const auto* source = config.source(name)) return source;
  }
  return nullptr;
}

ResolveResult resolve_query(const TokenQuery& query, const Config& config,
                            const SourceIdentities& identities) {
  const std::string value = ascii_lower(query.selector_value);
  ResolveResult r = Unresolved{};
  if (!query.tenant.empty()) {
    r = by_tenant(query, value, config);
  } else if (query.selector != SelectorKind::none) {
    r = by_selector(query, value, config, identities);
  } else if (const TargetConfig* target = config.default_target()) {
    r = Resolved{target, nullptr};
  } else {
    r = Unresolved{"no default target is configured; pass tenant= or client_id="};
  }
  if (r && r->source && !passthrough_allowed(*r->source, query.resource)) {
    return Unresolved{"resource '" + query.resource + "' is not allowed for the plain tokens of " +
                      "source '" + r->source->name + "' (see passthrough_resources)"};
  }
  if (!r || !r->target || r->target->allowed_resources.empty()) return r;
  for (const auto& res : r->target->allowed_resources) {
    if (res == query.resource) return r;
  }
  return Unresolved{"resource '" + query.resource + "' is not allowed for tenant '" +
                    r->target->tenant_id + "'"};
}

}  // namespace ficbroker
