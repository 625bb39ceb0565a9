// When a crashed worker comes back: after a delay that doubles from 100 ms up to a cap, and not at
// all once a slot has crashed max_crashes times within the window. Pure logic over time points.
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <vector>

#include "supervisor/restart_policy.h"

namespace lbd {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = RestartPolicy::Clock;

const Clock::time_point kStart = Clock::time_point(std::chrono::hours(1000));

TEST(RestartPolicy, BackoffDoublesFrom100msAndCapsAt10s) {
  RestartPolicy policy(/*max_crashes=*/100, /*window=*/seconds(600));
  const std::vector<long> expected_ms = {100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000};
  for (size_t i = 0; i < expected_ms.size(); i++) {
    auto delay = policy.on_crash(kStart + seconds(i));
    ASSERT_TRUE(delay.has_value()) << "crash " << i + 1;
    EXPECT_EQ(delay->count(), expected_ms[i]) << "crash " << i + 1;
  }
}

TEST(RestartPolicy, BackoffUsesTheConfiguredFirstAndMaximumDelay) {
  RestartPolicy policy(100, seconds(600), milliseconds(50), milliseconds(300));
  const std::vector<long> expected_ms = {50, 100, 200, 300, 300};
  for (size_t i = 0; i < expected_ms.size(); i++) {
    EXPECT_EQ(policy.on_crash(kStart + seconds(i)), milliseconds(expected_ms[i])) << "crash " << i + 1;
  }
}

TEST(RestartPolicy, GivesUpAtMaxCrashesWithinTheWindow) {
  RestartPolicy policy(/*max_crashes=*/3, /*window=*/seconds(60));
  EXPECT_EQ(policy.on_crash(kStart), milliseconds(100));
  EXPECT_EQ(policy.on_crash(kStart + seconds(10)), milliseconds(200));
  EXPECT_EQ(policy.on_crash(kStart + seconds(20)), std::nullopt) << "third crash within 60 s";
  EXPECT_EQ(policy.on_crash(kStart + seconds(21)), std::nullopt) << "and it stays given up";
}

TEST(RestartPolicy, ForgetsCrashesOlderThanTheWindow) {
  RestartPolicy policy(/*max_crashes=*/3, /*window=*/seconds(10));
  EXPECT_TRUE(policy.on_crash(kStart).has_value());
  EXPECT_TRUE(policy.on_crash(kStart + seconds(1)).has_value());
  EXPECT_EQ(policy.recent_crashes(kStart + seconds(2)), 2u);
  // 20 s later both have aged out: the next crash is a first crash again.
  EXPECT_EQ(policy.recent_crashes(kStart + seconds(20)), 0u);
  EXPECT_EQ(policy.on_crash(kStart + seconds(20)), milliseconds(100));
  EXPECT_EQ(policy.recent_crashes(kStart + seconds(20)), 1u);
}

TEST(RestartPolicy, OnlyCrashesInsideTheWindowCountTowardsGivingUp) {
  // A crash every 6 s with a 10 s window never has three in the window at once.
  RestartPolicy policy(/*max_crashes=*/3, /*window=*/seconds(10));
  for (int i = 0; i < 20; i++) {
    auto delay = policy.on_crash(kStart + seconds(6 * i));
    ASSERT_TRUE(delay.has_value()) << "crash " << i + 1;
    EXPECT_LE(*delay, milliseconds(200));
  }
}

}  // namespace
}  // namespace lbd
