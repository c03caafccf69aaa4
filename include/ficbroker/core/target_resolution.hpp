// Which configured target (or, for a selector naming a source's own identity, which source) a
// token query goes to. Pure: reads the Config, no I/O.
#pragma once

#include "ficbroker/config/config.hpp"
#include "ficbroker/core/token_query.hpp"

#include <boost/system/result.hpp>

#include <functional>
#include <map>
#include <optional>
#include <string>

namespace ficbroker {

/// Where a query goes: exactly one of `target`/`source` is set.
struct Resolved {
  const TargetConfig* target = nullptr;
  const SourceConfig* source = nullptr;  // plain managed-identity token from this source
};

/// Why a query names nothing configured: a 400 invalid_request whose description this is. Safe to
/// show the caller (it repeats only what the caller sent and configured names).
struct Unresolved {
  std::string description;
};

/// Lets boost::system::result<T, Unresolved>::value() throw on misuse.
[[noreturn]] void throw_exception_from_error(const Unresolved& e,
                                             const boost::source_location& loc);

using ResolveResult = boost::system::result<Resolved, Unresolved>;

/// The identity ids of each source that mints plain managed-identity tokens, by source name: the
/// configured ones and those learned from tokens (the Broker keeps it from its sources).
using SourceIdentities = std::map<std::string, IdentityIds, std::less<>>;

ResolveResult resolve_query(const TokenQuery& query, const Config& config,
                            const SourceIdentities& identities);

/// Whether a plain managed-identity token of `source` may be handed out for `resource`: the
/// source's passthrough_resources when configured, else any resource except the FIC exchange
/// audiences. A token for api://AzureADTokenExchange is the assertion itself: whoever holds it can
/// mint tokens for any scope of every app that trusts the identity, past every allowed_resources.
bool passthrough_allowed(const SourceConfig& source, std::string_view resource);

/// The source whose identity a selector names (ids compare case-insensitively), or nullptr.
const SourceConfig* source_for_selector(SelectorKind selector, std::string_view value,
                                        const Config& config, const SourceIdentities& identities);

}  // namespace ficbroker
