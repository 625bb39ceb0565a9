// Starting a worker process: fork, place the inherited fds at known numbers, pin to a CPU, and
// execute the lbd binary on disk with the worker's spec in its environment. Executing (rather
// than running the worker in the forked copy) means a worker is always a clean process with only
// the fds it was given, and a reload runs whatever build is on disk now.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/result.h"
#include "worker/worker_spec.h"

namespace lbd {

struct WorkerLaunch {
  std::string binary;  // the program to execute (the path lbd was started from)
  std::string title;   // argv[0] of the worker, what ps shows: "lbd: worker 3"
  int cpu = -1;        // pin to this CPU before exec; -1 = no pinning
  // The supervisor's fds to pass; -1 for none. spawn_worker() renumbers them in the child and
  // writes the child's numbers into the spec it passes.
  int status_fd = -1;
  int slot_table_fd = -1;
  int stats_fd = -1;
  int handoff_fd = -1;
  int handover_in_fd = -1;
  std::vector<int> listener_fds;
  WorkerSpec spec;     // everything else the worker needs
};

// Returns the child's pid. If exec fails, the child reports "EXEC_FAILED=<errno>" on its status
// fd and exits with 127, so the supervisor learns why without waiting on it.
Result<pid_t> spawn_worker(const WorkerLaunch& launch);

// The absolute path of the running binary, resolved at start-up so later launches execute the
// file now at that path (a new build), not the deleted inode /proc/self/exe may point to.
std::string current_binary_path();

}  // namespace lbd
