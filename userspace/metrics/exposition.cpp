#include "metrics/exposition.h"

#include <fmt/format.h>

#include <cmath>

namespace lbd::metrics {

namespace {

const char* type_name(MetricType type) {
  switch (type) {
    case MetricType::kCounter: return "counter";
    case MetricType::kGauge: return "gauge";
    case MetricType::kHistogram: return "histogram";
  }
  return "untyped";
}

}  // namespace

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char ch : value) {
    switch (ch) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      default: out += ch;
    }
  }
  return out;
}

std::string escape_help(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char ch : help) {
    switch (ch) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      default: out += ch;
    }
  }
  return out;
}

std::string format_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", value);  // shortest round-trip form: 0.00025, 2.5, 10, 1e-07
}

void Exposition::family(std::string_view name, MetricType type, std::string_view help) {
  fmt::format_to(std::back_inserter(text_), "# HELP {} {}\n# TYPE {} {}\n", name, escape_help(help),
                 name, type_name(type));
}

void Exposition::series(std::string_view name, std::span<const Label> labels,
                        std::string_view extra_label, std::string_view extra_value) {
  text_ += name;
  if (labels.empty() && extra_label.empty()) {
    text_ += ' ';
    return;
  }
  char separator = '{';
  for (const Label& label : labels) {
    fmt::format_to(std::back_inserter(text_), "{}{}=\"{}\"", separator, label.name,
                   escape_label_value(label.value));
    separator = ',';
  }
  if (!extra_label.empty()) {
    fmt::format_to(std::back_inserter(text_), "{}{}=\"{}\"", separator, extra_label, extra_value);
  }
  text_ += "} ";
}

void Exposition::sample(std::string_view name, std::span<const Label> labels, double value) {
  series(name, labels, {}, {});
  text_ += format_value(value);
  text_ += '\n';
}

void Exposition::sample(std::string_view name, std::span<const Label> labels, uint64_t value) {
  series(name, labels, {}, {});
  fmt::format_to(std::back_inserter(text_), "{}\n", value);  // exact, however large
}

void Exposition::histogram(std::string_view name, std::span<const Label> labels,
                           std::span<const double> upper_bounds, std::span<const uint64_t> counts,
                           double sum) {
  const std::string bucket = std::string(name) + "_bucket";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < upper_bounds.size(); i++) {
    if (i < counts.size()) cumulative += counts[i];
    series(bucket, labels, "le", format_value(upper_bounds[i]));
    fmt::format_to(std::back_inserter(text_), "{}\n", cumulative);
  }
  // +Inf always closes the series (Prometheus requires it): whatever is past the last bound.
  for (size_t i = upper_bounds.size(); i < counts.size(); i++) cumulative += counts[i];
  series(bucket, labels, "le", "+Inf");
  fmt::format_to(std::back_inserter(text_), "{}\n", cumulative);
  sample(std::string(name) + "_sum", labels, sum);
  sample(std::string(name) + "_count", labels, cumulative);
}

}  // namespace lbd::metrics
