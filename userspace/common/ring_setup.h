// Creating an io_uring with the fastest flags this kernel accepts: shared by the worker's ring
// (worker/ring.cpp) and lbload's (tools/lbload/client_ring.cpp), which want the same trade-offs.
#pragma once

#include <liburing.h>

#include <cerrno>

#include "common/result.h"

namespace lbd {

struct RingSetupAttempt {
  unsigned flags;
  const char* name;
};

// Fastest first. SINGLE_ISSUER + DEFER_TASKRUN run completions only when the thread waits, so a
// whole batch is reaped in one io_uring_enter; SUBMIT_ALL keeps submitting after one bad entry,
// so one failed operation cannot strand the rest of a batch.
inline constexpr RingSetupAttempt kRingSetupAttempts[] = {
    {IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
     "single-issuer+defer-taskrun"},
    {IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN, "coop-taskrun"},
    {0, "plain"},
};

// Initialises `ring` with the first attempt the kernel accepts (an unknown flag is EINVAL) and a
// completion queue of `cq_entries`; `params` says what the kernel offers. Returns the attempt's
// name, for the log. On failure `ring` is left uninitialised.
// `extra_flags` are added to every attempt (the worker's IORING_SETUP_R_DISABLED).
inline Result<const char*> init_fastest_ring(io_uring& ring, unsigned sq_entries,
                                             unsigned cq_entries, io_uring_params& params,
                                             unsigned extra_flags = 0) {
  int last_error = EINVAL;
  for (const RingSetupAttempt& attempt : kRingSetupAttempts) {
    params = io_uring_params{};
    params.flags = attempt.flags | IORING_SETUP_CQSIZE | extra_flags;
    params.cq_entries = cq_entries;
    const int err = io_uring_queue_init_params(sq_entries, &ring, &params);
    if (err == 0) return attempt.name;
    last_error = -err;
    if (err != -EINVAL) break;
  }
  return Error::from_errno(last_error, "io_uring_setup");
}

}  // namespace lbd
