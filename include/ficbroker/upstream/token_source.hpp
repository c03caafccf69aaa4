// Where assertions come from: a managed identity (IMDS, App Service) or a token file (Kubernetes
// projected service-account token, any other OIDC issuer's token).
#pragma once

#include "ficbroker/config/config.hpp"
#include "ficbroker/util/asio.hpp"
#include "ficbroker/util/clock.hpp"
#include "ficbroker/util/token.hpp"

#include <memory>
#include <string>
#include <string_view>

namespace ficbroker {

class HttpSender;

class TokenSource {
 public:
  virtual ~TokenSource() = default;

  /// A token for `resource`. Managed-identity sources mint one for any resource; file sources
  /// return the file's token whatever is asked (its audience was fixed by whoever wrote it).
  virtual asio::awaitable<TokenResult> fetch(std::string resource) = 0;

  /// False for file sources: the file is re-read for every exchange, so a rotated token is
  /// picked up at once and the file stays the single source of truth.
  virtual bool cacheable() const noexcept = 0;

  /// The upstream's label in metrics and logs: "imds", "app_service" or "file".
  virtual std::string_view label() const noexcept = 0;
  /// True when the source mints plain managed-identity tokens for any resource, so that a
  /// selector naming its identity is answered from it.
  virtual bool mints_managed_identity_tokens() const noexcept = 0;
  /// True when its requests count against the IMDS rate and concurrency budget.
  virtual bool under_imds_budget() const noexcept = 0;
  /// The ids its identity answers for: the configured ones, completed with the `appid` and `oid`
  /// claims of the tokens it fetched (so `object_id=` works without configuring it). Empty for
  /// sources that do not mint managed-identity tokens.
  virtual IdentityIds identity_ids() const = 0;
};

/// Creates the source described by `config`. `upstream` and `clock` must outlive it.
std::unique_ptr<TokenSource> make_token_source(const SourceConfig& config, HttpSender& upstream,
                                               const Clock& clock);

/// The managed-identity request a source sends (pure; exposed for tests).
struct HttpRequest;
HttpRequest build_managed_identity_request(const SourceConfig& config, std::string_view resource);

/// The ids a managed-identity token names its identity by: `appid` (or v2's `azp`: client id) and
/// `oid` (object id). Empty members when the token does not say (pure; exposed for tests).
IdentityIds identity_ids_of_token(std::string_view token);
/// The configured ids of `config`, each empty one filled from `learned` (pure; exposed for tests).
IdentityIds complete_identity_ids(const SourceConfig& config, const IdentityIds& learned);

}  // namespace ficbroker
