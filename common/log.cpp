#include "common/log.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

namespace sp {

namespace {

// %N: the line's syslog priority (sd-daemon(3): "<6>" prefixes).
class SyslogPriority : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static constexpr char kPriority[] = {'7', '7', '6', '4', '3', '2', '7'};  // trace..off
    dest.push_back(kPriority[std::min<size_t>(size_t(msg.level), sizeof kPriority - 1)]);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<SyslogPriority>();
  }
};

// %J: the message as the contents of a JSON string (quotes, backslashes and
// control characters escaped; other bytes as they are).
class JsonEscaped : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    for (char c : msg.payload) {
      if (c == '"' || c == '\\') {
        dest.push_back('\\');
        dest.push_back(c);
      } else if (static_cast<unsigned char>(c) < 0x20) {
        char esc[8];
        std::snprintf(esc, sizeof esc, "\\u%04x", unsigned(static_cast<unsigned char>(c)));
        dest.append(esc, esc + 6);
      } else {
        dest.push_back(c);
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonEscaped>();
  }
};

// JOURNAL_STREAM is "<device>:<inode>" of the stream systemd connected; it
// is ours only if stderr is still that stream (not redirected since).
bool stderr_is_journal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (!stream) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st {};
  return ::fstat(2, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

}  // namespace

std::optional<LogFormat> parse_log_format(std::string_view name) {
  for (LogFormat f : {LogFormat::kAuto, LogFormat::kText, LogFormat::kJournal, LogFormat::kJson})
    if (name == log_format_name(f)) return f;
  return std::nullopt;
}

const char* log_format_name(LogFormat f) {
  switch (f) {
    case LogFormat::kText:
      return "text";
    case LogFormat::kJournal:
      return "journal";
    case LogFormat::kJson:
      return "json";
    case LogFormat::kAuto:
      break;
  }
  return "auto";
}

LogFormat resolve_log_format(LogFormat f) {
  if (f != LogFormat::kAuto) return f;
  return stderr_is_journal() ? LogFormat::kJournal : LogFormat::kText;
}

void init_logging(const std::string& role, const std::string& level, LogFormat format) {
  auto logger = spdlog::stderr_logger_st(role);
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<SyslogPriority>('N').add_flag<JsonEscaped>('J');
  switch (resolve_log_format(format)) {
    case LogFormat::kJournal:
      formatter->set_pattern("<%N>[%n %P] %v");
      break;
    case LogFormat::kJson:
      formatter->set_pattern(
          R"({"ts":"%Y-%m-%dT%H:%M:%S.%e","level":"%l","role":"%n","pid":%P,"msg":"%J"})");
      break;
    default:
      formatter->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n %P] %v");
  }
  logger->set_formatter(std::move(formatter));
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

}  // namespace sp
