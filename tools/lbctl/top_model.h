// What `lbctl top` shows, computed from two `status` answers taken some time apart: no terminal,
// no socket, no clock, so all of it is unit-tested (tests/unit/lbctl_top_model_test.cpp). The screen
// (top.cpp) and the plain-text snapshot print the same lines.
//
//   Dashboard d = build_dashboard(&previous_status, status, seconds_between_them);
//   for (const auto& line : header_lines(d.overview)) ...
//   column_header(); format_row(d.rows[0]);
//
// Rates and p99 are over the interval between the two answers; the first screen, which has no
// previous answer, shows "-" for them. A worker is followed across the two answers by its pid.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "control/status.h"

namespace lbd::ctl {

// A worker's request durations as `status` reports them (control/status.h).
using LatencyHistogram = control::LatencyHistogram;

// Where a percentile falls: at most `seconds` (the upper bound of its bucket), or, when
// `beyond_last_bound`, in the +Inf bucket, longer than the last bound `seconds`.
struct LatencyBound {
  double seconds = 0;
  bool beyond_last_bound = false;
  bool operator==(const LatencyBound&) const = default;
};

// The bucket bound at or below which `quantile` (0-1] of the requests answered between two
// snapshots of one process lie. Nothing when no request was answered in between, or when the
// two do not belong together (different bounds, a count that went down).
std::optional<LatencyBound> interval_percentile(const LatencyHistogram& before, const LatencyHistogram& now,
                                                double quantile);

// (now - before) / seconds; nothing for a counter that went down (another process) or no time.
std::optional<double> counter_rate(uint64_t before, uint64_t now, double seconds);

// One line of the table: one worker process, or a slot with no process (drained, failed ...).
struct WorkerRow {
  uint32_t slot = 0;
  std::optional<int64_t> pid;
  int cpu = -1;                 // the core it is pinned to; -1 not pinned
  std::string state;            // starting, active, draining; drained, failed ... for an empty slot
  std::optional<double> cpu_percent;
  std::optional<uint64_t> rss_bytes;
  std::optional<uint64_t> connections;
  std::optional<double> requests_per_s;
  std::optional<LatencyBound> p99;
};

// The header: lbd as a whole.
struct Overview {
  std::string version;
  std::optional<int64_t> pid;
  std::string mode;
  std::string policy;
  std::vector<std::string> listen;
  double uptime_s = 0;
  std::optional<std::string> operation;  // a reload, undrain ... in progress
  unsigned active = 0;                   // worker processes in each state
  unsigned starting = 0;
  unsigned draining = 0;
  uint64_t connections = 0;
  std::optional<double> requests_per_s;  // of the rows that have a rate
};

struct Dashboard {
  Overview overview;
  std::vector<WorkerRow> rows;  // in the order of the status answer (by slot)
};

// The dashboard for `now`, with rates and p99 over the `seconds` since `previous` (may be null:
// the first screen). What the answers do not say is shown as "-".
Dashboard build_dashboard(const control::StatusReport* previous, const control::StatusReport& now, double seconds);

// The policy `p` switches to: rr -> least -> hash -> rr (anything else: rr).
std::string next_policy(const std::string& current);

// --- text ---------------------------------------------------------------------------------------

// Where the state and the CPU bar sit in a row (format_row), for the screen to colour them.
inline constexpr int kStateColumn = 21;
inline constexpr int kStateWidth = 10;  // "restarting"
inline constexpr int kBarColumn = 33;
inline constexpr int kBarWidth = 12;    // "[" + ten marks + "]"

// Two lines: who and where; then the totals.
std::vector<std::string> header_lines(const Overview& overview);
std::string column_header();
std::string format_row(const WorkerRow& row);
// A bar of `width` characters, brackets included, for a CPU percentage of one core:
// "[|||||     ]" for 50 %.
std::string cpu_bar(std::optional<double> percent, int width = kBarWidth);
// The header, a blank line, the column header and the rows, newline-terminated: what
// `lbctl top | cat` prints.
std::string plain_snapshot(const Dashboard& dashboard);

}  // namespace lbd::ctl
