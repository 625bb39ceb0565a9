// The steering policies as a client sees them: which worker answers new connections.
#include <gtest/gtest.h>
#include <signal.h>

#include "support/control_test.h"
#include "support/lbd_test.h"

namespace lbd::test {
namespace {

class Policy : public LbdTest {
 protected:
  void SetUp() override { LBD_REQUIRE_ROOT("loads the BPF steering program"); }

  // `count` sequential new connections, one GET / each: how many each worker answered.
  std::map<int, int> answers_per_worker(int count) {
    std::map<int, int> workers;
    for (int i = 0; i < count; i++) {
      HttpResult r = fetch(address(), http_get("/", /*close=*/true), after(2s));
      EXPECT_TRUE(r.ok()) << "connection " << i << ": " << r.describe();
      if (!r.ok()) break;
      workers[r.response.worker()]++;
    }
    return workers;
  }
};

TEST_F(Policy, RoundRobinGivesEachWorkerTheSameShare) {
  ASSERT_NO_FATAL_FAILURE(start(lbd_flags("bpf", 4, {"--policy", "rr"})));
  EXPECT_EQ(ready_.policy, "rr");
  const std::map<int, int> expected = {{0, 100}, {1, 100}, {2, 100}, {3, 100}};
  EXPECT_EQ(answers_per_worker(400), expected);
}

TEST_F(Policy, LeastSendsNewConnectionsAwayFromAWorkerHoldingMany) {
  ASSERT_NO_FATAL_FAILURE(start(lbd_flags("bpf", 4, {"--policy", "least", "--demo-routes"})));
  // Hold 40 idle keep-alive connections on worker 0. `least` balances, so worker 0 gets one in
  // four: keep every connection open until 40 are on worker 0, then let go of the others.
  std::vector<HttpConnection> on_zero, others;
  const Deadline deadline = after(20s);
  for (int opened = 0; on_zero.size() < 40 && opened < 1000 && Clock::now() < deadline; opened++) {
    HttpResult failure;
    HttpConnection c = HttpConnection::open(address(), after(2s), &failure);
    ASSERT_TRUE(c.valid()) << failure.describe();
    HttpResult r = c.request(http_get("/"), after(2s));
    ASSERT_TRUE(r.ok()) << "connection " << opened << ": " << r.describe();
    (r.response.worker() == 0 ? on_zero : others).push_back(std::move(c));
  }
  ASSERT_EQ(on_zero.size(), 40u);
  // Close the others and wait until each worker has closed its end too: their load is gone.
  for (auto& c : others) c.shutdown_write();
  for (auto& c : others) ASSERT_EQ(c.wait_for_close(after(5s)), PeerEnd::kClosed);
  others.clear();

  std::map<int, int> workers = answers_per_worker(40);
  EXPECT_EQ(workers[0], 0) << "worker 0 holds 40 connections, the others none";
  EXPECT_EQ(workers[1] + workers[2] + workers[3], 40);
  // The held connections are still served.
  for (auto& c : on_zero) {
    HttpResult r = c.request(http_get("/"), after(2s));
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.response.worker(), 0);
  }
}

TEST_F(Policy, LeastStopsSendingToAStoppedWorkerWithin100ms) {
  ASSERT_NO_FATAL_FAILURE(start(lbd_flags("bpf", 4, {"--policy", "least", "--demo-routes"})));
  const pid_t stalled = lbd().worker_pid(0);
  ASSERT_TRUE(stop_process(stalled, after(2s))) << "worker 0 did not stop";
  std::this_thread::sleep_for(100ms);  // the bound lbd promises (docs/ARCHITECTURE.md, section 5)

  std::map<int, int> workers;
  for (int i = 0; i < 40; i++) {
    HttpResult r = fetch(address(), http_get("/", /*close=*/true), after(2s));
    ASSERT_TRUE(r.ok()) << "connection " << i << " (a timeout means it was sent to the stopped worker): "
                        << r.describe();
    EXPECT_EQ(r.response.status, 200);
    workers[r.response.worker()]++;
  }
  EXPECT_EQ(workers[0], 0);

  // Resumed, it is chosen again.
  ASSERT_EQ(kill(stalled, SIGCONT), 0);
  HttpResult r = fetch_from_worker(address(), 0, after(5s), 100);
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.response.worker(), 0) << "worker 0 got no connection after SIGCONT";
}

TEST_F(Policy, LeastStopsSendingToABusyWorkerWithin100ms) {
  ASSERT_NO_FATAL_FAILURE(start(lbd_flags("bpf", 4, {"--policy", "least", "--demo-routes"})));
  // A keep-alive connection on worker 0, then a request that keeps it computing for 3 s: its
  // event loop does not turn meanwhile.
  HttpConnection busy;
  for (int i = 0; i < 100 && !busy.valid(); i++) {
    HttpConnection c = HttpConnection::open(address(), after(2s));
    ASSERT_TRUE(c.valid());
    HttpResult r = c.request(http_get("/"), after(2s));
    ASSERT_TRUE(r.ok()) << r.describe();
    if (r.response.worker() == 0) busy = std::move(c);
  }
  ASSERT_TRUE(busy.valid()) << "no connection reached worker 0";
  ASSERT_EQ(busy.send(http_get("/work?us=3000000"), after(2s)), Outcome::kOk);
  std::this_thread::sleep_for(100ms);  // the bound lbd promises

  std::map<int, int> workers = answers_per_worker(40);
  EXPECT_EQ(workers[0], 0) << "connections were sent to the worker stuck in a computation";
}

TEST_F(Policy, HashSpreadsConnectionsOverEveryWorker) {
  ASSERT_NO_FATAL_FAILURE(start(lbd_flags("bpf", 4, {"--policy", "hash"})));
  EXPECT_EQ(ready_.policy, "hash");
  std::map<int, int> workers = answers_per_worker(200);
  ASSERT_EQ(workers.size(), 4u);
  for (const auto& [slot, n] : workers) EXPECT_GE(n, 15) << "worker " << slot << " of 200 connections";
}

// A worker whose connection table is full has stopped accepting; what steering sent it would wait
// in its queue. Both rr and least send the next connections to the worker with room.
class FullTable : public ControlTest {
 protected:
  void SetUp() override { LBD_REQUIRE_ROOT("loads the BPF steering program"); }
};

TEST_F(FullTable, AWorkerWithAFullTableIsPassedOverByRoundRobinAndLeast) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags(
      "bpf", 2, {"--policy", "rr", "--max-connections", "16", "--demo-routes", "--shutdown-timeout", "1"})));
  // Fill worker 0 with 16 requests being answered (nothing it could shed); connections that land
  // on worker 1 are let go. rr alternates, so this takes about 32 connections.
  std::vector<HttpConnection> on_zero;
  for (int opened = 0; on_zero.size() < 16 && opened < 200; opened++) {
    HttpResult failure;
    HttpConnection c = HttpConnection::open(address(), after(2s), &failure);
    ASSERT_TRUE(c.valid()) << failure.describe();
    HttpResult r = c.request(http_get("/"), after(2s));
    ASSERT_TRUE(r.ok()) << "connection " << opened << ": " << r.describe();
    if (r.response.worker() != 0) continue;
    ASSERT_EQ(c.send(http_get("/sleep?ms=30000"), after(1s)), Outcome::kOk);
    on_zero.push_back(std::move(c));
  }
  ASSERT_EQ(on_zero.size(), 16u);
  ASSERT_TRUE(lbd().wait_for_log("connection table full: 16 of 16", after(5s)));
  nlohmann::json workers_now = status()["workers"];
  ASSERT_EQ(workers_now.size(), 2u);
  EXPECT_EQ(workers_now[0].value("full", false), true) << workers_now.dump();
  EXPECT_EQ(workers_now[1].value("full", true), false) << workers_now.dump();
  for (const char* policy : {"rr", "least"}) {
    SCOPED_TRACE(policy);
    CommandResult set = lbctl({"policy", policy});
    ASSERT_TRUE(set.exited(0)) << set.describe();
    // Each of the next 100 is answered at once, by worker 1: none waits 30 s behind worker 0.
    std::map<int, int> workers;
    for (int i = 0; i < 100; i++) {
      HttpResult r = fetch(address(), http_get("/", /*close=*/true), after(2s));
      ASSERT_TRUE(r.ok()) << "connection " << i << ": " << r.describe();
      workers[r.response.worker()]++;
    }
    EXPECT_EQ(workers[1], 100) << "answered by worker 0: " << workers[0];
  }
  on_zero.clear();
}

}  // namespace
}  // namespace lbd::test
