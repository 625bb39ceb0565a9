#include "lbctl/top_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "lbctl/format.h"

namespace lbd::ctl {

namespace {

using nlohmann::json;

// Status fields, read leniently: a field that is missing, null or of another type is "not known"
// rather than an error, so a newer or older lbd still gets a screen.
// A count: a whole number, not negative (as parsed JSON stores it, or as built in memory).
bool is_count(const json& j) { return j.is_number_unsigned() || (j.is_number_integer() && j.get<int64_t>() >= 0); }

std::optional<uint64_t> unsigned_field(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !is_count(*it)) return std::nullopt;
  return it->get<uint64_t>();
}

std::optional<int64_t> integer_field(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<int64_t>();
}

std::optional<double> number_field(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

std::string string_field(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string("-");
}

const json& workers_of(const json& status) {
  static const json kNone = json::array();
  auto it = status.find("workers");
  return it != status.end() && it->is_array() ? *it : kNone;
}

// The requests the process itself answered before the previous answer, as a base for its rate.
// A starting worker has answered none yet; its `requests` field is its slot's counter, which
// still belongs to the worker it is about to replace.
std::optional<uint64_t> requests_before(const json& previous_row) {
  if (string_field(previous_row, "state") == "starting") return 0;
  return unsigned_field(previous_row, "requests");
}

WorkerRow build_row(const json& w, const json* previous_row, bool have_previous, double seconds) {
  WorkerRow row;
  row.slot = static_cast<uint32_t>(unsigned_field(w, "slot").value_or(0));
  row.pid = integer_field(w, "pid");
  row.cpu = static_cast<int>(integer_field(w, "cpu").value_or(-1));
  row.state = string_field(w, "state");
  row.cpu_percent = number_field(w, "cpu_percent");
  row.rss_bytes = unsigned_field(w, "rss_bytes");
  row.connections = unsigned_field(w, "connections");
  if (!have_previous || !row.pid) return row;

  // A process that is not in the previous answer started after it: everything it counted
  // happened within the interval.
  if (auto requests = unsigned_field(w, "requests"); requests && row.state != "starting") {
    const auto before = previous_row ? requests_before(*previous_row) : std::optional<uint64_t>(0);
    if (before) row.requests_per_s = counter_rate(*before, *requests, seconds);
  }
  if (auto now = LatencyHistogram::from_status(w)) {
    const auto before = previous_row ? LatencyHistogram::from_status(*previous_row) : now->zeroed();
    if (before) row.p99 = interval_percentile(*before, *now, 0.99);
  }
  return row;
}

}  // namespace

std::optional<LatencyHistogram> LatencyHistogram::from_status(const json& worker) {
  auto it = worker.find("latency_histogram");
  if (it == worker.end() || !it->is_object()) return std::nullopt;
  const json& bounds = it->value("bounds_seconds", json());
  const json& counts = it->value("counts", json());
  if (!bounds.is_array() || !counts.is_array() || counts.size() != bounds.size() + 1) return std::nullopt;
  LatencyHistogram h;
  for (const auto& b : bounds) {
    if (!b.is_number()) return std::nullopt;
    h.bounds_seconds.push_back(b.get<double>());
  }
  for (const auto& c : counts) {
    if (!is_count(c)) return std::nullopt;
    h.counts.push_back(c.get<uint64_t>());
  }
  return h;
}

LatencyHistogram LatencyHistogram::zeroed() const {
  return {bounds_seconds, std::vector<uint64_t>(counts.size(), 0)};
}

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

Dashboard build_dashboard(const json* previous, const json& now, double seconds) {
  Dashboard d;
  static const json kEmpty = json::object();
  auto lbd_it = now.find("lbd");
  const json& lbd = lbd_it != now.end() && lbd_it->is_object() ? *lbd_it : kEmpty;
  Overview& o = d.overview;
  o.version = string_field(lbd, "version");
  o.pid = integer_field(lbd, "pid");
  o.mode = string_field(lbd, "mode");
  o.policy = string_field(lbd, "policy");
  if (auto listen = lbd.find("listen"); listen != lbd.end() && listen->is_array()) {
    for (const auto& a : *listen) {
      if (a.is_string()) o.listen.push_back(a.get<std::string>());
    }
  }
  o.uptime_s = number_field(lbd, "uptime_s").value_or(0);
  if (auto op = lbd.find("operation"); op != lbd.end() && op->is_string()) o.operation = op->get<std::string>();

  std::map<int64_t, const json*> previous_by_pid;
  if (previous) {
    for (const auto& w : workers_of(*previous)) {
      if (auto pid = integer_field(w, "pid")) previous_by_pid[*pid] = &w;
    }
  }
  for (const auto& w : workers_of(now)) {
    const json* previous_row = nullptr;
    if (auto pid = integer_field(w, "pid")) {
      auto it = previous_by_pid.find(*pid);
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
