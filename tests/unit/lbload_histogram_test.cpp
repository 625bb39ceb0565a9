// lbload's latency histogram (tools/lbload/histogram.h): log-linear buckets that keep every value
// within 1 % of what was recorded, percentiles from a known distribution, and merging the
// histograms of several threads.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "lbload/histogram.h"

namespace lbd::load {
namespace {

constexpr uint64_t kUs = 1000;  // the histogram counts nanoseconds

// |actual - expected| within `fraction` of expected.
::testing::AssertionResult within(double actual, double expected, double fraction) {
  if (std::abs(actual - expected) <= fraction * expected) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << actual << " is not within " << fraction * 100 << " % of " << expected;
}

TEST(LbloadHistogram, EmptyReportsZeros) {
  LatencyHistogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.percentile(50), 0u);
  EXPECT_EQ(h.max(), 0u);
  EXPECT_EQ(h.min(), 0u);
  EXPECT_EQ(h.mean(), 0.0);
}

TEST(LbloadHistogram, BucketsTileTheRangeWithoutGapsOrOverlap) {
  EXPECT_EQ(LatencyHistogram::bucket_low(0), 0u);
  for (size_t b = 0; b + 1 < LatencyHistogram::bucket_count(); b++) {
    ASSERT_EQ(LatencyHistogram::bucket_high(b) + 1, LatencyHistogram::bucket_low(b + 1)) << "bucket " << b;
    ASSERT_EQ(LatencyHistogram::bucket_of(LatencyHistogram::bucket_low(b)), b);
    ASSERT_EQ(LatencyHistogram::bucket_of(LatencyHistogram::bucket_high(b)), b);
  }
  // The top bucket reaches past 60 s (in ns) by a wide margin.
  EXPECT_GT(LatencyHistogram::bucket_high(LatencyHistogram::bucket_count() - 1), 600'000'000'000u);
}

TEST(LbloadHistogram, EveryBucketIsNarrowerThanOnePercentOfItsValues) {
  for (size_t b = 0; b < LatencyHistogram::bucket_count(); b++) {
    const double low = static_cast<double>(LatencyHistogram::bucket_low(b));
    const double width = static_cast<double>(LatencyHistogram::bucket_high(b) - LatencyHistogram::bucket_low(b));
    if (low > 0) {
      ASSERT_LE(width / low, 0.01) << "bucket " << b << " from " << low;
    }
  }
}

TEST(LbloadHistogram, PercentilesOfAUniformDistributionAreWithinOnePercent) {
  LatencyHistogram h;
  for (uint64_t us = 1; us <= 100'000; us++) h.record(us * kUs);
  EXPECT_EQ(h.count(), 100'000u);
  EXPECT_TRUE(within(static_cast<double>(h.percentile(50)), 50'000.0 * kUs, 0.01));
  EXPECT_TRUE(within(static_cast<double>(h.percentile(90)), 90'000.0 * kUs, 0.01));
  EXPECT_TRUE(within(static_cast<double>(h.percentile(99)), 99'000.0 * kUs, 0.01));
  EXPECT_TRUE(within(static_cast<double>(h.percentile(99.9)), 99'900.0 * kUs, 0.01));
  EXPECT_EQ(h.percentile(100), 100'000 * kUs) << "p100 is the exact maximum";
  EXPECT_EQ(h.max(), 100'000 * kUs);
  EXPECT_EQ(h.min(), 1 * kUs);
  EXPECT_TRUE(within(h.mean(), 50'000.5 * kUs, 1e-9)) << "the mean is exact, not bucketed";
}

TEST(LbloadHistogram, ASingleValueIsReportedExactly) {
  LatencyHistogram h;
  h.record(31'337);
  for (double p : {1.0, 50.0, 99.9, 100.0}) EXPECT_EQ(h.percentile(p), 31'337u) << "p" << p;
}

TEST(LbloadHistogram, ValuesBeyondTheRangeAreClampedButMaxStaysExact) {
  LatencyHistogram h;
  const uint64_t huge = uint64_t{1} << 50;
  h.record(huge);
  EXPECT_EQ(h.max(), huge);
  EXPECT_EQ(h.percentile(100), huge);
}

TEST(LbloadHistogram, MergeEqualsRecordingEverythingInOne) {
  LatencyHistogram odd, even, all;
  for (uint64_t us = 1; us <= 20'000; us++) {
    (us % 2 ? odd : even).record(us * kUs);
    all.record(us * kUs);
  }
  LatencyHistogram merged;
  merged.merge(odd);
  merged.merge(even);
  EXPECT_EQ(merged.count(), all.count());
  EXPECT_EQ(merged.min(), all.min());
  EXPECT_EQ(merged.max(), all.max());
  EXPECT_EQ(merged.mean(), all.mean());
  for (double p : {50.0, 90.0, 99.0, 99.9}) EXPECT_EQ(merged.percentile(p), all.percentile(p)) << "p" << p;
}

TEST(LbloadHistogram, MergingAnEmptyHistogramChangesNothing) {
  LatencyHistogram h, empty;
  h.record(5 * kUs);
  h.merge(empty);
  EXPECT_EQ(h.count(), 1u);
  EXPECT_EQ(h.min(), 5 * kUs);
  EXPECT_EQ(h.max(), 5 * kUs);
}

}  // namespace
}  // namespace lbd::load
