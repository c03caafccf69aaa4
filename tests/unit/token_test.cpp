// Resource <-> scope conversion and secret fingerprints.
#include "ficbroker/util/token.hpp"

#include <gtest/gtest.h>

#include <stdexcept>

namespace ficbroker {
namespace {

TEST(ResourceToScopeTest, AppendsDefault) {
  EXPECT_EQ(resource_to_scope("https://vault.azure.net"), "https://vault.azure.net/.default");
  EXPECT_EQ(resource_to_scope("api://AzureADTokenExchange"), "api://AzureADTokenExchange/.default");
  EXPECT_EQ(resource_to_scope("00000003-0000-0000-c000-000000000000"),
            "00000003-0000-0000-c000-000000000000/.default");
}

TEST(ResourceToScopeTest, KeepsATrailingSlash) {
  EXPECT_EQ(resource_to_scope("https://database.windows.net/"),
            "https://database.windows.net//.default");
  EXPECT_EQ(resource_to_scope("https://management.azure.com/"),
            "https://management.azure.com//.default");
}

TEST(ResourceToScopeTest, LeavesAScopeAlone) {
  EXPECT_EQ(resource_to_scope("https://graph.microsoft.com/.default"),
            "https://graph.microsoft.com/.default");
  EXPECT_EQ(resource_to_scope("https://database.windows.net//.default"),
            "https://database.windows.net//.default");
}

TEST(ScopeToResourceTest, StripsOneDefault) {
  EXPECT_EQ(scope_to_resource("https://graph.microsoft.com/.default"),
            "https://graph.microsoft.com");
  EXPECT_EQ(scope_to_resource("https://database.windows.net//.default"),
            "https://database.windows.net/");
  EXPECT_EQ(scope_to_resource("https://x/.default/.default"), "https://x/.default");
  EXPECT_EQ(scope_to_resource("https://graph.microsoft.com"), "https://graph.microsoft.com");
  EXPECT_EQ(scope_to_resource(".default"), ".default") << "no slash: not the suffix";
}

TEST(ScopeToResourceTest, InvertsResourceToScope) {
  for (const char* resource : {"https://vault.azure.net", "https://database.windows.net/",
                               "api://AzureADTokenExchange", "urn:x"}) {
    EXPECT_EQ(scope_to_resource(resource_to_scope(resource)), resource);
  }
}

TEST(FingerprintTest, IsTheFirstEightHexDigitsOfSha256) {
  EXPECT_EQ(fingerprint("abc"), "ba7816bf");
  EXPECT_EQ(fingerprint(""), "e3b0c442");
}

TEST(FingerprintTest, DiffersForDifferentSecretsAndNeverContainsThem) {
  const std::string a = fingerprint("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln");
  const std::string b = fingerprint("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJiIn0.c2ln");
  EXPECT_EQ(a.size(), 8u);
  EXPECT_NE(a, b);
  EXPECT_EQ(a.find("eyJ"), std::string::npos);
}

TEST(UpstreamErrorTest, TheCallersStatusFollowsFromTheKind) {
  const auto transient = UpstreamError::transient("IMDS did not answer in time", 1);
  EXPECT_EQ(transient.error, "temporarily_unavailable");
  EXPECT_EQ(transient.retry_after_seconds, 1);
  EXPECT_EQ(http_status(transient), 503u);
  const auto throttled = UpstreamError::throttled("Entra is throttling requests (HTTP 429)", 5);
  EXPECT_EQ(throttled.error, "too_many_requests");
  EXPECT_EQ(throttled.retry_after_seconds, 5);
  EXPECT_EQ(http_status(throttled), 429u);
  const auto permanent = UpstreamError::permanent("invalid_client", "AADSTS700213: no FIC");
  EXPECT_EQ(permanent.error, "invalid_client");
  EXPECT_EQ(permanent.description, "AADSTS700213: no FIC");
  EXPECT_EQ(http_status(permanent), 400u);
  const auto rejected = UpstreamError::assertion_rejected("invalid_client", "AADSTS700024");
  EXPECT_EQ(rejected.kind, UpstreamError::Kind::assertion_rejected);
  EXPECT_EQ(http_status(rejected), 400u);
  EXPECT_EQ(http_status(UpstreamError{}), 503u) << "a default error is transient";
}

TEST(TokenResultTest, ValueOfAnErrorThrowsWithTheDescription) {
  UpstreamError e;
  e.description = "IMDS answered HTTP 500";
  const TokenResult r = e;
  try {
    (void)r.value();
    FAIL() << "value() of an error must throw";
  } catch (const std::exception& ex) {
    EXPECT_NE(std::string(ex.what()).find("IMDS answered HTTP 500"), std::string::npos)
        << ex.what();
  }
}

}  // namespace
}  // namespace ficbroker
