// What /proc says about a worker process: resident memory and CPU time. Used for `lbctl status`
// (and, with the same numbers, by anything that watches RSS).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>

namespace lbd {

struct ProcessUsage {
  uint64_t rss_bytes = 0;
  double cpu_seconds = 0;  // user + system since the process started
};

// Nothing if the process is gone.
std::optional<ProcessUsage> read_process_usage(pid_t pid);

// CPU % of one core over the interval between two readings; keeps the last reading.
class CpuMeter {
 public:
  // Returns the percentage since the previous call (or since `started` on the first), reusing
  // the last value when called again within 200 ms (several status requests in a burst).
  double percent(double cpu_seconds, std::chrono::steady_clock::time_point now,
                 std::chrono::steady_clock::time_point started);

 private:
  std::optional<std::chrono::steady_clock::time_point> last_at_;
  double last_cpu_ = 0;
  double last_percent_ = 0;
};

}  // namespace lbd
