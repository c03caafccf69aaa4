#include "tls_material.hpp"

#include "jwt_signer.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

namespace ficbroker::emulator {
namespace {

struct X509Deleter {
  void operator()(X509* p) const noexcept { X509_free(p); }
};
using X509Ptr = std::unique_ptr<X509, X509Deleter>;

struct BioDeleter {
  void operator()(BIO* p) const noexcept { BIO_free(p); }
};

std::string bio_to_string(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(len));
}

std::string cert_pem(X509* cert) {
  std::unique_ptr<BIO, BioDeleter> bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) throw_openssl_error("PEM_write_bio_X509");
  return bio_to_string(bio.get());
}

std::string key_pem(EVP_PKEY* key) {
  std::unique_ptr<BIO, BioDeleter> bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    throw_openssl_error("PEM_write_bio_PrivateKey");
  }
  return bio_to_string(bio.get());
}

void add_extension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr) throw_openssl_error("X509V3_EXT_nconf_nid");
  const int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (ok != 1) throw_openssl_error("X509_add_ext");
}

void set_name(X509_NAME* name, const char* common_name) {
  if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>("ficbroker emulator"), -1,
                                 -1, 0) != 1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>(common_name), -1, -1,
                                 0) != 1) {
    throw_openssl_error("X509_NAME_add_entry_by_txt");
  }
}

X509Ptr new_cert(EVP_PKEY* subject_key, const char* common_name) {
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), 2) != 1) throw_openssl_error("X509_new");
  // A random positive 63-bit serial: unique enough for certificates that live for one run.
  unsigned char serial_bytes[8];
  if (RAND_bytes(serial_bytes, sizeof serial_bytes) != 1) throw_openssl_error("RAND_bytes");
  serial_bytes[0] &= 0x7F;
  BIGNUM* serial = BN_bin2bn(serial_bytes, sizeof serial_bytes, nullptr);
  const bool serial_ok =
      serial != nullptr && BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert.get())) != nullptr;
  BN_free(serial);
  if (!serial_ok) throw_openssl_error("serial number");
  if (X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), 30L * 24 * 3600) == nullptr) {
    throw_openssl_error("X509_gmtime_adj");
  }
  if (X509_set_pubkey(cert.get(), subject_key) != 1) throw_openssl_error("X509_set_pubkey");
  set_name(X509_get_subject_name(cert.get()), common_name);
  return cert;
}

}  // namespace

TlsMaterial generate_tls_material() {
  const RsaKey ca_key = RsaKey::generate(2048);
  const RsaKey leaf_key = RsaKey::generate(2048);

  X509Ptr ca = new_cert(ca_key.native(), "ficbroker-emulator test CA");
  if (X509_set_issuer_name(ca.get(), X509_get_subject_name(ca.get())) != 1) {
    throw_openssl_error("X509_set_issuer_name");
  }
  add_extension(ca.get(), ca.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
  add_extension(ca.get(), ca.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
  add_extension(ca.get(), ca.get(), NID_subject_key_identifier, "hash");
  add_extension(ca.get(), ca.get(), NID_authority_key_identifier, "keyid:always");
  if (X509_sign(ca.get(), ca_key.native(), EVP_sha256()) == 0) throw_openssl_error("X509_sign CA");

  X509Ptr leaf = new_cert(leaf_key.native(), "localhost");
  if (X509_set_issuer_name(leaf.get(), X509_get_subject_name(ca.get())) != 1) {
    throw_openssl_error("X509_set_issuer_name");
  }
  add_extension(leaf.get(), ca.get(), NID_basic_constraints, "critical,CA:FALSE");
  add_extension(leaf.get(), ca.get(), NID_key_usage, "critical,digitalSignature,keyEncipherment");
  add_extension(leaf.get(), ca.get(), NID_ext_key_usage, "serverAuth");
  // login.emulator.test exists only behind the proxy tests' CONNECT proxy (a name that is not
  // loopback, so ficbroker routes it through HTTPS_PROXY).
  add_extension(leaf.get(), ca.get(), NID_subject_alt_name,
                "DNS:localhost,DNS:login.emulator.test,IP:127.0.0.1,IP:0:0:0:0:0:0:0:1");
  add_extension(leaf.get(), ca.get(), NID_subject_key_identifier, "hash");
  add_extension(leaf.get(), ca.get(), NID_authority_key_identifier, "keyid:always");
  if (X509_sign(leaf.get(), ca_key.native(), EVP_sha256()) == 0) {
    throw_openssl_error("X509_sign leaf");
  }

  TlsMaterial material;
  material.ca_cert_pem = cert_pem(ca.get());
  material.leaf_cert_pem = cert_pem(leaf.get());
  material.leaf_key_pem = key_pem(leaf_key.native());
  return material;
}

}  // namespace ficbroker::emulator
