// The answer to `status`, as one typed record that lbd fills (supervisor/control_verbs.cpp) and
// lbctl reads (`lbctl status`, `lbctl top`): its JSON form is written and read here only, and a
// unit test round-trips it (tests/unit/control_test.cpp).
//
// Reading is lenient: a field that is missing, null or of another type is "not known" (a default
// or nothing) rather than an error, so an lbctl talking to an older or newer lbd still shows what
// it can.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lbd::control {

// A worker process's request durations since it started: per-bucket counts, not cumulative;
// counts has one more entry than bounds, the last one for +Inf. A client subtracts two snapshots
// of the same pid to read an interval's percentiles.
struct LatencyHistogram {
  std::vector<double> bounds_seconds;  // upper bounds, inclusive, increasing
  std::vector<uint64_t> counts;
  double sum_seconds = 0;

  // Nothing if the field is missing or malformed (an lbd from before the histogram existed).
  static std::optional<LatencyHistogram> from_json(const nlohmann::json& j);
  // Zero counts with the same bounds: a process that did not exist at the previous answer.
  LatencyHistogram zeroed() const;
  bool operator==(const LatencyHistogram&) const = default;
};

// One row: a worker process, or a slot with no process (then `pid` is none and `state` says why:
// drained, failed, removing, restarting, empty).
struct WorkerStatus {
  uint32_t slot = 0;
  std::optional<int64_t> pid;
  int cpu = -1;  // the core it is pinned to; -1: not pinned
  std::string state;  // starting, active, draining; or the empty slot's reason
  std::optional<double> uptime_s;
  uint64_t restarts = 0;  // crash restarts of the slot
  std::optional<uint64_t> connections;
  bool full = false;                  // its connection table is full: it has stopped accepting
  std::optional<uint64_t> accepted;   // the slot's table entry (a draining process has none)
  std::optional<uint64_t> requests;
  std::optional<uint64_t> inflight;
  std::optional<uint64_t> rss_bytes;
  std::optional<double> cpu_percent;
  std::optional<LatencyHistogram> latency_histogram;
  std::optional<uint64_t> steered;      // --mode bpf: what the steering program sent the slot
  std::optional<uint64_t> migrated_in;  // ... and moved to it from a closing listener
  bool operator==(const WorkerStatus&) const = default;
};

struct LbdStatus {
  std::optional<int64_t> pid;
  std::string version;
  std::string app;
  std::string mode;
  std::string policy;  // "kernel" outside --mode bpf
  std::vector<std::string> listen;
  double uptime_s = 0;
  uint64_t reloads = 0;
  uint64_t reload_failures = 0;
  std::optional<std::string> operation;  // a reload, undrain ... in progress
  std::optional<uint64_t> fallbacks;     // --mode bpf: connections left to the kernel's hash
  // Exec mode.
  std::optional<std::vector<std::string>> command;
  std::optional<std::string> log;
  std::optional<uint64_t> log_dropped_lines;
  // --max-memory.
  std::optional<uint64_t> max_memory_bytes;
  std::optional<uint64_t> memory_replacements;
  bool operator==(const LbdStatus&) const = default;
};

struct StatusReport {
  LbdStatus lbd;
  std::vector<WorkerStatus> workers;
  bool operator==(const StatusReport&) const = default;
};

nlohmann::json to_json(const StatusReport& report);
StatusReport status_from_json(const nlohmann::json& j);

}  // namespace lbd::control
