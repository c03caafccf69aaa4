// Where assertions come from: a managed identity (IMDS, App Service) or a token file (Kubernetes
// projected service-account token, any other OIDC issuer's token).
#pragma once

#include "ficbroker/config/config.hpp"
#include "ficbroker/util/asio.hpp"
#include "ficbroker/util/clock.hpp"
#include "ficbroker/util/token.hpp"

#include <memory>
#include <string>

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
};

/// Creates the source described by `config`. `upstream` and `clock` must outlive it.
std::unique_ptr<TokenSource> make_token_source(const SourceConfig& config, HttpSender& upstream,
                                               const Clock& clock);

/// The managed-identity request a source sends (pure; exposed for tests).
struct HttpRequest;
HttpRequest build_managed_identity_request(const SourceConfig& config, std::string_view resource);

}  // namespace ficbroker
