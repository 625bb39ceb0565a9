#include "metrics/worker_stats.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

namespace lbd {

uint64_t WorkerStatsSnapshot::requests() const {
  uint64_t total = 0;
  for (uint64_t count : duration_counts) total += count;
  return total;
}

WorkerStatsSnapshot& WorkerStatsSnapshot::operator+=(const WorkerStatsSnapshot& other) {
  for (size_t i = 0; i < kDurationBuckets; i++) duration_counts[i] += other.duration_counts[i];
  duration_sum_ns += other.duration_sum_ns;
  accepted += other.accepted;
  return *this;
}

Result<WorkerStatsBlock> WorkerStatsBlock::create() {
  UniqueFd fd(memfd_create("lbd-worker-stats", MFD_CLOEXEC));
  if (!fd) return Error::from_errno("memfd_create worker stats");
  if (ftruncate(fd.get(), sizeof(WorkerStats)) != 0) return Error::from_errno("size worker stats");
  auto memory = MappedMemory::shared(fd.get(), sizeof(WorkerStats), "worker stats");  // a new memfd reads as zeros
  if (!memory) return memory.error();
  return WorkerStatsBlock(std::move(fd), std::move(*memory));
}

Result<WorkerStatsBlock> WorkerStatsBlock::map(int fd) {
  // Mapping past the end of a smaller file would fault on first use, far from here.
  struct stat st {};
  if (fstat(fd, &st) != 0) return Error::from_errno("fstat worker stats");
  if (st.st_size < static_cast<off_t>(sizeof(WorkerStats))) {
    return Error::from_errno(EPROTO, "worker stats block is too small (another lbd build?)");
  }
  UniqueFd copy(fcntl(fd, F_DUPFD_CLOEXEC, 3));
  if (!copy) return Error::from_errno("dup worker stats fd");
  auto memory = MappedMemory::shared(copy.get(), sizeof(WorkerStats), "worker stats");
  if (!memory) return memory.error();
  return WorkerStatsBlock(std::move(copy), std::move(*memory));
}

WorkerStatsSnapshot WorkerStatsBlock::read() const {
  WorkerStatsSnapshot snapshot;
  snapshot.duration_sum_ns = load_field(memory_.as<WorkerStats>()->duration_sum_ns);
  snapshot.accepted = load_field(memory_.as<WorkerStats>()->accepted);
  for (size_t i = 0; i < kDurationBuckets; i++) {
    snapshot.duration_counts[i] = load_field(memory_.as<WorkerStats>()->duration_counts[i]);
  }
  return snapshot;
}

double duration_bound_seconds(size_t bucket) {
  return static_cast<double>(kDurationBoundsNs[bucket]) / 1e9;
}

}  // namespace lbd
