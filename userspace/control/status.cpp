#include "control/status.h"

namespace lbd::control {

namespace {

using nlohmann::json;

const json& member(const json& j, const char* key) {
  static const json kNull;
  if (!j.is_object()) return kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

// A count: a whole number, not negative (as parsed JSON stores it, or as built in memory).
bool is_count(const json& j) { return j.is_number_unsigned() || (j.is_number_integer() && j.get<int64_t>() >= 0); }

std::optional<uint64_t> count(const json& j, const char* key) {
  const json& v = member(j, key);
  return is_count(v) ? std::optional(v.get<uint64_t>()) : std::nullopt;
}
std::optional<int64_t> integer(const json& j, const char* key) {
  const json& v = member(j, key);
  return v.is_number_integer() ? std::optional(v.get<int64_t>()) : std::nullopt;
}
std::optional<double> number(const json& j, const char* key) {
  const json& v = member(j, key);
  return v.is_number() ? std::optional(v.get<double>()) : std::nullopt;
}
std::optional<std::string> text(const json& j, const char* key) {
  const json& v = member(j, key);
  return v.is_string() ? std::optional(v.get<std::string>()) : std::nullopt;
}
std::optional<std::vector<std::string>> texts(const json& j, const char* key) {
  const json& v = member(j, key);
  if (!v.is_array()) return std::nullopt;
  std::vector<std::string> out;
  for (const auto& e : v) {
    if (e.is_string()) out.push_back(e.get<std::string>());
  }
  return out;
}

template <class T>
void put(json& j, const char* key, const std::optional<T>& value) {
  if (value) j[key] = *value;
}

}  // namespace

std::optional<LatencyHistogram> LatencyHistogram::from_json(const json& j) {
  if (!j.is_object()) return std::nullopt;
  const json& bounds = member(j, "bounds_seconds");
  const json& counts = member(j, "counts");
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
  h.sum_seconds = number(j, "sum_seconds").value_or(0);
  return h;
}

LatencyHistogram LatencyHistogram::zeroed() const {
  return {bounds_seconds, std::vector<uint64_t>(counts.size(), 0), 0};
}

json to_json(const StatusReport& report) {
  const LbdStatus& l = report.lbd;
  json lbd = {{"pid", l.pid ? json(*l.pid) : json(nullptr)},
              {"version", l.version},
              {"app", l.app},
              {"mode", l.mode},
              {"policy", l.policy},
              {"listen", l.listen},
              {"uptime_s", l.uptime_s},
              {"reloads", l.reloads},
              {"reload_failures", l.reload_failures},
              {"operation", l.operation ? json(*l.operation) : json(nullptr)}};
  put(lbd, "fallbacks", l.fallbacks);
  put(lbd, "command", l.command);
  put(lbd, "log", l.log);
  put(lbd, "log_dropped_lines", l.log_dropped_lines);
  put(lbd, "max_memory_bytes", l.max_memory_bytes);
  put(lbd, "memory_replacements", l.memory_replacements);

  json workers = json::array();
  for (const WorkerStatus& w : report.workers) {
    json row = {{"slot", w.slot},
                {"pid", w.pid ? json(*w.pid) : json(nullptr)},
                {"cpu", w.cpu},
                {"state", w.state},
                {"restarts", w.restarts}};
    put(row, "uptime_s", w.uptime_s);
    put(row, "connections", w.connections);
    row["full"] = w.full;
    put(row, "accepted", w.accepted);
    put(row, "requests", w.requests);
    put(row, "inflight", w.inflight);
    put(row, "rss_bytes", w.rss_bytes);
    put(row, "cpu_percent", w.cpu_percent);
    if (w.latency_histogram) {
      row["latency_histogram"] = {{"bounds_seconds", w.latency_histogram->bounds_seconds},
                                  {"counts", w.latency_histogram->counts},
                                  {"sum_seconds", w.latency_histogram->sum_seconds}};
    }
    put(row, "steered", w.steered);
    put(row, "migrated_in", w.migrated_in);
    workers.push_back(std::move(row));
  }
  return {{"lbd", std::move(lbd)}, {"workers", std::move(workers)}};
}

StatusReport status_from_json(const json& j) {
  StatusReport report;
  const json& l = member(j, "lbd");
  LbdStatus& lbd = report.lbd;
  lbd.pid = integer(l, "pid");
  lbd.version = text(l, "version").value_or("-");
  lbd.app = text(l, "app").value_or("-");
  lbd.mode = text(l, "mode").value_or("-");
  lbd.policy = text(l, "policy").value_or("-");
  lbd.listen = texts(l, "listen").value_or(std::vector<std::string>{});
  lbd.uptime_s = number(l, "uptime_s").value_or(0);
  lbd.reloads = count(l, "reloads").value_or(0);
  lbd.reload_failures = count(l, "reload_failures").value_or(0);
  lbd.operation = text(l, "operation");
  lbd.fallbacks = count(l, "fallbacks");
  lbd.command = texts(l, "command");
  lbd.log = text(l, "log");
  lbd.log_dropped_lines = count(l, "log_dropped_lines");
  lbd.max_memory_bytes = count(l, "max_memory_bytes");
  lbd.memory_replacements = count(l, "memory_replacements");

  const json& workers = member(j, "workers");
  if (!workers.is_array()) return report;
  for (const json& w : workers) {
    WorkerStatus row;
    row.slot = static_cast<uint32_t>(count(w, "slot").value_or(0));
    row.pid = integer(w, "pid");
    row.cpu = static_cast<int>(integer(w, "cpu").value_or(-1));
    row.state = text(w, "state").value_or("-");
    row.uptime_s = number(w, "uptime_s");
    row.restarts = count(w, "restarts").value_or(0);
    row.connections = count(w, "connections");
    row.full = member(w, "full").is_boolean() && member(w, "full").get<bool>();
    row.accepted = count(w, "accepted");
    row.requests = count(w, "requests");
    row.inflight = count(w, "inflight");
    row.rss_bytes = count(w, "rss_bytes");
    row.cpu_percent = number(w, "cpu_percent");
    row.latency_histogram = LatencyHistogram::from_json(member(w, "latency_histogram"));
    row.steered = count(w, "steered");
    row.migrated_in = count(w, "migrated_in");
    report.workers.push_back(std::move(row));
  }
  return report;
}

}  // namespace lbd::control
