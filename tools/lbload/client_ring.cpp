#include "lbload/client_ring.h"

#include <cerrno>

#include "common/ring_setup.h"

namespace lbd::load {

namespace {

Error missing(const char* what) {
  return Error(std::error_code(ENOSYS, std::system_category()),
               std::string("io_uring lacks ") + what + " (lbload needs Linux 6.0 or later)");
}

}  // namespace

Result<ClientRing> ClientRing::create(unsigned entries, unsigned files) {
  auto raw = std::make_unique<io_uring>();
  io_uring_params params{};
  auto mode = init_fastest_ring(*raw, entries, entries * 4, params);
  if (!mode) return mode.error();
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
  return ClientRing(std::move(ring), *mode);
}

}  // namespace lbd::load
