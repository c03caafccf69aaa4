// Which inherited descriptors the daemon takes as its listeners.
#include "ficbroker/front_door/socket_activation.hpp"

#include <gtest/gtest.h>

#include <map>

namespace ficbroker {
namespace {

auto env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
    const auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(SocketActivation, TakesLISTEN_FDSDescriptorsFromThree) {
  EXPECT_EQ(inherited_listeners(env_of({{"LISTEN_PID", "42"}, {"LISTEN_FDS", "2"}}), 42),
            (std::vector<int>{3, 4}));
}

TEST(SocketActivation, DescriptorsMeantForAnotherProcessAreNotTaken) {
  // A child the daemon never started, e.g. a shell that inherited the variables.
  EXPECT_TRUE(inherited_listeners(env_of({{"LISTEN_PID", "41"}, {"LISTEN_FDS", "1"}}), 42).empty());
  EXPECT_TRUE(inherited_listeners(env_of({{"LISTEN_FDS", "1"}}), 42).empty());
}

TEST(SocketActivation, MalformedOrAbsentCountsMeanNone) {
  for (const std::string count : {"", "0", "-1", "1x", "99", " 1"}) {
    EXPECT_TRUE(
        inherited_listeners(env_of({{"LISTEN_PID", "42"}, {"LISTEN_FDS", count}}), 42).empty())
        << count;
  }
  EXPECT_TRUE(inherited_listeners(env_of({}), 42).empty());
}

}  // namespace
}  // namespace ficbroker
