// systemd socket activation (sd_listen_fds(3), without libsystemd): the service manager binds the
// port and hands the listening socket to each run of the daemon. A crashed or restarting broker
// then never leaves the port free for another local user to bind and collect callers' secrets,
// and callers that connect meanwhile wait in the backlog instead of being refused.
#pragma once

#include <charconv>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ficbroker {

inline constexpr int kFirstInheritedFd = 3;  // SD_LISTEN_FDS_START

/// The descriptors passed by the service manager: LISTEN_FDS of them from fd 3, when LISTEN_PID
/// names this process. Anything malformed means "none were passed".
inline std::vector<int> inherited_listeners(
    const std::function<std::optional<std::string>(std::string_view)>& env, long pid) {
  auto number = [&](std::string_view name) -> std::optional<long> {
    const auto text = env(name);
    if (!text || text->empty()) return std::nullopt;
    long value = 0;
    const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
    if (ec != std::errc{} || end != text->data() + text->size()) return std::nullopt;
    return value;
  };
  const auto listen_pid = number("LISTEN_PID");
  const auto count = number("LISTEN_FDS");
  std::vector<int> fds;
  if (!listen_pid || *listen_pid != pid || !count || *count < 1 || *count > 16) return fds;
  for (int i = 0; i < *count; ++i) fds.push_back(kFirstInheritedFd + i);
  return fds;
}

}  // namespace ficbroker
