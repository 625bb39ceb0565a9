#include "worker/ring.h"

#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <vector>

#include "common/ring_setup.h"

namespace lbd {

void Ring::Deleter::operator()(io_uring* ring) const {
  io_uring_queue_exit(ring);
  delete ring;
}

Ring::~Ring() = default;

Result<Ring> Ring::create(const Options& options) {
  auto raw = std::make_unique<io_uring>();
  io_uring_params params{};
  auto mode = init_fastest_ring(*raw, options.sq_entries, options.cq_entries, params, IORING_SETUP_R_DISABLED);
  if (!mode) return mode.error();
  std::unique_ptr<io_uring, Deleter> ring(raw.release());

  // The registered ring fd saves an fget/fput on every io_uring_enter; optional.
  io_uring_register_ring_fd(ring.get());

  // The sparse file table may be as large as RLIMIT_NOFILE (checked once, when it is
  // registered); its entries are not descriptors, so they leave the process's own untouched.
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  unsigned files = static_cast<unsigned>(std::min<rlim_t>(options.fixed_files, limit.rlim_cur));
  if (int ferr = io_uring_register_files_sparse(ring.get(), files); ferr < 0) {
    return Error::from_errno(-ferr, "register " + std::to_string(files) + " fixed files");
  }
  return Ring(std::move(ring), *mode, files);
}

Result<void> Ring::lock_down() {
  // Every opcode worker.cpp submits (liburing's multishot and direct variants included), and the
  // ones liburing may submit for it (a timeout when waiting, on kernels without EXT_ARG).
  static constexpr uint8_t kOperations[] = {
      IORING_OP_NOP,           IORING_OP_ACCEPT,      IORING_OP_RECV,   IORING_OP_READ,
      IORING_OP_SEND,          IORING_OP_CLOSE,       IORING_OP_SHUTDOWN, IORING_OP_POLL_ADD,
      IORING_OP_POLL_REMOVE,   IORING_OP_ASYNC_CANCEL, IORING_OP_TIMEOUT, IORING_OP_TIMEOUT_REMOVE,
      IORING_OP_LINK_TIMEOUT,  IORING_OP_FILES_UPDATE,
      54,  // IORING_OP_FIXED_FD_INSTALL (Linux 6.8; liburing 2.3 has no name for it)
  };
  // Registrations after start-up: only undoing what was set up (at exit).
  static constexpr uint8_t kRegistrations[] = {IORING_UNREGISTER_PBUF_RING, IORING_UNREGISTER_RING_FDS,
                                               IORING_REGISTER_PROBE};
  std::vector<io_uring_restriction> allowed;
  for (uint8_t op : kOperations) {
    io_uring_restriction r{};
    r.opcode = IORING_RESTRICTION_SQE_OP;
    r.sqe_op = op;
    allowed.push_back(r);
  }
  for (uint8_t op : kRegistrations) {
    io_uring_restriction r{};
    r.opcode = IORING_RESTRICTION_REGISTER_OP;
    r.register_op = op;
    allowed.push_back(r);
  }
  io_uring_restriction flags{};  // every SQE flag: they change how, not what
  flags.opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED;
  flags.sqe_flags = IOSQE_FIXED_FILE | IOSQE_IO_DRAIN | IOSQE_IO_LINK | IOSQE_IO_HARDLINK | IOSQE_ASYNC |
                    IOSQE_BUFFER_SELECT | IOSQE_CQE_SKIP_SUCCESS;
  allowed.push_back(flags);
  // The system call itself: Debian's liburing 2.3 declares io_uring_register_restrictions() and
  // io_uring_enable_rings() but its library does not export them.
  const int fd = ring_->ring_fd;
  if (syscall(__NR_io_uring_register, fd, IORING_REGISTER_RESTRICTIONS, allowed.data(), allowed.size()) != 0) {
    return Error::from_errno("io_uring restrictions");
  }
  if (syscall(__NR_io_uring_register, fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0) != 0) {
    return Error::from_errno("enable the ring");
  }
  return {};
}

io_uring_sqe* Ring::next_sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
  while (!sqe) {
    io_uring_submit(ring_.get());
    sqe = io_uring_get_sqe(ring_.get());
  }
  return sqe;
}

void BufferRing::give_back_pages() {
  // Page-aligned and a whole number of pages (create()): nothing else shares these pages.
  madvise(buffers_.get(), static_cast<size_t>(count_) * size_, MADV_DONTNEED);
}

Result<BufferRing> BufferRing::create(Ring& ring, uint16_t group, unsigned count, unsigned size) {
  BufferRing br;
  br.count_ = count;
  br.size_ = size;
  br.group_ = group;
  auto ring_memory = MappedMemory::anonymous(sizeof(io_uring_buf) * count, "buffer ring");
  if (!ring_memory) return ring_memory.error();
  br.ring_memory_ = std::move(*ring_memory);
  br.buf_ring_ = br.ring_memory_.as<io_uring_buf_ring>();
  br.buffers_.reset(static_cast<char*>(std::aligned_alloc(4096, static_cast<size_t>(count) * size)));
  if (!br.buffers_) return Error::from_errno(ENOMEM, "allocate receive buffers");

  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(br.buf_ring_);
  reg.ring_entries = count;
  reg.bgid = group;
  if (int err = io_uring_register_buf_ring(ring.get(), &reg, 0); err < 0) {
    return Error::from_errno(-err, "register buffer ring");
  }
  br.registration_ = Registration(ring.get(), group);
  io_uring_buf_ring_init(br.buf_ring_);
  int mask = io_uring_buf_ring_mask(count);
  for (unsigned id = 0; id < count; id++) {
    io_uring_buf_ring_add(br.buf_ring_, br.buffers_.get() + static_cast<size_t>(id) * size, size,
                          static_cast<unsigned short>(id), mask, static_cast<int>(id));
  }
  io_uring_buf_ring_advance(br.buf_ring_, static_cast<int>(count));
  return br;
}

void BufferRing::recycle(uint16_t id) {
  io_uring_buf_ring_add(buf_ring_, buffers_.get() + static_cast<size_t>(id) * size_, size_, id,
                        io_uring_buf_ring_mask(count_), 0);
  io_uring_buf_ring_advance(buf_ring_, 1);
}

}  // namespace lbd
