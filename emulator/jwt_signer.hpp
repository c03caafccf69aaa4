// RSA keys and RS256 JWT signing/verification for the emulator (OpenSSL 3 EVP APIs).
#pragma once

#include <openssl/types.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace ficbroker::emulator {

/// An owned RSA key pair. Generation and all operations throw std::runtime_error on an OpenSSL
/// failure (which only happens on resource exhaustion). Not copyable; operations are const and
/// may be used from one thread at a time per key.
class RsaKey {
 public:
  /// Generates a fresh key pair.
  static RsaKey generate(int bits = 2048);

  RsaKey(RsaKey&&) noexcept = default;
  RsaKey& operator=(RsaKey&&) noexcept = default;
  ~RsaKey() = default;

  /// RSASSA-PKCS1-v1_5 with SHA-256 over `data`; returns the raw signature bytes.
  std::string sign_sha256(std::string_view data) const;
  /// True when `signature` is a valid RS256 signature of `data` by this key.
  bool verify_sha256(std::string_view data, std::string_view signature) const noexcept;

  /// JWK "n" and "e" members (base64url, big-endian, no leading zeros).
  std::string modulus_b64url() const;
  std::string exponent_b64url() const;

  EVP_PKEY* native() const noexcept { return pkey_.get(); }

 private:
  struct Deleter {
    void operator()(EVP_PKEY* p) const noexcept;
  };
  explicit RsaKey(EVP_PKEY* p) : pkey_(p) {}
  std::unique_ptr<EVP_PKEY, Deleter> pkey_;
};

/// Signs compact JWS tokens with header {"alg":"RS256","typ":"JWT","kid":kid}.
class JwtSigner {
 public:
  JwtSigner(RsaKey key, std::string kid) : key_(std::move(key)), kid_(std::move(kid)) {}

  /// Returns "header.payload.signature" for the already-serialized JSON claims object.
  std::string sign(std::string_view payload_json) const;
  /// Checks a signature over "header.payload" (signature given as raw bytes).
  bool verify(std::string_view signing_input, std::string_view signature) const noexcept {
    return key_.verify_sha256(signing_input, signature);
  }
  /// The JWK (public part) as a serialized JSON object.
  std::string jwk_json() const;

  const std::string& kid() const noexcept { return kid_; }
  const RsaKey& key() const noexcept { return key_; }

 private:
  RsaKey key_;
  std::string kid_;
};

/// Throws std::runtime_error carrying the OpenSSL error queue.
[[noreturn]] void throw_openssl_error(std::string_view what);

}  // namespace ficbroker::emulator
