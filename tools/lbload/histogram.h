// A latency histogram in the manner of HdrHistogram: log-linear buckets, so recording is one
// array increment and every value is kept within 1/256 (0.4 %) of what was recorded, from 1 ns
// to 2^40 ns (about 18 minutes; larger values land in the top bucket, and max() stays exact).
// Histograms of the same layout merge by adding counts, so each load thread keeps its own and
// the report merges them at the end.
//
//   LatencyHistogram h;
//   h.record(31'250);                 // nanoseconds
//   h.percentile(99.0)                // ns, the value at or below which 99 % of samples lie
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lbd::load {

class LatencyHistogram {
 public:
  // Values below 2^kSubBucketBits are counted exactly; above, each power of two is split into
  // 2^kSubBucketBits equal buckets, so a bucket is at most 1/128 of its values wide.
  static constexpr unsigned kSubBucketBits = 7;
  static constexpr unsigned kMaxBits = 40;

  LatencyHistogram();

  void record(uint64_t value_ns);
  void merge(const LatencyHistogram& other);

  uint64_t count() const { return count_; }
  uint64_t min() const { return count_ ? min_ : 0; }
  uint64_t max() const { return max_; }
  double mean() const { return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) : 0; }
  // The value at `percent` (0-100]: the midpoint of the bucket holding the sample of that rank,
  // clamped to [min, max] so p100 is the exact maximum. 0 when empty.
  uint64_t percentile(double percent) const;

  // For tests: the bucket a value falls in, and the range of values that bucket holds.
  static size_t bucket_of(uint64_t value);
  static uint64_t bucket_low(size_t bucket);
  static uint64_t bucket_high(size_t bucket);  // inclusive
  static size_t bucket_count();

 private:
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  uint64_t sum_ = 0;  // ns; overflows only after 584 years of summed latency
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
};

}  // namespace lbd::load
