// /metrics in --mode bpf: the steering program's per-slot counters, read from its
// per-CPU map, account for every new connection, and the output with the steering series still
// passes promtool.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "support/admin.h"

namespace lbd::test {
namespace {

class MetricsBpf : public AdminTest {
 protected:
  void SetUp() override {
    LBD_REQUIRE_ROOT("--mode bpf loads the steering program");
    ASSERT_NO_FATAL_FAILURE(start_with_admin(lbd_flags("bpf", 2, {"--policy", "rr"})));
  }
};

TEST_F(MetricsBpf, SteeringCountersAddUpToTheNewConnections) {
  const MetricSamples before = scrape();
  ASSERT_EQ(before.count("lbd_steering_selected_total"), 2u) << before.text();

  constexpr int kConnections = 200;
  std::map<int, int> per_worker;
  for (int i = 0; i < kConnections; i++) {
    HttpResult r = fetch(address(), http_get("/"), after(2s));
    ASSERT_EQ(r.status(), 200) << r.describe();
    per_worker[r.worker()]++;
  }

  const MetricSamples after = scrape();
  EXPECT_EQ(after.sum("lbd_steering_selected_total") - before.sum("lbd_steering_selected_total"),
            kConnections)
      << after.text();
  // rr alternates: each slot's counter grew by what its worker answered.
  for (const auto& [slot, answered] : per_worker) {
    const std::map<std::string, std::string> label = {{"slot", std::to_string(slot)}};
    EXPECT_EQ(after.sum("lbd_steering_selected_total", label) - before.sum("lbd_steering_selected_total", label),
              answered)
        << "slot " << slot;
  }
  EXPECT_EQ(after.sum("lbd_steering_fallback_total"), 0) << "no decision without an active slot";
  EXPECT_EQ(after.sum("lbd_steering_migrated_total"), 0) << "no listener closed";
  EXPECT_EQ(after.sum("lbd_accepted_connections_total") - before.sum("lbd_accepted_connections_total"),
            kConnections);
  EXPECT_EQ(after.sum("lbd_policy", {{"policy", "rr"}}), 1);
}

TEST_F(MetricsBpf, PassPromtoolCheckMetricsWithSteeringSeries) {
  if (access("/usr/bin/promtool", X_OK) != 0) {
    GTEST_SKIP() << "promtool not installed (Debian package prometheus; scripts/install-deps.sh installs it)";
  }
  for (int i = 0; i < 10; i++) ASSERT_EQ(fetch(address(), http_get("/"), after(2s)).status(), 200);
  const MetricSamples m = scrape();
  ASSERT_GT(m.count("lbd_steering_fallback_total"), 0u) << m.text();
  const std::string file = dir_.path("metrics.txt");
  std::ofstream(file) << m.text();
  CommandResult check = run_command({"/bin/sh", "-c", "/usr/bin/promtool check metrics < " + file}, after(20s));
  EXPECT_TRUE(check.exited(0)) << check.describe() << "\n" << m.text();
}

}  // namespace
}  // namespace lbd::test
