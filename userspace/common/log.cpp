#include "common/log.h"

#include <spdlog/sinks/stdout_sinks.h>

namespace lbd {

bool init_logging(const std::string& name, const std::string& level) {
  auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") return false;
  // A synchronous, unlocked stderr sink: lbd's processes are single-threaded, and each line goes
  // out in one write() so lines from several workers sharing stderr do not interleave.
  auto logger = std::make_shared<spdlog::logger>(name, std::make_shared<spdlog::sinks::stderr_sink_st>());
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %-5l [%n] %v");
  logger->set_level(parsed);
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(std::move(logger));
  return true;
}

}  // namespace lbd
