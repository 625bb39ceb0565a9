#include "lbload/client_ring.h"

#include <cerrno>

namespace lbd::load {

namespace {

struct SetupAttempt {
  unsigned flags;
  const char* name;
};

// Cheapest first. DEFER_TASKRUN runs completions only when the thread waits, so a whole batch of
// responses is reaped in one io_uring_enter; SUBMIT_ALL keeps one bad entry from stranding the
// rest of a batch.
constexpr SetupAttempt kAttempts[] = {
    {IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
     "single-issuer+defer-taskrun"},
    {IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN, "coop-taskrun"},
    {0, "plain"},
};

Error missing(const char* what) {
  return Error(std::error_code(ENOSYS, std::system_category()),
               std::string("io_uring lacks ") + what + " (lbload needs Linux 6.0 or later)");
}

}  // namespace

Result<ClientRing> ClientRing::create(unsigned entries, unsigned files) {
  int last_error = EINVAL;
  for (const SetupAttempt& attempt : kAttempts) {
    auto raw = std::make_unique<io_uring>();
    io_uring_params params{};
    params.flags = attempt.flags | IORING_SETUP_CQSIZE;
    params.cq_entries = entries * 4;
    const int err = io_uring_queue_init_params(entries, raw.get(), &params);
    if (err == -EINVAL) {  // a flag this kernel does not know: try the next set
      last_error = EINVAL;
      continue;
    }
    if (err < 0) return Error::from_errno(-err, "io_uring_setup");
    std::unique_ptr<io_uring, Deleter> ring(raw.release());

    // Features the event loop relies on: one-syscall submit-and-wait with a timeout, and
    // completions only for the operations that fail (sends, connects).
    if (!(params.features & IORING_FEAT_EXT_ARG)) return missing("IORING_FEAT_EXT_ARG");
    if (!(params.features & IORING_FEAT_CQE_SKIP)) return missing("IORING_FEAT_CQE_SKIP");
    io_uring_probe* probe = io_uring_get_probe_ring(ring.get());
    const bool has_socket = probe && io_uring_opcode_supported(probe, IORING_OP_SOCKET);
    if (probe) io_uring_free_probe(probe);
    if (!has_socket) return missing("IORING_OP_SOCKET");

    // Saves an fget/fput on every io_uring_enter; optional.
    io_uring_register_ring_fd(ring.get());
    if (int ferr = io_uring_register_files_sparse(ring.get(), files); ferr < 0) {
      return Error::from_errno(-ferr, "register " + std::to_string(files) + " direct descriptors");
    }
    return ClientRing(std::move(ring), attempt.name);
  }
  return Error::from_errno(last_error, "io_uring_setup");
}

}  // namespace lbd::load
