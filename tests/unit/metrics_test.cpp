// The Prometheus exposition stays valid whatever bytes reach a label: a scrape that one bad label
// makes invalid loses every series.
#include "ficbroker/core/metrics.hpp"

#include <gtest/gtest.h>

#include <string>

namespace ficbroker {
namespace {

using namespace std::string_literals;

TEST(PrometheusLabel, TheThreeEscapesOfTheFormat) {
  EXPECT_EQ(prometheus_label_value(R"(a\b"c)"), R"("a\\b\"c")");
  EXPECT_EQ(prometheus_label_value("line\nbreak"), R"("line\nbreak")");
}

TEST(PrometheusLabel, ValidUtf8IsKept) {
  EXPECT_EQ(prometheus_label_value("api://caf\xC3\xA9/\xE2\x82\xAC"),
            "\"api://caf\xC3\xA9/\xE2\x82\xAC\"");
}

TEST(PrometheusLabel, InvalidUtf8NulAndControlBytesBecomeTheReplacementCharacter) {
  const std::string replacement = "\xEF\xBF\xBD";
  EXPECT_EQ(prometheus_label_value("a\xFF"s + "b"), "\"a" + replacement + "b\"");
  EXPECT_EQ(prometheus_label_value("a\0b"s), "\"a" + replacement + "b\"");
  EXPECT_EQ(prometheus_label_value("\xC3"s), "\"" + replacement + "\"");  // truncated sequence
  EXPECT_EQ(prometheus_label_value("\xED\xA0\x80"s),                      // a surrogate
            "\"" + replacement + replacement + replacement + "\"");
  EXPECT_EQ(prometheus_label_value("\r\t\x7F"s),
            "\"" + replacement + replacement + replacement + "\"");
}

}  // namespace
}  // namespace ficbroker
