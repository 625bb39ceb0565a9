// lbctl drain in --mode bpf (docs/ARCHITECTURE.md, invariants 1 and 2): once the command returns,
// the slot gets no new connection; what it was doing finishes; a keep-alive client is told
// "Connection: close" on its next request; a silent one is closed at the drain timeout; the
// worker exits and the slot stays out until undrain.
#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>

#include "support/control_test.h"

namespace lbd::test {
namespace {

using nlohmann::json;

class Drain : public ControlTest {
 protected:
  void SetUp() override {
    LBD_REQUIRE_ROOT("--mode bpf loads the steering program");
    ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("bpf", 2, {"--demo-routes"})));
    worker0_ = lbd().worker_pid(0);
    ASSERT_GT(worker0_, 0);
  }

  // `count` keep-alive connections that worker `slot` has answered once and that are now idle.
  // The others opened meanwhile stay open until the end, so that policy least, which counts open
  // connections, keeps sending new ones to `slot` too.
  std::vector<HttpConnection> idle_on(int slot, size_t count) {
    std::vector<HttpConnection> mine, others;
    for (int attempt = 0; attempt < 200 && mine.size() < count; attempt++) {
      HttpConnection c = HttpConnection::open(address(), after(2s));
      HttpResult r = c.request(http_get("/"), after(2s));
      EXPECT_EQ(r.status(), 200) << r.describe();
      (r.worker() == slot ? mine : others).push_back(std::move(c));
    }
    EXPECT_EQ(mine.size(), count) << "too few connections reached worker " << slot << " in 200 tries";
    return mine;
  }

  std::string exited_line(pid_t pid) { return "worker 0 \\(pid " + std::to_string(pid) + "\\) exited with status 0"; }

  pid_t worker0_ = 0;
};

TEST_F(Drain, UnderLoadNoNewConnectionReachesTheSlotAndInFlightRequestsFinish) {
  // Three slow requests in flight on worker 0 when the drain comes.
  std::vector<HttpConnection> sleepers = idle_on(0, 3);
  ASSERT_EQ(sleepers.size(), 3u);

  LoadOptions options;
  options.address = address();
  options.threads = 4;  // a new connection per request
  options.duration = 20s;
  options.max_requests = 2'000'000;
  options.record_samples = true;
  options.nice = 19;  // the clients stand in for other machines: lbd comes first on the CPUs
  LoadGenerator load(options);
  ASSERT_TRUE(wait_for_requests(load, 300, after(5s)));

  for (auto& c : sleepers) {
    // Pipelined behind a GET /: once that answer is back, the worker has started the sleep.
    ASSERT_EQ(c.send(http_get("/") + http_get("/sleep?ms=500"), after(2s)), Outcome::kOk);
    HttpResult first = c.read_response(after(2s));
    ASSERT_EQ(first.status(), 200) << first.describe();
  }
  CommandResult r = lbctl({"drain", "0"}, after(10s));
  const Deadline drained_at = Clock::now();
  ASSERT_TRUE(r.exited(0)) << r.describe();
  EXPECT_EQ(r.out, "draining [0]\n");
  for (auto& c : sleepers) EXPECT_TRUE(c.nothing_received()) << "the slow requests were to be in flight during the drain";
  // Out of steering at once: nothing in slot 0 is active any more; its worker is draining.
  const json draining = status();
  const auto slot0 = rows_of(draining, 0);
  for (const auto& row : slot0) EXPECT_NE(row.value("state", ""), "active") << draining.dump(2);
  EXPECT_TRUE(std::any_of(slot0.begin(), slot0.end(), [&](const json& row) {
    return row.value("state", "") == "draining" && row.value("pid", 0) == worker0_;
  })) << draining.dump(2);
  EXPECT_EQ(states_of(draining, 1), "active") << draining.dump(2);

  // The requests in flight finish, each followed by a close.
  for (auto& c : sleepers) {
    HttpResult answer = c.read_response(after(5s));
    ASSERT_TRUE(answer.ok()) << answer.describe();
    EXPECT_EQ(answer.response.status, 200);
    EXPECT_EQ(answer.response.body, "slept 500 ms\n");
    EXPECT_EQ(answer.worker(), 0);
    EXPECT_TRUE(answer.response.closes()) << "a draining worker closes the connection after its answer";
    EXPECT_EQ(c.wait_for_close(after(2s)), PeerEnd::kClosed);
  }
  // Then worker 0 exits, and the slot stays drained.
  EXPECT_TRUE(lbd().wait_for_log(exited_line(worker0_), after(5s)));
  EXPECT_TRUE(lbd().wait_for_log(R"(\[worker 0\] drained: [0-9]+ requests served)", after(1s)));
  EXPECT_TRUE(wait_for_requests(load, 500, after(5s)));
  const json drained = status();
  EXPECT_EQ(states_of(drained, 0), "drained") << drained.dump(2);
  LoadReport report = load.stop();

  EXPECT_TRUE(report.all_ok()) << report.summary();
  EXPECT_EQ(report.failed(), 0u) << report.summary();
  uint64_t after_drain = 0, on_worker0 = 0;
  for (const Sample& s : report.samples) {
    if (s.connected_at <= drained_at) continue;
    after_drain++;
    if (s.worker == 0) on_worker0++;
  }
  std::cout << "drain under load: " << after_drain << " connections opened after lbctl drain returned, "
            << on_worker0 << " of them on worker 0; " << report.summary() << "\n";
  EXPECT_GE(after_drain, 100u) << "too little load after the drain to tell";
  EXPECT_EQ(on_worker0, 0u) << "connections opened after the drain returned reached worker 0";

  // undrain returns when the slot serves again.
  CommandResult back = lbctl({"undrain", "0"});
  ASSERT_TRUE(back.exited(0)) << back.describe();
  const auto pids = serving_pids();
  ASSERT_EQ(pids.size(), 2u);
  EXPECT_NE(pids.at(0), worker0_);
  EXPECT_EQ(fetch_from_worker(address(), 0, after(5s)).worker(), 0);
}

TEST_F(Drain, KeepAliveClientIsToldToCloseOnItsNextRequest) {
  auto idle = idle_on(0, 1);
  ASSERT_EQ(idle.size(), 1u);
  HttpConnection& c = idle[0];
  CommandResult r = lbctl({"drain", "0", "--timeout", "30"});
  ASSERT_TRUE(r.exited(0)) << r.describe();

  // The connection was not closed under the client: its next request is answered, with a close.
  HttpResult answer = c.request(http_get("/"), after(2s));
  ASSERT_TRUE(answer.ok()) << answer.describe();
  EXPECT_EQ(answer.response.status, 200);
  EXPECT_EQ(answer.worker(), 0);
  EXPECT_TRUE(answer.response.closes());
  EXPECT_EQ(c.wait_for_close(after(2s)), PeerEnd::kClosed);
  // Holding nothing more, the worker exits long before the 30 s timeout.
  EXPECT_TRUE(lbd().wait_for_log(exited_line(worker0_), after(5s)));
}

TEST_F(Drain, SilentConnectionIsClosedAtTheTimeout) {
  auto idle = idle_on(0, 1);
  ASSERT_EQ(idle.size(), 1u);
  HttpConnection& c = idle[0];
  const auto start = Clock::now();
  CommandResult r = lbctl({"drain", "0", "--timeout", "1"});
  ASSERT_TRUE(r.exited(0)) << r.describe();

  // Until the timeout the worker keeps the silent connection, and status shows it: slot 0 is
  // "draining" (not yet "drained": its worker still runs) with one connection.
  json draining;
  EXPECT_TRUE(eventually(after(800ms), [&] {
    draining = status();
    for (const auto& row : rows_of(draining, 0)) {
      if (row.value("state", "") == "draining" && row.value("connections", 0) == 1) return true;
    }
    return false;
  }, 20ms)) << draining.dump(2);
  EXPECT_EQ(states_of(draining, 0), "draining") << "one row, draining, while the worker runs: " << draining.dump(2);

  EXPECT_EQ(c.wait_for_close(after(5s)), PeerEnd::kClosed) << "an orderly close, not a reset";
  const auto closed_after = Clock::now() - start;
  EXPECT_GE(closed_after, 900ms) << "closed before the drain timeout";
  EXPECT_LT(closed_after, 4s);
  EXPECT_TRUE(lbd().wait_for_log(exited_line(worker0_), after(5s)));
  EXPECT_EQ(states_of(status(), 0), "drained");
}

TEST_F(Drain, WaitReturnsOnceTheWorkerHasExited) {
  auto idle = idle_on(0, 1);
  ASSERT_EQ(idle.size(), 1u);
  HttpConnection& c = idle[0];
  // Whether the worker reads it before or after the drain begins, it is answered.
  ASSERT_EQ(c.send(http_get("/sleep?ms=300"), after(1s)), Outcome::kOk);
  CommandResult r = lbctl({"drain", "0", "--wait"});
  ASSERT_TRUE(r.exited(0)) << r.describe();
  EXPECT_EQ(r.out_lines().back(), "drained") << r.out;
  // The request it was running was answered before the worker exited.
  HttpResult answer = c.read_response(after(1s));
  EXPECT_EQ(answer.status(), 200) << answer.describe();
  const json s = status();
  EXPECT_EQ(states_of(s, 0), "drained") << s.dump(2);
  EXPECT_TRUE(lbd().wait_for_log(exited_line(worker0_), after(1s)));
}

}  // namespace
}  // namespace lbd::test
