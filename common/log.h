// Logging: spdlog to stderr, one line per event, tagged with the process
// role ("supervisor", "frontend", "worker 3") and pid. Call init_logging
// once from main(); afterwards the spdlog free functions (spdlog::info...)
// log. Formats:
//   text     "2026-12-02T08:00:00.123 info [worker 0 4101] ready": timestamped
//   journal  "<6>[worker 0 4101] ready": a syslog priority prefix and no
//            timestamp, for systemd's journal (which stamps lines itself)
//   json     {"ts":"...","level":"info","role":"worker 0","pid":4101,"msg":"ready"}
//   auto     journal when stderr is the journal (JOURNAL_STREAM names it), text otherwise
#pragma once

#include <spdlog/spdlog.h>

#include <optional>
#include <string>
#include <string_view>

namespace sp {

enum class LogFormat { kAuto, kText, kJournal, kJson };
std::optional<LogFormat> parse_log_format(std::string_view name);
const char* log_format_name(LogFormat f);
// kAuto made concrete for this process's stderr; others unchanged.
LogFormat resolve_log_format(LogFormat f);

// level: "trace", "debug", "info", "warn", "error", "critical", "off".
void init_logging(const std::string& role, const std::string& level,
                  LogFormat format = LogFormat::kText);

}  // namespace sp
