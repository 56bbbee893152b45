// Logging: spdlog to stderr, one line per event, prefixed with the process
// role ("supervisor", "frontend", "worker 3"). Call init_logging once from
// main(); afterwards the spdlog free functions (spdlog::info...) log.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace sp {

// level: "trace", "debug", "info", "warn", "error", "off".
void init_logging(const std::string& role, const std::string& level);

}  // namespace sp
