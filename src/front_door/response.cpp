#include "ficbroker/front_door/response.hpp"

#include <charconv>

namespace ficbroker {
namespace {

void append_int(std::string& out, std::int64_t value) {
  char buf[24];
  const auto [ptr, ec] = std::to_chars(buf, buf + sizeof buf, value);
  out.append(buf, ptr);
}

void append_key(std::string& out, std::string_view key) {
  out.push_back('"');
  out.append(key);
  out.append("\":");
}

void append_quoted_int(std::string& out, std::int64_t value) {
  out.push_back('"');
  append_int(out, value);
  out.push_back('"');
}

}  // namespace

std::string format_token_body(const Token& token, std::string_view resource,
                              std::string_view client_id, std::int64_t now_epoch) {
  std::string out;
  out.reserve(token.access_token.size() + resource.size() + client_id.size() + 200);
  const auto expires_in = token.expires_on > now_epoch ? token.expires_on - now_epoch : 0;
  const auto ext = token.ext_expires_on > now_epoch ? token.ext_expires_on - now_epoch : 0;
  out.push_back('{');
  append_key(out, "access_token");
  out.push_back('"');
  out.append(token.access_token);  // a JWT: base64url and dots only, nothing to escape
  out.append("\",");
  append_key(out, "client_id");
  append_json_string(out, client_id);
  out.push_back(',');
  append_key(out, "expires_in");
  append_quoted_int(out, expires_in);
  out.push_back(',');
  append_key(out, "expires_on");
  append_quoted_int(out, token.expires_on);
  out.push_back(',');
  append_key(out, "ext_expires_in");
  append_quoted_int(out, ext);
  out.push_back(',');
  append_key(out, "not_before");
  append_quoted_int(out, token.not_before);
  out.push_back(',');
  append_key(out, "resource");
  append_json_string(out, resource);
  out.push_back(',');
  append_key(out, "token_type");
  out.append("\"Bearer\"}");
  return out;
}

std::string format_error_body(unsigned status, std::string_view error, std::string_view description,
                              bool app_service_keys) {
  std::string out;
  out.reserve(description.size() * 2 + error.size() + 64);
  out.push_back('{');
  append_key(out, "error");
  append_json_string(out, error);
  out.push_back(',');
  append_key(out, "error_description");
  append_json_string(out, description);
  if (app_service_keys) {
    out.push_back(',');
    append_key(out, "statusCode");
    append_int(out, status);
    out.push_back(',');
    append_key(out, "message");
    append_json_string(out, description);
  }
  out.push_back('}');
  return out;
}

}  // namespace ficbroker
