// The slot table: one `struct lbd_slot` per worker slot (bpf/steer_abi.h), in memory that the
// supervisor, every worker and, in --mode bpf, the steering program share without syscalls.
//
// In --mode bpf the memory is the program's BPF_F_MMAPABLE `slot_table` map; in the other modes
// (no program) it is a memfd. Either way it is a file descriptor that the supervisor hands to
// each worker, and each side maps it with mmap(MAP_SHARED). Each field has a single writer (see
// steer_abi.h), so plain atomic loads and stores are enough (common/shared_field.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/result.h"
#include "common/shared_field.h"
#include "common/mapped_memory.h"
#include "common/unique_fd.h"
#include "steer_abi.h"

namespace lbd {

class SlotTable {
 public:
  static constexpr size_t kBytes = sizeof(lbd_slot) * LBD_MAX_SLOTS;

  // A fresh table in a memfd (modes without a BPF program).
  static Result<SlotTable> create_memfd();
  // Maps a table given as an fd: a BPF map (checked for the right value size) or a memfd. The fd
  // is duplicated; the caller keeps its own.
  static Result<SlotTable> map(int fd);

  SlotTable(SlotTable&& other) noexcept = default;
  SlotTable& operator=(SlotTable&& other) noexcept = default;
  SlotTable(const SlotTable&) = delete;
  SlotTable& operator=(const SlotTable&) = delete;
  ~SlotTable() = default;

  int fd() const { return fd_.get(); }
  lbd_slot& slot(uint32_t index) { return memory_.as<lbd_slot>()[index]; }
  const lbd_slot& slot(uint32_t index) const { return memory_.as<lbd_slot>()[index]; }

 private:
  SlotTable(UniqueFd fd, MappedMemory memory) : fd_(std::move(fd)), memory_(std::move(memory)) {}
  UniqueFd fd_;
  MappedMemory memory_;
};

// What a worker says about itself in its slot-table entry, published after every completion:
// a handful of relaxed stores to one cache line (bench/micro measures them).
struct WorkerLoad {
  uint64_t heartbeat_ns = 0;
  uint64_t accepted = 0;
  uint32_t open = 0;
  uint32_t inflight = 0;
  uint64_t requests = 0;
  uint32_t pid = 0;
};
inline void publish_load(lbd_slot& slot, const WorkerLoad& load) {
  store_field(slot.heartbeat_ns, load.heartbeat_ns);
  store_field(slot.accepted, load.accepted);
  store_field(slot.open, load.open);
  store_field(slot.inflight, load.inflight);
  store_field(slot.requests, load.requests);
  store_field(slot.pid, load.pid);
}

// The worker's "my connection table is full" mark, stored only when it changes: the field shares
// a cache line with `steered`, which the program bumps on every connection.
inline void publish_full(lbd_slot& slot, bool full) {
  if ((load_field(slot.full) != 0) != full) store_field(slot.full, static_cast<uint32_t>(full));
}

const char* slot_state_name(uint32_t state);

}  // namespace lbd
