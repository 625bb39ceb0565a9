#include "lbload/mix.h"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "common/result.h"

namespace lbd::load {

namespace {

// Weights above this would make the sum overflow long before they made sense.
constexpr uint64_t kMaxWeight = 1'000'000'000;

bool starts_entry(std::string_view text) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) digits++;
  return digits > 0 && digits < text.size() && text[digits] == ':';
}

// Splits at the commas that begin a new "W:" entry.
std::vector<std::string_view> split_entries(std::string_view spec) {
  std::vector<std::string_view> entries;
  size_t begin = 0;
  for (size_t i = 0; i < spec.size(); i++) {
    if (spec[i] == ',' && (i + 1 == spec.size() || starts_entry(spec.substr(i + 1)))) {
      entries.push_back(spec.substr(begin, i - begin));
      begin = i + 1;
    }
  }
  entries.push_back(spec.substr(begin));
  return entries;
}

}  // namespace

bool is_valid_request_path(std::string_view path) {
  if (path.empty() || path.front() != '/') return false;
  return std::none_of(path.begin(), path.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u <= 0x20 || u == 0x7F;
  });
}

PathMix::PathMix(std::vector<WeightedPath> paths) : paths_(std::move(paths)) {
  uint64_t total = 0;
  for (const auto& p : paths_) cumulative_.push_back(total += p.weight);
}

PathMix PathMix::parse(std::string_view spec) {
  auto bad = [&](std::string_view entry, const std::string& why) {
    return ConfigError("bad --mix '" + std::string(spec) + "': '" + std::string(entry) + "': " + why);
  };
  if (spec.empty()) throw ConfigError("bad --mix '': expected WEIGHT:PATH[,WEIGHT:PATH...]");

  std::vector<WeightedPath> paths;
  for (std::string_view entry : split_entries(spec)) {
    const size_t colon = entry.find(':');
    if (colon == std::string_view::npos) throw bad(entry, "expected WEIGHT:PATH");
    const std::string_view weight_text = entry.substr(0, colon);
    const std::string_view path = entry.substr(colon + 1);
    uint64_t weight = 0;
    auto [end, ec] = std::from_chars(weight_text.data(), weight_text.data() + weight_text.size(), weight);
    if (weight_text.empty() || ec != std::errc() || end != weight_text.data() + weight_text.size()) {
      throw bad(entry, "the weight must be a whole number");
    }
    if (weight == 0 || weight > kMaxWeight) {
      throw bad(entry, "the weight must be 1-" + std::to_string(kMaxWeight));
    }
    if (!is_valid_request_path(path)) {
      throw bad(entry, "the path must start with '/' and contain no spaces or control characters");
    }
    paths.push_back({std::string(path), weight});
  }
  return PathMix(std::move(paths));
}

size_t PathMix::choose(uint64_t draw) const {
  if (paths_.size() == 1) return 0;
  // Multiply-shift maps the draw onto [0, total) without a division.
  const uint64_t total = cumulative_.back();
  const uint64_t point = static_cast<uint64_t>((static_cast<unsigned __int128>(draw) * total) >> 64);
  return static_cast<size_t>(std::upper_bound(cumulative_.begin(), cumulative_.end(), point) -
                             cumulative_.begin());
}

}  // namespace lbd::load
