// What a worker process counts for /metrics and `lbctl status` beyond its slot-table entry: how
// long each request took (a histogram) and how many connections it accepted.
//
// One block per worker *process*, not per slot. During a reload an old and a new worker serve
// the same slot side by side; with a block each, every block keeps exactly one writer for its
// whole life. The supervisor creates the block (a memfd, handed to the worker like the slot
// table: launch.h) and keeps its own mapping, so it can still read the block after the
// worker has exited: it then adds the final numbers to the slot's totals, and a slot's counters
// never go backwards across reloads, restarts and crashes.
//
// Cost on the worker's data path: recording a request is a bucket search (one comparison for a
// request under 100 µs) and two single-writer relaxed adds on one cache line of the worker's
// own block; no locked instruction, no syscall. The supervisor reads the block with plain loads,
// no syscall per scrape. Not part of struct lbd_slot: the steering program and its verifier
// have no use for it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "common/result.h"
#include "common/shared_field.h"
#include "common/mapped_memory.h"
#include "common/unique_fd.h"

namespace lbd {

// Upper bounds of the request-duration buckets in ns, inclusive (Prometheus `le`): 100 µs to
// 10 s, the classic 1-2.5-5 steps. A last bucket, +Inf, takes everything longer.
inline constexpr std::array<uint64_t, 16> kDurationBoundsNs = {
    100'000,     250'000,     500'000,       1'000'000,     2'500'000,     5'000'000,
    10'000'000,  25'000'000,  50'000'000,    100'000'000,   250'000'000,   500'000'000,
    1'000'000'000, 2'500'000'000, 5'000'000'000, 10'000'000'000};
inline constexpr size_t kDurationBuckets = kDurationBoundsNs.size() + 1;

// The bucket a duration falls in: the first whose bound is >= it, else the +Inf bucket. A linear
// scan on purpose: almost every request lands in the first buckets.
constexpr size_t duration_bucket(uint64_t ns) {
  size_t bucket = 0;
  while (bucket < kDurationBoundsNs.size() && ns > kDurationBoundsNs[bucket]) bucket++;
  return bucket;
}

// The shared block. Written only by its worker; the field order puts what every request touches
// (the sum and the first buckets) on the first cache line.
struct alignas(64) WorkerStats {
  uint64_t duration_sum_ns;  // of every request counted below
  uint64_t accepted;         // connections accepted (off a listener, or passed in --mode handoff;
                             // not the idle ones a predecessor hands over on reload)
  uint64_t duration_counts[kDurationBuckets];  // requests answered, per bucket (not cumulative)
};

// Called by the worker as each request is answered.
inline void record_request(WorkerStats& stats, uint64_t duration_ns) {
  add_to_field(stats.duration_sum_ns, duration_ns);
  add_to_field(stats.duration_counts[duration_bucket(duration_ns)], uint64_t{1});
}
inline void record_accepted(WorkerStats& stats) { add_to_field(stats.accepted, uint64_t{1}); }

// A plain copy of a block, or a sum of several.
struct WorkerStatsSnapshot {
  std::array<uint64_t, kDurationBuckets> duration_counts{};
  uint64_t duration_sum_ns = 0;
  uint64_t accepted = 0;

  // Requests answered: every request is counted in exactly one bucket.
  uint64_t requests() const;
  double duration_sum_seconds() const { return static_cast<double>(duration_sum_ns) / 1e9; }
  WorkerStatsSnapshot& operator+=(const WorkerStatsSnapshot& other);
};

// Owns one block: the memfd and a shared mapping of it. Move-only.
class WorkerStatsBlock {
 public:
  // A fresh, zeroed block (the supervisor, for each worker it starts; or a worker that was given
  // none, so that its data path never needs a check).
  static Result<WorkerStatsBlock> create();
  // Maps a block handed over as an fd (the worker). The fd is duplicated; the caller keeps its own.
  static Result<WorkerStatsBlock> map(int fd);

  WorkerStatsBlock(WorkerStatsBlock&& other) noexcept = default;
  WorkerStatsBlock& operator=(WorkerStatsBlock&& other) noexcept = default;
  WorkerStatsBlock(const WorkerStatsBlock&) = delete;
  WorkerStatsBlock& operator=(const WorkerStatsBlock&) = delete;
  ~WorkerStatsBlock() = default;

  int fd() const { return fd_.get(); }
  WorkerStats& stats() { return *memory_.as<WorkerStats>(); }
  WorkerStatsSnapshot read() const;

 private:
  WorkerStatsBlock(UniqueFd fd, MappedMemory memory) : fd_(std::move(fd)), memory_(std::move(memory)) {}
  UniqueFd fd_;
  MappedMemory memory_;
};

// The bucket bounds in seconds, for /metrics (`le`) and `lbctl status` (`bounds_seconds`).
double duration_bound_seconds(size_t bucket);

}  // namespace lbd
