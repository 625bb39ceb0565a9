#include "support/admin.h"

#include <cstdlib>

namespace lbd::test {

namespace {

// Reads `name{k="v",...} value` or `name value`; false if the line is not that.
bool parse_sample(std::string_view line, MetricSample& out) {
  size_t at = line.find_first_of("{ ");
  if (at == std::string_view::npos || at == 0) return false;
  out.name = std::string(line.substr(0, at));
  if (line[at] == '{') {
    at++;
    while (at < line.size() && line[at] != '}') {
      size_t eq = line.find('=', at);
      if (eq == std::string_view::npos || eq + 1 >= line.size() || line[eq + 1] != '"') return false;
      std::string key(line.substr(at, eq - at));
      std::string value;
      size_t i = eq + 2;
      for (; i < line.size() && line[i] != '"'; i++) {
        if (line[i] == '\\' && i + 1 < line.size()) {
          i++;
          value += line[i] == 'n' ? '\n' : line[i];
        } else {
          value += line[i];
        }
      }
      if (i >= line.size()) return false;
      out.labels[key] = value;
      at = i + 1;
      if (at < line.size() && line[at] == ',') at++;
    }
    if (at >= line.size()) return false;
    at++;  // '}'
  }
  if (at >= line.size() || line[at] != ' ') return false;
  std::string number(line.substr(at + 1));
  char* end = nullptr;
  out.value = std::strtod(number.c_str(), &end);
  return end && end != number.c_str() && *end == '\0';
}

}  // namespace

MetricSamples MetricSamples::parse(const std::string& text) {
  MetricSamples parsed;
  parsed.text_ = text;
  size_t at = 0;
  while (at < text.size()) {
    size_t newline = text.find('\n', at);
    std::string_view line(text.data() + at, (newline == std::string::npos ? text.size() : newline) - at);
    at = newline == std::string::npos ? text.size() : newline + 1;
    if (line.empty() || line.front() == '#') continue;
    MetricSample sample;
    if (parse_sample(line, sample)) {
      parsed.samples_.push_back(std::move(sample));
    } else {
      ADD_FAILURE() << "cannot read the /metrics line '" << line << "'";
    }
  }
  return parsed;
}

double MetricSamples::sum(std::string_view name, const std::map<std::string, std::string>& match) const {
  double total = 0;
  for (const MetricSample& s : samples_) {
    if (s.name != name) continue;
    bool matches = true;
    for (const auto& [key, value] : match) {
      auto it = s.labels.find(key);
      if (it == s.labels.end() || it->second != value) matches = false;
    }
    if (matches) total += s.value;
  }
  return total;
}

size_t MetricSamples::count(std::string_view name) const {
  size_t n = 0;
  for (const MetricSample& s : samples_) n += s.name == name ? 1 : 0;
  return n;
}

}  // namespace lbd::test
