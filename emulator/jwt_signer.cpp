#include "jwt_signer.hpp"

#include "ficbroker/util/encoding.hpp"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <stdexcept>
#include <vector>

namespace ficbroker::emulator {
namespace {

struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* p) const noexcept { EVP_MD_CTX_free(p); }
};
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;

struct PkeyCtxDeleter {
  void operator()(EVP_PKEY_CTX* p) const noexcept { EVP_PKEY_CTX_free(p); }
};

struct BnDeleter {
  void operator()(BIGNUM* p) const noexcept { BN_free(p); }
};

std::string bn_param_b64url(EVP_PKEY* pkey, const char* name) {
  BIGNUM* raw = nullptr;
  if (EVP_PKEY_get_bn_param(pkey, name, &raw) != 1) throw_openssl_error("EVP_PKEY_get_bn_param");
  std::unique_ptr<BIGNUM, BnDeleter> bn(raw);
  std::string bytes(static_cast<std::size_t>(BN_num_bytes(bn.get())), '\0');
  BN_bn2bin(bn.get(), reinterpret_cast<unsigned char*>(bytes.data()));
  return base64url_encode(bytes);
}

}  // namespace

void throw_openssl_error(std::string_view what) {
  std::string message(what);
  while (const unsigned long code = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    message += ": ";
    message += buf;
  }
  throw std::runtime_error(message);
}

void RsaKey::Deleter::operator()(EVP_PKEY* p) const noexcept { EVP_PKEY_free(p); }

RsaKey RsaKey::generate(int bits) {
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxDeleter> ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_RSA, nullptr));
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_rsa_keygen_bits(ctx.get(), bits) != 1) {
    throw_openssl_error("RSA keygen init");
  }
  EVP_PKEY* pkey = nullptr;
  if (EVP_PKEY_keygen(ctx.get(), &pkey) != 1) throw_openssl_error("RSA keygen");
  return RsaKey(pkey);
}

std::string RsaKey::sign_sha256(std::string_view data) const {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  // The default padding for RSA keys is PKCS#1 v1.5, which is what RS256 means.
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, pkey_.get()) != 1) {
    throw_openssl_error("EVP_DigestSignInit");
  }
  const auto* in = reinterpret_cast<const unsigned char*>(data.data());
  std::size_t len = 0;
  if (EVP_DigestSign(ctx.get(), nullptr, &len, in, data.size()) != 1) {
    throw_openssl_error("EVP_DigestSign(size)");
  }
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, in,
                     data.size()) != 1) {
    throw_openssl_error("EVP_DigestSign");
  }
  sig.resize(len);
  return sig;
}

bool RsaKey::verify_sha256(std::string_view data, std::string_view signature) const noexcept {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  bool ok = false;
  if (ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, pkey_.get()) == 1) {
    ok = EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                          signature.size(), reinterpret_cast<const unsigned char*>(data.data()),
                          data.size()) == 1;
  }
  // A failed verification leaves entries on the thread's error queue; do not leak them into
  // later, unrelated error reports.
  ERR_clear_error();
  return ok;
}

std::string RsaKey::modulus_b64url() const {
  return bn_param_b64url(pkey_.get(), OSSL_PKEY_PARAM_RSA_N);
}

std::string RsaKey::exponent_b64url() const {
  return bn_param_b64url(pkey_.get(), OSSL_PKEY_PARAM_RSA_E);
}

std::string JwtSigner::sign(std::string_view payload_json) const {
  boost::json::object header;
  header["alg"] = "RS256";
  header["typ"] = "JWT";
  header["kid"] = kid_;
  std::string token = base64url_encode(boost::json::serialize(header));
  token += '.';
  token += base64url_encode(payload_json);
  const std::string signature = key_.sign_sha256(token);
  token += '.';
  token += base64url_encode(signature);
  return token;
}

std::string JwtSigner::jwk_json() const {
  boost::json::object jwk;
  jwk["kty"] = "RSA";
  jwk["use"] = "sig";
  jwk["alg"] = "RS256";
  jwk["kid"] = kid_;
  jwk["n"] = key_.modulus_b64url();
  jwk["e"] = key_.exponent_b64url();
  return boost::json::serialize(jwk);
}

}  // namespace ficbroker::emulator
