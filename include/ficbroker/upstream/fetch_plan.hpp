// What a fetch does after a failed upstream call, as a pure step function (sans I/O): the state
// of one fetch plus the error it just got and the time now give the next step. The Broker's fetch
// coroutines only carry the steps out, so every rule here is unit-tested without sockets or
// sleeps:
//
//  - a rejected assertion (AADSTS700024 and kin) is answered with ONE fresh assertion; rejected
//    again, it is a permanent error;
//  - otherwise RetryPolicy decides: back-off, IMDS 410's budget, the Retry-After cap;
//  - a broker that is stopping gives up at once;
//  - giving up prefixes the description with what was being fetched ("source 'mi' could not get
//    a token: …", "token exchange in tenant '…' for app '…' failed: …").
#pragma once

#include "ficbroker/upstream/retry_policy.hpp"
#include "ficbroker/util/clock.hpp"
#include "ficbroker/util/token.hpp"

#include <chrono>
#include <string>
#include <string_view>

namespace ficbroker {

/// One fetch's progress. Create it with for_source / for_exchange when the fetch starts.
struct FetchState {
  Upstream upstream = Upstream::managed_identity;
  std::string failure_prefix;  // put before the description of the error given up with
  SteadyTime started{};
  int attempt = 1;  // the upstream call that just failed, counting from 1
  bool fresh_assertion_tried = false;

  /// A token from source `source_name` (IMDS, App Service, a file).
  static FetchState for_source(std::string_view source_name, SteadyTime started);
  /// A federated exchange at Entra for app `client_id` in tenant `tenant_id`.
  static FetchState for_exchange(std::string_view tenant_id, std::string_view client_id,
                                 SteadyTime started);
};

struct FetchStep {
  enum class Action {
    refresh_assertion,  // fetch a new assertion (bypassing the cached one), then call again
    wait,               // wait `delay`, then call again
    give_up             // answer with `error`
  };
  Action action = Action::give_up;
  std::chrono::milliseconds delay{0};  // for wait
  UpstreamError error;                 // for give_up: the final error, description prefixed
  bool forget_assertion = false;       // the cached assertion was rejected: drop it from the cache
};

/// The step after `error` ended call `state.attempt`, at `now`; advances `state` to the next
/// attempt. `stopping`: the broker is shutting down, so nothing is tried again.
FetchStep next_step(FetchState& state, UpstreamError error, SteadyTime now, bool stopping,
                    const RetryPolicy& policy);

}  // namespace ficbroker
