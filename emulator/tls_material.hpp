// Throw-away PKI for the emulator's HTTPS listener: a self-signed CA and a localhost leaf.
#pragma once

#include <string>

namespace ficbroker::emulator {

/// PEM texts of a freshly generated CA certificate and of a leaf certificate it signed.
struct TlsMaterial {
  std::string ca_cert_pem;
  std::string leaf_cert_pem;
  std::string leaf_key_pem;  // PKCS#8, unencrypted
};

/// Generates RSA-2048 CA and leaf keys. The leaf has CN=localhost and
/// SAN DNS:localhost, IP:127.0.0.1, IP:::1, EKU serverAuth, and is valid from one hour ago for
/// 30 days. Throws std::runtime_error on OpenSSL failure.
TlsMaterial generate_tls_material();

}  // namespace ficbroker::emulator
