// Writing Prometheus's text exposition format, version 0.0.4: what GET /metrics answers
// (https://prometheus.io/docs/instrumenting/exposition_formats/). Pure text, no I/O; unit-tested.
//
//   Exposition out;
//   out.family("lbd_requests_total", MetricType::kCounter, "Requests answered.");
//   out.sample("lbd_requests_total", {{"app", "lbd"}, {"slot", "0"}}, 812);
//   text = out.take();
//
// Every sample of a family must follow its family's HELP and TYPE lines, before the next family
// starts: the caller writes a family's samples together.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lbd::metrics {

inline constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

enum class MetricType { kCounter, kGauge, kHistogram };

struct Label {
  std::string_view name;
  std::string_view value;
};

class Exposition {
 public:
  // The family's "# HELP" and "# TYPE" lines.
  void family(std::string_view name, MetricType type, std::string_view help);
  // One line: name{labels} value.
  void sample(std::string_view name, std::span<const Label> labels, double value);
  void sample(std::string_view name, std::span<const Label> labels, uint64_t value);
  void sample(std::string_view name, std::initializer_list<Label> labels, double value) {
    sample(name, std::span<const Label>(labels.begin(), labels.size()), value);
  }
  void sample(std::string_view name, std::initializer_list<Label> labels, uint64_t value) {
    sample(name, std::span<const Label>(labels.begin(), labels.size()), value);
  }
  // A histogram's series: cumulative `name_bucket{le=...}` lines (the last le="+Inf"),
  // `name_sum` and `name_count`. `counts` are per bucket, not cumulative, one more than
  // `upper_bounds` (the +Inf bucket).
  void histogram(std::string_view name, std::span<const Label> labels,
                 std::span<const double> upper_bounds, std::span<const uint64_t> counts, double sum);

  const std::string& text() const { return text_; }
  std::string take() { return std::move(text_); }

 private:
  void series(std::string_view name, std::span<const Label> labels, std::string_view extra_label,
              std::string_view extra_value);
  std::string text_;
};

// A label value as it goes between the quotes: backslash, double quote and newline escaped.
std::string escape_label_value(std::string_view value);
// HELP text: backslash and newline escaped (quotes are fine there).
std::string escape_help(std::string_view help);
// A sample value or an `le` bound: the shortest text that reads back as the same double,
// "+Inf", "-Inf" or "NaN".
std::string format_value(double value);

}  // namespace lbd::metrics
