#include "lbctl/top_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "lbctl/format.h"

namespace lbd::ctl {

namespace {

// The requests the process itself answered before the previous answer, as a base for its rate.
// A starting worker has answered none yet; its `requests` field is its slot's counter, which
// still belongs to the worker it is about to replace.
std::optional<uint64_t> requests_before(const control::WorkerStatus& previous_row) {
  if (previous_row.state == "starting") return 0;
  return previous_row.requests;
}

WorkerRow build_row(const control::WorkerStatus& w, const control::WorkerStatus* previous_row, bool have_previous,
                    double seconds) {
  WorkerRow row;
  row.slot = w.slot;
  row.pid = w.pid;
  row.cpu = w.cpu;
  row.state = w.state;
  row.cpu_percent = w.cpu_percent;
  row.rss_bytes = w.rss_bytes;
  row.connections = w.connections;
  if (!have_previous || !row.pid) return row;

  // A process that is not in the previous answer started after it: everything it counted
  // happened within the interval.
  if (w.requests && row.state != "starting") {
    const auto before = previous_row ? requests_before(*previous_row) : std::optional<uint64_t>(0);
    if (before) row.requests_per_s = counter_rate(*before, *w.requests, seconds);
  }
  if (w.latency_histogram) {
    const auto before = previous_row ? previous_row->latency_histogram : w.latency_histogram->zeroed();
    if (before) row.p99 = interval_percentile(*before, *w.latency_histogram, 0.99);
  }
  return row;
}

}  // namespace

std::optional<LatencyBound> interval_percentile(const LatencyHistogram& before, const LatencyHistogram& now,
                                                double quantile) {
  const auto& bounds = now.bounds_seconds;
  if (bounds.empty() || before.bounds_seconds != bounds || now.counts.size() != bounds.size() + 1 ||
      before.counts.size() != now.counts.size()) {
    return std::nullopt;
  }
  std::vector<uint64_t> delta(now.counts.size());
  uint64_t total = 0;
  for (size_t i = 0; i < delta.size(); i++) {
    if (now.counts[i] < before.counts[i]) return std::nullopt;
    delta[i] = now.counts[i] - before.counts[i];
    total += delta[i];
  }
  if (total == 0) return std::nullopt;
  // The 1-based rank of the request at the percentile: with 200 requests, p99 is the 198th
  // fastest. The epsilon keeps 0.99 * 100 (98.99999... in binary) from rounding up past 99.
  const double wanted = std::ceil(quantile * static_cast<double>(total) - 1e-9);
  const uint64_t rank = std::clamp<uint64_t>(static_cast<uint64_t>(std::max(wanted, 1.0)), 1, total);
  uint64_t seen = 0;
  for (size_t i = 0; i < delta.size(); i++) {
    seen += delta[i];
    if (seen < rank) continue;
    if (i < bounds.size()) return LatencyBound{bounds[i], false};
    return LatencyBound{bounds.back(), true};
  }
  return std::nullopt;  // unreachable: the last bucket brings `seen` to `total`
}

std::optional<double> counter_rate(uint64_t before, uint64_t now, double seconds) {
  if (now < before || !(seconds > 0)) return std::nullopt;
  return static_cast<double>(now - before) / seconds;
}

Dashboard build_dashboard(const control::StatusReport* previous, const control::StatusReport& now, double seconds) {
  Dashboard d;
  Overview& o = d.overview;
  o.version = now.lbd.version;
  o.pid = now.lbd.pid;
  o.mode = now.lbd.mode;
  o.policy = now.lbd.policy;
  o.listen = now.lbd.listen;
  o.uptime_s = now.lbd.uptime_s;
  o.operation = now.lbd.operation;

  std::map<int64_t, const control::WorkerStatus*> previous_by_pid;
  if (previous) {
    for (const auto& w : previous->workers) {
      if (w.pid) previous_by_pid[*w.pid] = &w;
    }
  }
  for (const auto& w : now.workers) {
    const control::WorkerStatus* previous_row = nullptr;
    if (w.pid) {
      auto it = previous_by_pid.find(*w.pid);
      if (it != previous_by_pid.end()) previous_row = it->second;
    }
    WorkerRow row = build_row(w, previous_row, previous != nullptr, seconds);
    if (row.pid) {
      if (row.state == "active") o.active++;
      else if (row.state == "starting") o.starting++;
      else if (row.state == "draining") o.draining++;
    }
    o.connections += row.connections.value_or(0);
    if (row.requests_per_s) o.requests_per_s = o.requests_per_s.value_or(0) + *row.requests_per_s;
    d.rows.push_back(std::move(row));
  }
  return d;
}

std::string next_policy(const std::string& current) {
  if (current == "rr") return "least";
  if (current == "least") return "hash";
  if (current == "hash") return "sticky";
  return "rr";
}

// --- text ---------------------------------------------------------------------------------------

namespace {

// The widths here and kStateColumn / kBarColumn in the header go together.
constexpr char kRowFormat[] = "%-4s  %-8s  %-3s  %-10s  %-12s %6s  %7s  %6s  %7s  %7s";

std::string format_columns(const std::string& slot, const std::string& pid, const std::string& cpu,
                           const std::string& state, const std::string& bar, const std::string& percent,
                           const std::string& rss, const std::string& connections, const std::string& rate,
                           const std::string& p99) {
  char line[256];
  snprintf(line, sizeof(line), kRowFormat, slot.c_str(), pid.c_str(), cpu.c_str(), state.c_str(), bar.c_str(),
           percent.c_str(), rss.c_str(), connections.c_str(), rate.c_str(), p99.c_str());
  return line;
}

}  // namespace

std::vector<std::string> header_lines(const Overview& o) {
  std::string listen;
  for (const auto& a : o.listen) listen += (listen.empty() ? "" : ",") + a;
  std::string first = "lbd " + o.version + "  pid " + (o.pid ? std::to_string(*o.pid) : "-") + "  mode " + o.mode +
                      "  policy " + o.policy + "  up " + human_duration(o.uptime_s) + "  listen " +
                      (listen.empty() ? "-" : listen);
  std::string second = "workers " + std::to_string(o.active) + " active, " + std::to_string(o.starting) +
                       " starting, " + std::to_string(o.draining) + " draining  connections " +
                       std::to_string(o.connections) + "  req/s " +
                       (o.requests_per_s ? human_rate(*o.requests_per_s) : "-");
  if (o.operation) second += "  (" + *o.operation + " in progress)";
  return {first, second};
}

std::string column_header() {
  return format_columns("SLOT", "PID", "CPU", "STATE", "CPU%", "", "RSS", "CONNS", "REQ/S", "P99");
}

std::string cpu_bar(std::optional<double> percent, int width) {
  const int marks = std::max(0, width - 2);
  const double share = percent ? std::clamp(*percent, 0.0, 100.0) / 100.0 : 0.0;
  const int filled = static_cast<int>(std::lround(share * marks));
  return "[" + std::string(static_cast<size_t>(filled), '|') + std::string(static_cast<size_t>(marks - filled), ' ') +
         "]";
}

std::string format_row(const WorkerRow& row) {
  char percent[16] = "-";
  if (row.cpu_percent) snprintf(percent, sizeof(percent), "%.1f%%", *row.cpu_percent);
  std::string p99 = "-";
  if (row.p99) p99 = (row.p99->beyond_last_bound ? ">" : "") + human_latency(row.p99->seconds);
  return format_columns(std::to_string(row.slot), row.pid ? std::to_string(*row.pid) : "-",
                        row.cpu >= 0 ? std::to_string(row.cpu) : "any", row.state,
                        row.pid ? cpu_bar(row.cpu_percent) : "", percent,
                        row.rss_bytes ? human_bytes(*row.rss_bytes) : "-",
                        row.connections ? std::to_string(*row.connections) : "-",
                        row.requests_per_s ? human_rate(*row.requests_per_s) : "-", p99);
}

std::string plain_snapshot(const Dashboard& dashboard) {
  std::string text;
  for (const auto& line : header_lines(dashboard.overview)) text += line + "\n";
  text += "\n" + column_header() + "\n";
  for (const auto& row : dashboard.rows) text += format_row(row) + "\n";
  return text;
}

}  // namespace lbd::ctl
