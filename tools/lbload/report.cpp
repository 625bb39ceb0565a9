#include "lbload/report.h"

#include <fmt/format.h>

#include <cmath>

namespace lbd::load {

namespace {

// JSON numbers with one decimal of a microsecond: enough, and no 31.200000000000003.
double round_tenth(double value) { return std::round(value * 10.0) / 10.0; }

nlohmann::ordered_json latency_json(const LatencyHistogram& h) {
  auto us = [](uint64_t ns) { return round_tenth(static_cast<double>(ns) / 1000.0); };
  return {{"p50", us(h.percentile(50))},   {"p90", us(h.percentile(90))},
          {"p99", us(h.percentile(99))},   {"p999", us(h.percentile(99.9))},
          {"max", us(h.max())},            {"mean", round_tenth(h.mean() / 1000.0)}};
}

std::string latency_line(const LatencyHistogram& h) {
  auto ms = [](double ns) { return ns / 1e6; };
  return fmt::format("p50 {:.2f}  p90 {:.2f}  p99 {:.2f}  p99.9 {:.2f}  max {:.2f}  mean {:.2f}",
                     ms(static_cast<double>(h.percentile(50))), ms(static_cast<double>(h.percentile(90))),
                     ms(static_cast<double>(h.percentile(99))), ms(static_cast<double>(h.percentile(99.9))),
                     ms(static_cast<double>(h.max())), ms(h.mean()));
}

}  // namespace

double RunResult::cpu_us_per_request() const {
  const uint64_t completed = stats.requests + stats.held.requests;
  return completed ? cpu_us / static_cast<double>(completed) : 0;
}

nlohmann::ordered_json report_json(const Options& options, const RunResult& result) {
  const RunStats& s = result.stats;
  nlohmann::ordered_json j;
  j["url"] = options.url;
  j["mode"] = options.open_loop() ? "open" : "closed";
  j["connection"] = connection_mode_name(options.connection);
  j["connections"] = options.connections;
  j["threads"] = options.threads;
  j["rate"] = options.rate ? nlohmann::ordered_json(*options.rate) : nlohmann::ordered_json(nullptr);
  j["duration_s"] = std::round(result.duration_s * 1e6) / 1e6;
  j["requests"] = s.requests;
  j["rps"] = round_tenth(result.rps());
  j["latency_us"] = latency_json(s.latency);
  nlohmann::ordered_json paths = nlohmann::ordered_json::object();
  const auto& mix = options.mix.paths();
  for (size_t i = 0; i < mix.size(); i++) {
    paths[mix[i].path] = {{"requests", s.path_latency[i].count()}, {"latency_us", latency_json(s.path_latency[i])}};
  }
  j["paths"] = paths;
  nlohmann::ordered_json errors = nlohmann::ordered_json::object();
  for (size_t i = 0; i < kErrorKinds; i++) errors[error_kind_name(static_cast<ErrorKind>(i))] = s.errors[i];
  j["errors"] = errors;
  j["errors_total"] = s.errors_total();
  nlohmann::ordered_json workers = nlohmann::ordered_json::object();
  for (const auto& [worker, count] : s.workers.sorted()) workers[worker] = count;
  j["workers"] = workers;
  j["held"] = {{"connections", s.held.connections}, {"requests", s.held.requests}, {"errors_total", s.held.errors}};
  j["client_cpu_us_per_request"] = std::round(result.cpu_us_per_request() * 100.0) / 100.0;
  return j;
}

std::string report_table(const Options& options, const RunResult& result) {
  const RunStats& s = result.stats;
  std::string out;
  const std::string loop = options.open_loop() ? fmt::format("open loop at {:g} req/s", *options.rate) : "closed loop";
  out += fmt::format("lbload {}: {}, {}, {} connections, {} thread{}\n", options.url, loop,
                     connection_mode_name(options.connection), options.connections, options.threads,
                     options.threads == 1 ? "" : "s");
  const char* unit = options.connection == ConnectionMode::kConnectOnly ? "connections" : "requests";
  out += fmt::format("  {:<14}{} in {:.2f} s = {:.1f} {}/s\n", unit, s.requests, result.duration_s,
                     result.rps(), options.connection == ConnectionMode::kConnectOnly ? "conn" : "req");
  out += fmt::format("  {:<14}{}\n", "latency (ms)", latency_line(s.latency));

  std::string errors;
  for (size_t i = 0; i < kErrorKinds; i++) {
    if (s.errors[i]) errors += fmt::format("{}{} {}", errors.empty() ? "" : ", ", error_kind_name(static_cast<ErrorKind>(i)), s.errors[i]);
  }
  out += fmt::format("  {:<14}{}{}\n", "errors", s.errors_total(), errors.empty() ? "" : " (" + errors + ")");

  if (options.connection != ConnectionMode::kConnectOnly) {
    std::string workers;
    for (const auto& [worker, count] : s.workers.sorted()) {
      workers += fmt::format("{}{}: {}", workers.empty() ? "" : "  ", worker, count);
    }
    out += fmt::format("  {:<14}{}\n", "workers", workers.empty() ? "(no answers)" : workers);
  }
  if (options.mix.size() > 1) {
    out += "  per path (ms)\n";
    const auto& mix = options.mix.paths();
    size_t width = 0;
    for (const auto& p : mix) width = std::max(width, p.path.size());
    for (size_t i = 0; i < mix.size(); i++) {
      out += fmt::format("    {:<{}}  {:>9} req  {}\n", mix[i].path, width, s.path_latency[i].count(),
                         latency_line(s.path_latency[i]));
    }
  }
  if (options.hold > 0) {
    out += fmt::format("  {:<14}{} connections, {} requests, {} errors\n", "held", s.held.connections,
                       s.held.requests, s.held.errors);
  }
  out += fmt::format("  {:<14}{:.2f} us/request (io_uring {})\n", "client CPU", result.cpu_us_per_request(),
                     result.ring_mode.empty() ? "?" : result.ring_mode);
  return out;
}

}  // namespace lbd::load
