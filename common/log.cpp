#include "common/log.h"

#include <spdlog/sinks/stdout_sinks.h>

namespace sp {

void init_logging(const std::string& role, const std::string& level) {
  auto logger = spdlog::stderr_logger_st(role);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n %P] %v");
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

}  // namespace sp
