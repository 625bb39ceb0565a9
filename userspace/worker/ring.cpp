#include "worker/ring.h"

#include <sys/mman.h>
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

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
  auto mode = init_fastest_ring(*raw, options.sq_entries, options.cq_entries, params);
  if (!mode) return mode.error();
  std::unique_ptr<io_uring, Deleter> ring(raw.release());

  // The registered ring fd saves an fget/fput on every io_uring_enter; optional.
  io_uring_register_ring_fd(ring.get());

  // The sparse file table is bounded by RLIMIT_NOFILE.
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  unsigned files = static_cast<unsigned>(
      std::min<rlim_t>(options.fixed_files, limit.rlim_cur > 64 ? limit.rlim_cur - 64 : 1));
  if (int ferr = io_uring_register_files_sparse(ring.get(), files); ferr < 0) {
    return Error::from_errno(-ferr, "register " + std::to_string(files) + " fixed files");
  }
  return Ring(std::move(ring), *mode, files);
}

io_uring_sqe* Ring::next_sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
  while (!sqe) {
    io_uring_submit(ring_.get());
    sqe = io_uring_get_sqe(ring_.get());
  }
  return sqe;
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
