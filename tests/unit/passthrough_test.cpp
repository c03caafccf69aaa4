// Which plain managed-identity tokens a source hands out: never the FIC assertion by default.
#include "ficbroker/core/target_resolution.hpp"

#include <gtest/gtest.h>

namespace ficbroker {
namespace {

SourceConfig source_with(std::optional<std::vector<std::string>> list) {
  SourceConfig s;
  s.name = "uami";
  s.type = SourceType::imds;
  s.client_id = "aaaaaaaa-0000-0000-0000-000000000001";
  s.passthrough_resources = std::move(list);
  return s;
}

TEST(Passthrough, ByDefaultAnyResourceButTheExchangeAudiences) {
  const auto s = source_with(std::nullopt);
  EXPECT_TRUE(passthrough_allowed(s, "https://vault.azure.net"));
  EXPECT_TRUE(passthrough_allowed(s, "https://management.azure.com/"));
  for (const char* audience :
       {"api://AzureADTokenExchange", "api://azureadtokenexchange", "API://AZUREADTOKENEXCHANGE/",
        "api://AzureADTokenExchangeUSGov", "api://AzureADTokenExchangeChina"}) {
    EXPECT_FALSE(passthrough_allowed(s, audience)) << audience;
  }
}

TEST(Passthrough, AConfiguredListIsExactAndCanOptInToTheAudience) {
  const auto s = source_with(
      std::vector<std::string>{"https://vault.azure.net", "api://AzureADTokenExchange"});
  EXPECT_TRUE(passthrough_allowed(s, "https://vault.azure.net"));
  EXPECT_TRUE(passthrough_allowed(s, "api://AzureADTokenExchange"));
  EXPECT_FALSE(passthrough_allowed(s, "https://graph.microsoft.com"));
  EXPECT_FALSE(passthrough_allowed(s, "https://vault.azure.net/"));
  EXPECT_FALSE(passthrough_allowed(source_with(std::vector<std::string>{}), "https://x"));
}

TEST(Passthrough, ResolutionRefusesAPlainAssertionAndNamesTheKey) {
  Config config;
  config.sources.emplace("uami", source_with(std::nullopt));
  SourceIdentities identities{{"uami", {"aaaaaaaa-0000-0000-0000-000000000001", "", ""}}};
  TokenQuery query;
  query.resource = "api://AzureADTokenExchange";
  query.scope = "api://AzureADTokenExchange/.default";
  query.selector = SelectorKind::client_id;
  query.selector_value = "AAAAAAAA-0000-0000-0000-000000000001";
  query.selector_name = "client_id";
  const auto refused = resolve_query(query, config, identities);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().description.find("passthrough_resources"), std::string::npos);
  query.resource = "https://vault.azure.net";
  const auto served = resolve_query(query, config, identities);
  ASSERT_TRUE(served);
  EXPECT_EQ(served->source, &config.sources.at("uami"));
}

}  // namespace
}  // namespace ficbroker
