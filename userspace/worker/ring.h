// io_uring plumbing for a worker: the ring itself (with the fastest setup flags this kernel
// accepts) and a provided-buffer ring for multishot receives. Both are RAII.
//
// Minimum kernel: 6.0 (multishot accept into fixed files, multishot recv, buffer rings).
#pragma once

#include <liburing.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>

#include "common/mapped_memory.h"
#include "common/result.h"

namespace lbd {

class Ring {
 public:
  struct Options {
    unsigned sq_entries = 2048;
    unsigned cq_entries = 16384;
    unsigned fixed_files = 65536;  // sparse table for direct descriptors (one per connection)
  };

  // Tries SINGLE_ISSUER|DEFER_TASKRUN (completions run only when we wait: no interrupts, no
  // cross-CPU task work), then COOP_TASKRUN, then plain; registers the ring fd and a sparse
  // file table of `fixed_files` entries. The ring starts disabled: set it up, then lock_down().
  static Result<Ring> create(const Options& options);

  // Enables the ring with only the operations a worker uses (IORING_REGISTER_RESTRICTIONS): no
  // IORING_OP_URING_CMD, through which a compromised worker could issue setsockopt on its
  // listener out of seccomp's sight (sandbox/confine.h), and no opening, connecting or sending
  // of messages it never does. For good: restrictions cannot be lifted.
  Result<void> lock_down();

  Ring(Ring&&) noexcept = default;
  Ring& operator=(Ring&&) noexcept = default;
  ~Ring();

  io_uring* get() { return ring_.get(); }
  // Which setup flags were accepted, for the start-up log line.
  const std::string& mode() const { return mode_; }
  // DEFER_TASKRUN: the kernel completes operations (and fills receive buffers) only inside our
  // own io_uring_enter, never between two of them.
  bool completes_only_when_waited() const { return (ring_->flags & IORING_SETUP_DEFER_TASKRUN) != 0; }
  unsigned fixed_files() const { return fixed_files_; }

  // A submission entry, flushing the queue to the kernel first if it is full. Never null.
  // Not for the second and later entries of a linked chain: see reserve().
  io_uring_sqe* next_sqe();
  // Makes room for `n` entries that must reach the kernel in the same io_uring_enter: a chain of
  // IOSQE_IO_LINK entries. The kernel ends a link at the end of each submission, so a chain
  // flushed half-way would run as two, unordered.
  void reserve(unsigned n) {
    while (io_uring_sq_space_left(ring_.get()) < n) io_uring_submit(ring_.get());
  }

 private:
  struct Deleter {
    void operator()(io_uring* ring) const;
  };
  Ring(std::unique_ptr<io_uring, Deleter> ring, std::string mode, unsigned fixed_files)
      : ring_(std::move(ring)), mode_(std::move(mode)), fixed_files_(fixed_files) {}

  std::unique_ptr<io_uring, Deleter> ring_;
  std::string mode_;
  unsigned fixed_files_ = 0;
};

// A ring of `count` receive buffers of `size` bytes that the kernel fills in turn
// (IOSQE_BUFFER_SELECT). A completion names the buffer it used; once the data is consumed the
// buffer must be handed back with recycle(), or the kernel runs out (-ENOBUFS).
//
// liburing 2.3 has no io_uring_setup_buf_ring(): the ring memory is mapped here and registered
// with io_uring_register_buf_ring().
class BufferRing {
 public:
  static Result<BufferRing> create(Ring& ring, uint16_t group, unsigned count, unsigned size);

  BufferRing(BufferRing&& other) noexcept = default;
  BufferRing& operator=(BufferRing&&) = delete;
  BufferRing(const BufferRing&) = delete;
  ~BufferRing() = default;

  uint16_t group() const { return group_; }
  const char* data(uint16_t id) const { return buffers_.get() + static_cast<size_t>(id) * size_; }
  void recycle(uint16_t id);
  // The kernel fills the buffers in turn, so a few thousand reads leave every one of them
  // resident (4 MiB), however little traffic there is. This gives their pages back; a buffer reads
  // as zeros until the kernel fills it again. Only when no buffer holds data not yet consumed and
  // the kernel cannot fill one meanwhile (Worker::return_buffer_pages).
  void give_back_pages();

 private:
  BufferRing() = default;

  // Unregisters the ring from io_uring before its memory goes.
  struct Registration {
    io_uring* ring = nullptr;
    uint16_t group = 0;
    Registration() = default;
    Registration(io_uring* r, uint16_t g) : ring(r), group(g) {}
    Registration(Registration&& other) noexcept : ring(std::exchange(other.ring, nullptr)), group(other.group) {}
    Registration& operator=(Registration&& other) noexcept {
      if (this != &other) {
        reset();
        ring = std::exchange(other.ring, nullptr);
        group = other.group;
      }
      return *this;
    }
    ~Registration() { reset(); }
    void reset() {
      if (ring) io_uring_unregister_buf_ring(ring, group);
      ring = nullptr;
    }
  };
  struct FreeDeleter {
    void operator()(char* p) const { std::free(p); }
  };

  MappedMemory ring_memory_;                    // the ring of buffer descriptors, shared with the kernel
  std::unique_ptr<char, FreeDeleter> buffers_;  // the buffers themselves
  Registration registration_;                   // after the memory: unregistered first
  io_uring_buf_ring* buf_ring_ = nullptr;       // ring_memory_, typed
  unsigned count_ = 0;
  unsigned size_ = 0;
  uint16_t group_ = 0;
};

}  // namespace lbd
