#include "steering/slot_table.h"

#include <bpf/bpf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <utility>

namespace lbd {

Result<SlotTable> SlotTable::create_memfd() {
  UniqueFd fd(memfd_create("lbd-slot-table", MFD_CLOEXEC));
  if (!fd) return Error::from_errno("memfd_create slot table");
  if (ftruncate(fd.get(), kBytes) != 0) return Error::from_errno("size slot table");
  auto memory = MappedMemory::shared(fd.get(), kBytes, "slot table");
  if (!memory) return memory.error();
  return SlotTable(std::move(fd), std::move(*memory));
}

Result<SlotTable> SlotTable::map(int fd) {
  // If the fd is a BPF map, make sure it is the table this build expects: a worker from another
  // build must not scribble over a layout it does not know.
  bpf_map_info info{};
  uint32_t info_len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &info_len) == 0) {
    if (info.value_size != sizeof(lbd_slot) || info.max_entries != LBD_MAX_SLOTS) {
      return Error::from_errno(EPROTO, "slot table map has a different layout (another lbd build?)");
    }
  }
  UniqueFd copy(fcntl(fd, F_DUPFD_CLOEXEC, 3));
  if (!copy) return Error::from_errno("dup slot table fd");
  auto memory = MappedMemory::shared(copy.get(), kBytes, "slot table");
  if (!memory) return memory.error();
  return SlotTable(std::move(copy), std::move(*memory));
}

const char* slot_state_name(uint32_t state) {
  switch (state) {
    case LBD_SLOT_EMPTY: return "empty";
    case LBD_SLOT_STARTING: return "starting";
    case LBD_SLOT_ACTIVE: return "active";
    case LBD_SLOT_DRAINING: return "draining";
  }
  return "unknown";
}

}  // namespace lbd
