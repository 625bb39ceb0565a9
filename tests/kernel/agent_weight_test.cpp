// The agent's weight (--agent) follows the workers' load: it falls while the one worker burns
// CPU for every request, and comes back once the load ends. Its timing is its point: it runs
// alone (label serial), so the busy worker's CPU is its own.
#include <gtest/gtest.h>

#include <iostream>

#include "support/agent.h"

namespace lbd::test {
namespace {

using AgentWeight = Agent;

TEST_F(AgentWeight, FallsWhileTheWorkersAreBusyAndComesBackAfter) {
  ASSERT_NO_FATAL_FAILURE(start_with_agent({}, /*workers=*/1));
  ASSERT_TRUE(eventually(after(5s), [&] { return weight_of(ask()) >= 80; }, 100ms)) << ask();
  const int idle = weight_of(ask());
  // One worker burning CPU for every request, back to back.
  LoadGenerator busy(LoadOptions{.address = address(),
                                 .request = http_get("/work?us=5000"),
                                 .threads = 4,
                                 .duration = 20s,
                                 .max_requests = 100'000,
                                 .keep_alive = true});
  int lowest = 100;
  EXPECT_TRUE(eventually(after(10s), [&] {
    lowest = std::min(lowest, weight_of(ask()));
    return lowest >= 0 && lowest <= 40;
  }, 200ms)) << "the weight stayed at " << lowest;
  const LoadReport report = busy.stop();
  EXPECT_EQ(report.failed(), 0u) << report.summary();
  int recovered = 0;
  EXPECT_TRUE(eventually(after(10s), [&] {
    recovered = weight_of(ask());
    return recovered >= 80;
  }, 200ms)) << "after the load, the weight is " << recovered;
  std::cout << "agent weight: idle " << idle << "%, busy " << lowest << "%, after " << recovered << "%\n";
}

}  // namespace
}  // namespace lbd::test
