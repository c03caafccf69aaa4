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

namespace {

// Length of the valid UTF-8 sequence starting at text[i], or 0 if it is not one (overlong forms,
// surrogates and code points past U+10FFFF included).
std::size_t utf8_sequence(std::string_view text, std::size_t i) {
  const auto b0 = static_cast<unsigned char>(text[i]);
  std::size_t n = 0;
  std::uint32_t cp = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    cp = b0 & 0x0F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    cp = b0 & 0x07;
  } else {
    return 0;
  }
  if (i + n > text.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(text[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
      (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
    return 0;
  }
  return n;
}

}  // namespace

void append_json_string(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x80) {
      // Caller-supplied bytes end up in error texts: keep valid UTF-8, replace the rest, so the
      // body is always valid JSON.
      if (const std::size_t n = utf8_sequence(text, i)) {
        out.append(text.substr(i, n));
        i += n - 1;
      } else {
        out.append("\\ufffd");
      }
      continue;
    }
    switch (c) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      default:
        if (u < 0x20) {
          out.append("\\u00");
          out.push_back(kHex[u >> 4]);
          out.push_back(kHex[u & 15]);
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
}

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
