// Test support: a small blocking HTTP/1.1 client for loopback tests (one request per connection
// unless a Connection is reused explicitly).
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace ficbroker::testing {

struct Response {
  unsigned status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string header(const std::string& name) const {
    const auto it = headers.find(name);
    return it == headers.end() ? std::string{} : it->second;
  }
};

using Headers = std::vector<std::pair<std::string, std::string>>;

/// Sends one request to 127.0.0.1:port (or `host`) and reads the answer. Throws on I/O errors.
Response http_request(const std::string& host, unsigned short port, const std::string& method,
                      const std::string& target, const Headers& headers = {},
                      const std::string& body = {},
                      std::chrono::milliseconds timeout = std::chrono::seconds(30));

/// Sends raw bytes and returns whatever comes back until the peer closes or `timeout`.
std::string raw_exchange(unsigned short port, const std::string& bytes,
                         std::chrono::milliseconds timeout = std::chrono::seconds(5));

}  // namespace ficbroker::testing
