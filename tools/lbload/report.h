// The end-of-run report: a table for people, or one JSON object (--json) for scripts. Both say
// the same things: throughput, latency percentiles (overall and per path), errors by kind,
// answers per worker, the --hold tally and lbload's own CPU cost per request.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "lbload/options.h"
#include "lbload/stats.h"

namespace lbd::load {

struct RunResult {
  RunStats stats;
  double duration_s = 0;  // measured, start to the last thread's end
  double cpu_us = 0;      // lbload's user + system CPU over the run (getrusage RUSAGE_SELF)
  std::string ring_mode;  // the io_uring setup flags the kernel accepted

  double rps() const { return duration_s > 0 ? static_cast<double>(stats.requests) / duration_s : 0; }
  // CPU per completed request, held ones included (they cost CPU too); 0 when none completed.
  double cpu_us_per_request() const;
};

nlohmann::ordered_json report_json(const Options& options, const RunResult& result);
std::string report_table(const Options& options, const RunResult& result);

}  // namespace lbd::load
