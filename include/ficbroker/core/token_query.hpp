// A token query as the router reads it from a request (or the CLI builds it). Plain data with no
// configuration types: the router produces it, target resolution and the broker consume it.
#pragma once

#include <string>

namespace ficbroker {

enum class SelectorKind { none, client_id, object_id, resource_id };

struct TokenQuery {
  std::string resource;  // as the caller sent it; echoed back
  std::string scope;     // what is asked of Entra
  std::string tenant;    // optional: names a target's tenant
  SelectorKind selector = SelectorKind::none;
  std::string selector_value;
  std::string selector_name;  // the parameter the caller used, for error texts
};

}  // namespace ficbroker
