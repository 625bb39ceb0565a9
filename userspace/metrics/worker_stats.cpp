#include "metrics/worker_stats.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

namespace lbd {

namespace {

Result<WorkerStats*> map_shared(int fd) {
  void* memory = mmap(nullptr, sizeof(WorkerStats), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (memory == MAP_FAILED) return Error::from_errno("mmap worker stats");
  return static_cast<WorkerStats*>(memory);
}

}  // namespace

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
  auto stats = map_shared(fd.get());  // a new memfd reads as zeros
  if (!stats) return stats.error();
  return WorkerStatsBlock(std::move(fd), *stats);
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
  auto stats = map_shared(copy.get());
  if (!stats) return stats.error();
  return WorkerStatsBlock(std::move(copy), *stats);
}

WorkerStatsBlock::WorkerStatsBlock(WorkerStatsBlock&& other) noexcept
    : fd_(std::move(other.fd_)), stats_(std::exchange(other.stats_, nullptr)) {}

WorkerStatsBlock& WorkerStatsBlock::operator=(WorkerStatsBlock&& other) noexcept {
  if (this != &other) {
    if (stats_) munmap(stats_, sizeof(WorkerStats));
    fd_ = std::move(other.fd_);
    stats_ = std::exchange(other.stats_, nullptr);
  }
  return *this;
}

WorkerStatsBlock::~WorkerStatsBlock() {
  if (stats_) munmap(stats_, sizeof(WorkerStats));
}

WorkerStatsSnapshot WorkerStatsBlock::read() const {
  WorkerStatsSnapshot snapshot;
  snapshot.duration_sum_ns = load_field(stats_->duration_sum_ns);
  snapshot.accepted = load_field(stats_->accepted);
  for (size_t i = 0; i < kDurationBuckets; i++) {
    snapshot.duration_counts[i] = load_field(stats_->duration_counts[i]);
  }
  return snapshot;
}

double duration_bound_seconds(size_t bucket) {
  return static_cast<double>(kDurationBoundsNs[bucket]) / 1e9;
}

}  // namespace lbd
