// Logging: spdlog to stderr, one line per event, so `lbd 2>&1 | tee` and journald both work.
// The supervisor logs as "lbd", each worker as "worker N"; the format is stable because operators
// grep it and the tests read the "ready" lines.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace lbd {

// Installs the process-wide logger. `name` appears in every line; `level` is one of spdlog's level
// names (trace, debug, info, warn, error, critical, off). Returns false for an unknown level.
bool init_logging(const std::string& name, const std::string& level);

}  // namespace lbd
