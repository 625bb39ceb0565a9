#include "lbload/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace lbd::load {

namespace {

constexpr uint64_t kSubBuckets = uint64_t{1} << LatencyHistogram::kSubBucketBits;
// Linear part [0, kSubBuckets), then one group of kSubBuckets per power of two from
// 2^kSubBucketBits up to 2^(kMaxBits - 1).
constexpr size_t kBuckets =
    kSubBuckets + (LatencyHistogram::kMaxBits - LatencyHistogram::kSubBucketBits) * kSubBuckets;
constexpr uint64_t kLargestTracked = (uint64_t{1} << LatencyHistogram::kMaxBits) - 1;

}  // namespace

LatencyHistogram::LatencyHistogram() : counts_(kBuckets, 0) {}

size_t LatencyHistogram::bucket_count() { return kBuckets; }

size_t LatencyHistogram::bucket_of(uint64_t value) {
  value = std::min(value, kLargestTracked);
  if (value < kSubBuckets) return static_cast<size_t>(value);
  const unsigned exponent = static_cast<unsigned>(std::bit_width(value)) - 1;  // >= kSubBucketBits
  const unsigned shift = exponent - kSubBucketBits;
  const uint64_t mantissa = value >> shift;  // in [kSubBuckets, 2 * kSubBuckets)
  return static_cast<size_t>((shift + 1) * kSubBuckets + (mantissa - kSubBuckets));
}

uint64_t LatencyHistogram::bucket_low(size_t bucket) {
  if (bucket < kSubBuckets) return bucket;
  const uint64_t shift = bucket / kSubBuckets - 1;
  const uint64_t mantissa = kSubBuckets + bucket % kSubBuckets;
  return mantissa << shift;
}

uint64_t LatencyHistogram::bucket_high(size_t bucket) {
  if (bucket < kSubBuckets) return bucket;
  const uint64_t shift = bucket / kSubBuckets - 1;
  return bucket_low(bucket) + (uint64_t{1} << shift) - 1;
}

void LatencyHistogram::record(uint64_t value_ns) {
  counts_[bucket_of(value_ns)]++;
  count_++;
  sum_ += value_ns;
  min_ = std::min(min_, value_ns);
  max_ = std::max(max_, value_ns);
}

void LatencyHistogram::merge(const LatencyHistogram& other) {
  for (size_t i = 0; i < kBuckets; i++) counts_[i] += other.counts_[i];
  count_ += other.count_;
  sum_ += other.sum_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
}

uint64_t LatencyHistogram::percentile(double percent) const {
  if (count_ == 0) return 0;
  percent = std::clamp(percent, 0.0, 100.0);
  // The rank of the sample wanted, 1-based: p50 of 1..100 is the 50th.
  const auto rank = std::max<uint64_t>(
      1, static_cast<uint64_t>(std::ceil(percent / 100.0 * static_cast<double>(count_))));
  if (rank >= count_) return max_;  // the largest sample is known exactly
  uint64_t seen = 0;
  for (size_t i = 0; i < kBuckets; i++) {
    seen += counts_[i];
    if (seen >= rank) {
      const uint64_t middle = bucket_low(i) + (bucket_high(i) - bucket_low(i)) / 2;
      return std::clamp(middle, min(), max_);
    }
  }
  return max_;
}

}  // namespace lbd::load
