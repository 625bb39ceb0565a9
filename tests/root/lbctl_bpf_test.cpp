// lbctl verbs that only mean something in --mode bpf: changing the policy at run time,
// and status showing what the steering program did.
#include <gtest/gtest.h>

#include "support/control_test.h"

namespace lbd::test {
namespace {

using nlohmann::json;

class LbctlBpf : public ControlTest {
 protected:
  void SetUp() override {
    LBD_REQUIRE_ROOT("--mode bpf loads the steering program");
    ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("bpf", 2)));
  }
};

TEST_F(LbctlBpf, PolicyChangesAtRunTime) {
  EXPECT_EQ(status()["lbd"].value("policy", ""), "least");

  CommandResult rr = lbctl({"policy", "rr"}, after(10s));
  ASSERT_TRUE(rr.exited(0)) << rr.describe();
  EXPECT_EQ(rr.out, "policy rr\n");
  EXPECT_EQ(status()["lbd"].value("policy", ""), "rr");
  // Round-robin from the next connection on: sequential connections alternate.
  std::map<int, int> answers;
  for (int i = 0; i < 100; i++) {
    HttpResult r = fetch(address(), http_get("/", /*close=*/true), after(2s));
    ASSERT_TRUE(r.ok()) << r.describe();
    answers[r.worker()]++;
  }
  EXPECT_EQ(answers, (std::map<int, int>{{0, 50}, {1, 50}}));

  CommandResult unknown = lbctl({"policy", "fastest"}, after(10s));
  EXPECT_TRUE(unknown.exited(1)) << unknown.describe();
  EXPECT_EQ(unknown.err, "lbctl: unknown policy 'fastest' (expected rr, least, hash or sticky)\n");
  EXPECT_EQ(status()["lbd"].value("policy", ""), "rr") << "a refused policy changed the policy";

  CommandResult hash = lbctl({"policy", "hash"}, after(10s));
  ASSERT_TRUE(hash.exited(0)) << hash.describe();
  EXPECT_EQ(status()["lbd"].value("policy", ""), "hash");
  EXPECT_EQ(fetch(address(), http_get("/"), after(2s)).status(), 200);
}

TEST_F(LbctlBpf, StatusCountsWhatTheProgramSteered) {
  const json before = status();
  EXPECT_EQ(before["lbd"].value("mode", ""), "bpf");
  LoadOptions options;
  options.address = address();
  options.threads = 2;
  options.max_requests = 200;
  options.duration = 10s;
  LoadReport report = run_load(options);
  ASSERT_TRUE(report.all_ok()) << report.summary();

  const json now = status();
  uint64_t steered = 0;
  for (const auto& w : now["workers"]) {
    ASSERT_TRUE(w.contains("steered")) << w.dump();
    steered += w["steered"].get<uint64_t>();
    EXPECT_GT(w.value("requests", uint64_t{0}), 0u) << "every worker served some: " << w.dump();
  }
  EXPECT_GE(steered, 200u) << now.dump(2);
}

}  // namespace
}  // namespace lbd::test
