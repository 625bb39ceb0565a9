// The io_uring of one load thread: created with the cheapest setup this kernel accepts, with a
// sparse table of direct descriptors (one per connection slot: sockets made by IORING_OP_SOCKET
// live only there, never in the fd table, so they cost no fget/fput per operation and cannot
// leak into a child). RAII: destroying the ring closes every socket still in the table.
//
// Deliberately not userspace/worker/ring.h: the load generator links nothing of the server, so
// it cannot share the server's bugs or flatter it.
//
// Minimum kernel: 6.0 (IORING_OP_SOCKET into a fixed slot, cancel by fixed fd, CQE_SKIP_SUCCESS,
// IORING_RECVSEND_POLL_FIRST). create() probes and says what is missing.
#pragma once

#include <liburing.h>

#include <memory>
#include <string>
#include <utility>

#include "common/result.h"

namespace lbd::load {

class ClientRing {
 public:
  // `entries`: submission queue size (the completion queue is 4x); `files`: direct descriptors.
  static Result<ClientRing> create(unsigned entries, unsigned files);

  io_uring* get() { return ring_.get(); }
  // The setup flags the kernel accepted, for the report.
  const std::string& mode() const { return mode_; }

  // A submission entry, flushing the queue to the kernel first if it is full. Never null.
  // Not for the second and later entries of a linked chain: see reserve().
  io_uring_sqe* next_sqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
    while (!sqe) {
      io_uring_submit(ring_.get());
      sqe = io_uring_get_sqe(ring_.get());
    }
    return sqe;
  }

  // Makes room for `n` entries (at most the queue's size) that must reach the kernel in the same
  // io_uring_enter: a chain of IOSQE_IO_LINK entries. The kernel ends a link at the end of each
  // submission: a chain flushed half-way is two chains, its head is punted to an io-wq thread
  // and the tail runs at once, unordered with it (a recv on a slot whose socket does not exist
  // yet, EBADF, or is not connected yet, ENOTCONN; a send, EPIPE).
  void reserve(unsigned n) {
    while (io_uring_sq_space_left(ring_.get()) < n) io_uring_submit(ring_.get());
  }

 private:
  struct Deleter {
    void operator()(io_uring* ring) const {
      io_uring_queue_exit(ring);
      delete ring;
    }
  };
  ClientRing(std::unique_ptr<io_uring, Deleter> ring, std::string mode)
      : ring_(std::move(ring)), mode_(std::move(mode)) {}

  std::unique_ptr<io_uring, Deleter> ring_;
  std::string mode_;
};

}  // namespace lbd::load
