// A whole load run: one Engine per thread, each with its share of the connections, released
// together at one start time; their statistics merged at the end, with lbload's own CPU time.
#pragma once

#include <atomic>

#include "common/result.h"
#include "lbload/options.h"
#include "lbload/report.h"

namespace lbd::load {

// `stop` ends the run early (SIGINT); the report then covers what ran. Fails only when setting up
// (a ring, the descriptor limit); what goes wrong on the network is counted, not returned.
Result<RunResult> run_load(const Options& options, std::atomic<bool>& stop);

}  // namespace lbd::load
