// How many connections the front door may hold. Each costs a descriptor; so do upstream sockets,
// token files and the listeners. A cap equal to RLIMIT_NOFILE lets callers take every descriptor:
// accept() then fails with EMFILE before the canned 503 can be sent, and upstream connects fail
// for everyone.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ficbroker {

/// Descriptors kept for everything that is not a caller's connection: upstream connections (the
/// fetch bound plus idle keep-alive pools), files, listeners, stdio.
inline constexpr std::uint64_t kDescriptorReserve = 256;

/// The connection cap: the configured one, lowered to fit `descriptor_limit` with the reserve
/// (and never below 1, so that a tiny limit still serves someone).
inline std::size_t connection_cap(std::size_t configured, std::uint64_t descriptor_limit) {
  const std::uint64_t room = descriptor_limit > 2 * kDescriptorReserve
                                 ? descriptor_limit - kDescriptorReserve
                                 : descriptor_limit / 2;
  const std::uint64_t cap = room < configured ? room : configured;
  return cap == 0 ? 1 : static_cast<std::size_t>(cap);
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the soft limit now in force.
std::uint64_t raise_descriptor_limit();

}  // namespace ficbroker
