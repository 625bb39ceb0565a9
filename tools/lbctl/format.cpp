#include "lbctl/format.h"

#include <cstdio>

namespace lbd::ctl {

std::string human_bytes(uint64_t bytes) {
  const char* units[] = {"B", "K", "M", "G", "T"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    unit++;
  }
  char text[32];
  snprintf(text, sizeof(text), unit == 0 ? "%.0f%s" : "%.1f%s", value, units[unit]);
  return text;
}

std::string human_duration(double seconds) {
  auto s = static_cast<long>(seconds);
  char text[32];
  if (s < 60) snprintf(text, sizeof(text), "%lds", s);
  else if (s < 3600) snprintf(text, sizeof(text), "%ldm%02lds", s / 60, s % 60);
  else if (s < 86400) snprintf(text, sizeof(text), "%ldh%02ldm", s / 3600, (s % 3600) / 60);
  else snprintf(text, sizeof(text), "%ldd%02ldh", s / 86400, (s % 86400) / 3600);
  return text;
}

std::string human_rate(double per_second) {
  char text[32];
  if (per_second < 9.95) snprintf(text, sizeof(text), "%.1f", per_second);
  else if (per_second < 9999.5) snprintf(text, sizeof(text), "%.0f", per_second);
  else if (per_second < 999'950) snprintf(text, sizeof(text), "%.1fk", per_second / 1e3);
  else snprintf(text, sizeof(text), "%.1fM", per_second / 1e6);
  return text;
}

std::string human_latency(double seconds) {
  // %g: the bucket bounds are round numbers (1, 2.5, 5 steps), so no trailing zeros to show.
  char text[32];
  if (seconds < 1e-3) snprintf(text, sizeof(text), "%gus", seconds * 1e6);
  else if (seconds < 1) snprintf(text, sizeof(text), "%gms", seconds * 1e3);
  else snprintf(text, sizeof(text), "%gs", seconds);
  return text;
}

}  // namespace lbd::ctl
