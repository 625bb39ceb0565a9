#include "config/values.h"

#include <sched.h>

#include <cctype>
#include <charconv>
#include <limits>
#include <set>

namespace lbd {

namespace {

Result<int> parse_cpu(std::string_view text) {
  int value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value < 0) {
    return Error::invalid("'" + std::string(text) + "' is not a CPU number");
  }
  return value;
}

}  // namespace

const char* mode_name(Mode mode) {
  switch (mode) {
    case Mode::kBpf: return "bpf";
    case Mode::kReuseport: return "reuseport";
    case Mode::kShared: return "shared";
    case Mode::kHandoff: return "handoff";
  }
  return "unknown";
}

Result<Mode> parse_mode(std::string_view text) {
  for (Mode mode : {Mode::kBpf, Mode::kReuseport, Mode::kShared, Mode::kHandoff}) {
    if (text == mode_name(mode)) return mode;
  }
  return Error::invalid("unknown mode '" + std::string(text) + "' (expected bpf, reuseport, shared or handoff)");
}

Result<Policy> parse_policy(std::string_view text) {
  for (Policy policy : {Policy::kRoundRobin, Policy::kLeast, Policy::kHash, Policy::kSticky}) {
    if (text == policy_name(policy)) return policy;
  }
  return Error::invalid("unknown policy '" + std::string(text) + "' (expected rr, least, hash or sticky)");
}

Result<std::vector<int>> parse_cpu_list(std::string_view text) {
  std::set<int> cpus;
  std::string_view rest = text;
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const std::string_view item = rest.substr(0, comma);
    const size_t dash = item.find('-');
    if (dash == std::string_view::npos) {
      auto cpu = parse_cpu(item);
      if (!cpu) return cpu.error();
      cpus.insert(*cpu);
    } else {
      auto first = parse_cpu(item.substr(0, dash));
      if (!first) return first.error();
      auto last = parse_cpu(item.substr(dash + 1));
      if (!last) return last.error();
      if (*last < *first) return Error::invalid("range '" + std::string(item) + "' is backwards");
      for (int cpu = *first; cpu <= *last && cpu < CPU_SETSIZE; cpu++) cpus.insert(cpu);
      if (*last >= CPU_SETSIZE) cpus.insert(*last);
    }
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  if (cpus.empty()) return Error::invalid("empty list");
  for (int cpu : cpus) {
    if (cpu >= CPU_SETSIZE) return Error::invalid("CPU " + std::to_string(cpu) + " is out of range");
  }
  return std::vector<int>(cpus.begin(), cpus.end());
}

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
      if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
    }
  }
  if (cpus.empty()) cpus.push_back(0);
  return cpus;
}

Result<uint64_t> parse_size(std::string_view text) {
  const std::string bad =
      "'" + std::string(text) + "' is not a size (expected bytes with an optional K, M, G or T suffix, e.g. 512M)";
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) digits++;
  if (digits == 0) return Error::invalid(bad);
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + digits, value);
  if (ec != std::errc()) return Error::invalid("'" + std::string(text) + "' is too large");
  std::string_view unit = text.substr(digits);
  int shift = 0;
  if (!unit.empty()) {
    switch (std::toupper(static_cast<unsigned char>(unit.front()))) {
      case 'K': shift = 10; break;
      case 'M': shift = 20; break;
      case 'G': shift = 30; break;
      case 'T': shift = 40; break;
      default: break;
    }
    if (shift != 0) unit.remove_prefix(1);
    if (!(unit.empty() || unit == "B" || (shift != 0 && unit == "iB"))) return Error::invalid(bad);
  }
  if (value > (std::numeric_limits<uint64_t>::max() >> shift)) return Error::invalid("'" + std::string(text) + "' is too large");
  if (value == 0) return Error::invalid("must be more than 0 bytes");
  return value << shift;
}

std::string format_size(uint64_t bytes) {
  static constexpr std::pair<int, char> kUnits[] = {{40, 'T'}, {30, 'G'}, {20, 'M'}, {10, 'K'}};
  for (auto [shift, letter] : kUnits) {
    const uint64_t unit = uint64_t{1} << shift;
    if (bytes != 0 && bytes % unit == 0) return std::to_string(bytes / unit) + letter;
  }
  return std::to_string(bytes);
}

Result<net::Address> parse_address(std::string_view text) { return net::Address::try_parse(text); }

}  // namespace lbd
