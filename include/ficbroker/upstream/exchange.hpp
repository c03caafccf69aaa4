// The federated exchange: an assertion in, a token for the target's resource out, from the
// resource tenant's Entra v2 token endpoint.
#pragma once

#include "ficbroker/config/config.hpp"
#include "ficbroker/upstream/http_sender.hpp"
#include "ficbroker/util/asio.hpp"
#include "ficbroker/util/clock.hpp"
#include "ficbroker/util/token.hpp"

#include <string>
#include <string_view>

namespace ficbroker {

/// `POST {authority}/{tenant}/oauth2/v2.0/token` with grant_type=client_credentials, client_id,
/// scope, client_assertion_type (jwt-bearer) and client_assertion. Pure; exposed for tests.
HttpRequest build_exchange_request(const TargetConfig& target, std::string_view scope,
                                   std::string_view assertion);

/// Sends the exchange and parses Entra's answer. Never throws; errors are classified.
asio::awaitable<TokenResult> exchange_assertion(HttpSender& upstream, const TargetConfig& target,
                                                std::string scope, std::string assertion,
                                                const Clock& clock);

}  // namespace ficbroker
