#include "lbload/stats.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <numeric>

namespace lbd::load {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kRefused: return "refused";
    case ErrorKind::kReset: return "reset";
    case ErrorKind::kTimeout: return "timeout";
    case ErrorKind::kClosed: return "closed";
    case ErrorKind::kBadStatus: return "bad_status";
    case ErrorKind::kBadResponse: return "bad_response";
    case ErrorKind::kOther: return "other";
  }
  return "other";
}

ErrorKind classify_errno(int err) {
  switch (err) {
    case ECONNREFUSED: return ErrorKind::kRefused;
    case ECONNRESET:
    case EPIPE: return ErrorKind::kReset;
    case ETIMEDOUT:
    case ECANCELED: return ErrorKind::kTimeout;  // lbload cancels only what outlived --timeout
    default: return ErrorKind::kOther;
  }
}

void WorkerTally::add(std::string_view worker, uint64_t count) {
  if (worker.empty()) worker = kMissing;
  for (auto& [name, n] : counts_) {
    if (name == worker) {
      n += count;
      return;
    }
  }
  counts_.emplace_back(std::string(worker), count);
}

void WorkerTally::merge(const WorkerTally& other) {
  for (const auto& [name, n] : other.counts_) add(name, n);
}

uint64_t WorkerTally::count(std::string_view worker) const {
  for (const auto& [name, n] : counts_) {
    if (name == worker) return n;
  }
  return 0;
}

std::vector<std::pair<std::string, uint64_t>> WorkerTally::sorted() const {
  auto as_number = [](const std::string& s) {
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    return std::make_pair(ec != std::errc() || end != s.data() + s.size() || s.empty(), value);
  };
  auto result = counts_;
  std::sort(result.begin(), result.end(), [&](const auto& a, const auto& b) {
    // Numbers first in numeric order, then other values alphabetically, "-" last.
    const bool a_missing = a.first == kMissing, b_missing = b.first == kMissing;
    if (a_missing != b_missing) return b_missing;
    const auto [a_text, a_value] = as_number(a.first);
    const auto [b_text, b_value] = as_number(b.first);
    if (a_text != b_text) return b_text;
    if (!a_text && a_value != b_value) return a_value < b_value;
    return a.first < b.first;
  });
  return result;
}

void HeldStats::merge(const HeldStats& other) {
  connections += other.connections;
  requests += other.requests;
  errors += other.errors;
}

RunStats::RunStats(size_t path_count) : path_latency(path_count) {}

void RunStats::record_success(size_t path, uint64_t latency_ns) {
  requests++;
  latency.record(latency_ns);
  path_latency[path].record(latency_ns);
}

uint64_t RunStats::errors_total() const { return std::accumulate(errors.begin(), errors.end(), uint64_t{0}); }

void RunStats::merge(const RunStats& other) {
  requests += other.requests;
  latency.merge(other.latency);
  for (size_t i = 0; i < path_latency.size() && i < other.path_latency.size(); i++) {
    path_latency[i].merge(other.path_latency[i]);
  }
  for (size_t i = 0; i < kErrorKinds; i++) errors[i] += other.errors[i];
  workers.merge(other.workers);
  held.merge(other.held);
}

}  // namespace lbd::load
