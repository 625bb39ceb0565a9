// How lbctl writes numbers for people: sizes, durations, rates and latencies in a few characters,
// so that `lbctl status` and `lbctl top` keep their columns narrow and aligned.
#pragma once

#include <cstdint>
#include <string>

namespace lbd::ctl {

// 512 -> "512B", 15'204'352 -> "14.5M" (powers of 1024).
std::string human_bytes(uint64_t bytes);
// 59 -> "59s", 192 -> "3m12s", 7380 -> "2h03m", 90000 -> "1d01h".
std::string human_duration(double seconds);
// Requests per second: 0.5 -> "0.5", 2043.4 -> "2043", 12'345 -> "12.3k", 2'500'000 -> "2.5M".
std::string human_rate(double per_second);
// A latency bucket bound: 0.0001 -> "100us", 0.0025 -> "2.5ms", 1 -> "1s".
std::string human_latency(double seconds);

}  // namespace lbd::ctl
