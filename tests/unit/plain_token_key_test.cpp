// Plain managed-identity tokens are cached by identity (source type, endpoint and the one id
// upstream is asked with), never by source name: a source re-pointed at another identity must not
// find the old identity's tokens, and two names for one identity share them.
#include "ficbroker/core/broker.hpp"

#include <gtest/gtest.h>

#include <string>

namespace ficbroker {
namespace {

constexpr const char* kResource = "https://vault.azure.net";

SourceConfig imds(std::string name, std::string client_id) {
  SourceConfig s;
  s.name = std::move(name);
  s.type = SourceType::imds;
  s.endpoint = *parse_url("http://169.254.169.254");
  s.client_id = std::move(client_id);
  return s;
}

TEST(PlainTokenKeyTest, ARepointedSourceGetsAnotherKey) {
  EXPECT_NE(Broker::managed_identity_key(imds("uami", "client-1"), kResource),
            Broker::managed_identity_key(imds("uami", "client-2"), kResource));
}

TEST(PlainTokenKeyTest, TwoNamesForOneIdentityShareTheKey) {
  EXPECT_EQ(Broker::managed_identity_key(imds("a", "client-1"), kResource),
            Broker::managed_identity_key(imds("b", "client-1"), kResource));
}

TEST(PlainTokenKeyTest, TheIdUpstreamIsAskedWithIsTheOneInTheKey) {
  // client_id wins over object_id upstream (build_managed_identity_request), so an object_id
  // beside it does not make another identity; without client_id it does.
  SourceConfig with_object = imds("uami", "client-1");
  with_object.object_id = "object-1";
  EXPECT_EQ(Broker::managed_identity_key(with_object, kResource),
            Broker::managed_identity_key(imds("uami", "client-1"), kResource));
  SourceConfig by_object = imds("uami", "");
  by_object.object_id = "object-1";
  SourceConfig by_resource = imds("uami", "");
  by_resource.resource_id = "/subscriptions/s/x";
  const auto none = Broker::managed_identity_key(imds("uami", ""), kResource);
  const auto object = Broker::managed_identity_key(by_object, kResource);
  const auto resource = Broker::managed_identity_key(by_resource, kResource);
  EXPECT_NE(none, object);
  EXPECT_NE(none, resource);
  EXPECT_NE(object, resource);
}

TEST(PlainTokenKeyTest, EndpointAndTypeArePartOfTheIdentity) {
  SourceConfig other_endpoint = imds("uami", "client-1");
  other_endpoint.endpoint = *parse_url("http://127.0.0.1:41741");
  EXPECT_NE(Broker::managed_identity_key(other_endpoint, kResource),
            Broker::managed_identity_key(imds("uami", "client-1"), kResource));
  SourceConfig app_service = other_endpoint;
  app_service.type = SourceType::app_service;
  EXPECT_NE(Broker::managed_identity_key(app_service, kResource),
            Broker::managed_identity_key(other_endpoint, kResource));
}

TEST(PlainTokenKeyTest, TheKeyWithoutAResourceIsThePrefixOfEveryResourceOfTheIdentity) {
  // Reload forgets an identity's plain tokens by this prefix.
  const auto prefix = Broker::managed_identity_key(imds("uami", "client-1"), "");
  EXPECT_TRUE(
      Broker::managed_identity_key(imds("uami", "client-1"), kResource).starts_with(prefix));
  EXPECT_FALSE(
      Broker::managed_identity_key(imds("uami", "client-10"), kResource).starts_with(prefix));
}

TEST(PlainTokenKeyTest, TheKeyHoldsNoSecret) {
  SourceConfig s = imds("as", "client-1");
  s.type = SourceType::app_service;
  s.header = "platform-identity-header-secret";
  EXPECT_EQ(Broker::managed_identity_key(s, kResource).find(s.header), std::string::npos);
}

}  // namespace
}  // namespace ficbroker
