// lbctl scale in --mode bpf (docs/ARCHITECTURE.md, invariants 1 and 2): workers are added or the
// highest slots drained at run time, under load, without a failed request; scale returns when
// the change is done.
#include <gtest/gtest.h>

#include <iostream>

#include "support/control_test.h"

namespace lbd::test {
namespace {

using nlohmann::json;

class Scale : public ControlTest {
 protected:
  void SetUp() override { LBD_REQUIRE_ROOT("--mode bpf loads the steering program"); }

  std::set<unsigned> slots_in(const json& status) {
    std::set<unsigned> slots;
    for (const auto& w : status.value("workers", json::array())) slots.insert(w.value("slot", 999u));
    return slots;
  }
};

TEST_F(Scale, FourToTwoToFourUnderLoadFailsNothing) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("bpf", 4, {"--shutdown-timeout", "5"})));
  const auto four = serving_pids();
  ASSERT_EQ(four.size(), 4u);

  // Both kinds of client at once: a new connection per request, and keep-alive connections that
  // never retry (a "Connection: close" answer sends them to a new connection).
  LoadOptions fresh;
  fresh.address = address();
  fresh.threads = 4;
  fresh.duration = 20s;
  fresh.max_requests = 2'000'000;
  fresh.record_samples = true;
  fresh.nice = 19;  // the clients stand in for other machines: lbd comes first on the CPUs
  LoadOptions kept = fresh;
  kept.keep_alive = true;
  kept.threads = 16;
  kept.request = http_get("/");
  kept.record_samples = false;
  LoadGenerator new_connections(fresh);
  LoadGenerator keep_alive(kept);
  ASSERT_TRUE(wait_for_requests(new_connections, 300, after(5s)));
  ASSERT_TRUE(wait_for_requests(keep_alive, 300, after(5s)));

  // Down: when scale returns, slots 2 and 3 are gone and their workers have exited.
  CommandResult down = lbctl({"scale", "2"});
  const Deadline down_done = Clock::now();
  ASSERT_TRUE(down.exited(0)) << down.describe();
  const json two = status();
  EXPECT_EQ(slots_in(two), (std::set<unsigned>{0, 1})) << two.dump(2);
  for (unsigned slot : {2u, 3u}) {
    EXPECT_TRUE(lbd().wait_for_log("worker " + std::to_string(slot) + " \\(pid " + std::to_string(four.at(slot)) +
                                       "\\) exited with status 0",
                                   after(1s)));
  }
  EXPECT_TRUE(wait_for_requests(new_connections, 500, after(5s)));

  // Up: when scale returns, slots 2 and 3 serve with new workers; 0 and 1 were left alone.
  const Deadline up_started = Clock::now();
  CommandResult up = lbctl({"scale", "4"});
  const Deadline up_done = Clock::now();
  ASSERT_TRUE(up.exited(0)) << up.describe();
  EXPECT_TRUE(up.out_lines().back().starts_with("scale done: 2 slot(s)")) << up.out;
  const auto four_again = serving_pids();
  ASSERT_EQ(four_again.size(), 4u);
  // New slots are pinned like the first ones: slot i on the i-th allowed CPU (wrapping).
  const std::vector<int> cpus = process_cpus(0);
  for (unsigned slot : {2u, 3u}) {
    EXPECT_EQ(process_cpus(four_again.at(slot)), std::vector<int>{cpus[slot % cpus.size()]}) << "slot " << slot;
  }
  EXPECT_EQ(four_again.at(0), four.at(0));
  EXPECT_EQ(four_again.at(1), four.at(1));
  EXPECT_NE(four_again.at(2), four.at(2));
  EXPECT_NE(four_again.at(3), four.at(3));
  EXPECT_TRUE(wait_for_requests(new_connections, 1000, after(5s)));
  LoadReport report = new_connections.stop();
  LoadReport kept_report = keep_alive.stop();

  std::cout << "scale 4 -> 2 -> 4\n  new connection per request: " << report.summary()
            << "\n  16 keep-alive connections: " << kept_report.summary() << "\n";
  EXPECT_TRUE(report.all_ok()) << report.summary();
  EXPECT_EQ(report.failed(), 0u) << report.summary();
  EXPECT_TRUE(kept_report.all_ok()) << kept_report.summary();
  EXPECT_EQ(kept_report.failed(), 0u) << kept_report.summary();

  // While at two, no new connection reached the slots scaled away; after, the new ones serve.
  std::map<int, uint64_t> while_two, after_up;
  for (const Sample& s : report.samples) {
    if (s.connected_at > down_done && s.connected_at < up_started) while_two[s.worker]++;
    if (s.connected_at > up_done) after_up[s.worker]++;
  }
  EXPECT_EQ(while_two[2] + while_two[3], 0u) << "connections reached a slot scaled away";
  EXPECT_GT(while_two[0] + while_two[1], 0u);
  EXPECT_GT(after_up[2], 0u) << "the new worker 2 got no connection";
  EXPECT_GT(after_up[3], 0u) << "the new worker 3 got no connection";
}

}  // namespace
}  // namespace lbd::test
