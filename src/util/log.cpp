#include "ficbroker/util/log.hpp"

#include "ficbroker/util/encoding.hpp"

#include <chrono>
#include <ctime>

namespace ficbroker {

LogLevel parse_log_level(std::string_view text) {
  if (text == "debug") return LogLevel::debug;
  if (text == "warn") return LogLevel::warn;
  if (text == "error") return LogLevel::error;
  return LogLevel::info;
}

void Logger::log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields) {
  if (!enabled(level)) return;
  static constexpr std::string_view kNames[] = {"debug", "info", "warn", "error"};
  const auto now = std::chrono::system_clock::now();
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char ts[40];
  const auto n = std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(ts + n, sizeof ts - n, ".%03dZ", static_cast<int>(ms % 1000));

  line_.clear();
  line_.append("{\"ts\":\"").append(ts).append("\",\"level\":\"");
  line_.append(kNames[static_cast<int>(level)]).append("\",\"event\":");
  append_json_string(line_, event);
  for (const auto& f : fields) {
    line_.push_back(',');
    append_json_string(line_, f.key);
    line_.push_back(':');
    if (const auto* s = std::get_if<std::string_view>(&f.value)) {
      append_json_string(line_, *s);
    } else if (const auto* i = std::get_if<std::int64_t>(&f.value)) {
      line_.append(std::to_string(*i));
    } else if (const auto* d = std::get_if<double>(&f.value)) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.3f", *d);
      line_.append(buf);
    } else {
      line_.append(std::get<bool>(f.value) ? "true" : "false");
    }
  }
  line_.append("}\n");
  std::fwrite(line_.data(), 1, line_.size(), out_);
  std::fflush(out_);
}

}  // namespace ficbroker
