#include "ficbroker/upstream/fetch_plan.hpp"

#include <utility>

namespace ficbroker {
namespace {

FetchStep give_up(const FetchState& state, UpstreamError error, bool forget_assertion) {
  FetchStep step;
  step.action = FetchStep::Action::give_up;
  error.description = state.failure_prefix + error.description;
  step.error = std::move(error);
  step.forget_assertion = forget_assertion;
  return step;
}

}  // namespace

FetchState FetchState::for_source(std::string_view source_name, SteadyTime started) {
  FetchState s;
  s.upstream = Upstream::managed_identity;
  s.failure_prefix = "source '" + std::string(source_name) + "' could not get a token: ";
  s.started = started;
  return s;
}

FetchState FetchState::for_exchange(std::string_view tenant_id, std::string_view client_id,
                                    SteadyTime started) {
  FetchState s;
  s.upstream = Upstream::entra;
  s.failure_prefix = "token exchange in tenant '" + std::string(tenant_id) + "' for app '" +
                     std::string(client_id) + "' failed: ";
  s.started = started;
  return s;
}

FetchStep next_step(FetchState& state, UpstreamError error, SteadyTime now, bool stopping,
                    const RetryPolicy& policy) {
  const bool rejected_assertion =
      state.upstream == Upstream::entra && error.kind == UpstreamError::Kind::assertion_rejected;
  if (rejected_assertion) {
    // The assertion was outside its valid time (clock skew, a stale MI token): a fresh one may
    // well work, once. Rejected again, it will not: the caller's configuration is at fault.
    if (!state.fresh_assertion_tried && !stopping) {
      state.fresh_assertion_tried = true;
      ++state.attempt;
      FetchStep step;
      step.action = FetchStep::Action::refresh_assertion;
      step.forget_assertion = true;
      return step;
    }
    error.kind = UpstreamError::Kind::permanent;
  }
  const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(now - state.started);
  const auto delay =
      policy.next_delay(state.upstream, error, error.upstream_status, state.attempt, elapsed);
  if (!delay || stopping) return give_up(state, std::move(error), rejected_assertion);
  ++state.attempt;
  FetchStep step;
  step.action = FetchStep::Action::wait;
  step.delay = *delay;
  return step;
}

}  // namespace ficbroker
