#include "supervisor/process_stats.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

namespace lbd {

std::optional<ProcessUsage> read_process_usage(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!stat || !std::getline(stat, text)) return std::nullopt;
  // The command name (field 2) may contain spaces; fields after it are counted from its ')'.
  size_t paren = text.rfind(')');
  if (paren == std::string::npos) return std::nullopt;
  std::istringstream fields(text.substr(paren + 2));
  std::string field;
  uint64_t utime = 0, stime = 0;
  int64_t rss_pages = 0;
  // After ')': state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14)
  // stime(15) cutime cstime priority nice threads itrealvalue starttime vsize rss(24).
  for (int number = 3; number <= 24 && fields >> field; number++) {
    if (number == 14) utime = std::stoull(field);
    if (number == 15) stime = std::stoull(field);
    if (number == 24) rss_pages = std::stoll(field);
  }
  static const long ticks = sysconf(_SC_CLK_TCK);
  static const long page = sysconf(_SC_PAGESIZE);
  ProcessUsage usage;
  usage.cpu_seconds = static_cast<double>(utime + stime) / static_cast<double>(ticks);
  usage.rss_bytes = rss_pages > 0 ? static_cast<uint64_t>(rss_pages) * static_cast<uint64_t>(page) : 0;
  return usage;
}

double CpuMeter::percent(double cpu_seconds, std::chrono::steady_clock::time_point now,
                         std::chrono::steady_clock::time_point started) {
  using std::chrono::duration;
  if (last_at_ && now - *last_at_ < std::chrono::milliseconds(200)) return last_percent_;
  const auto since = last_at_ ? *last_at_ : started;
  const double interval = duration<double>(now - since).count();
  const double used = cpu_seconds - (last_at_ ? last_cpu_ : 0.0);
  last_percent_ = interval > 0 ? 100.0 * used / interval : 0.0;
  last_at_ = now;
  last_cpu_ = cpu_seconds;
  return last_percent_;
}

}  // namespace lbd
