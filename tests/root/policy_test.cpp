// The steering policies as a client sees them: which worker answers new connections.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <future>
#include <set>
#include <thread>

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

// sticky: the client's address picks the worker. Each test client is an address of its own in
// 127.0.0.0/8 (all of it is the loopback's), as clients behind different hosts would be.
class Sticky : public ControlTest {
 protected:
  static constexpr int kClients = 60;

  void SetUp() override { LBD_REQUIRE_ROOT("loads the BPF steering program"); }

  static net::Address client(int i) { return net::Address::parse("127.2.0." + std::to_string(i + 1) + ":0"); }

  // The worker that answers each client, over `connections` new connections per client; a
  // client answered by two workers fails the test.
  std::vector<int> workers_of_clients(int connections = 1) {
    std::vector<int> worker(kClients, -1);
    for (int round = 0; round < connections; round++) {
      for (int i = 0; i < kClients; i++) {
        const net::Address source = client(i);
        HttpResult r = fetch(address(), http_get("/", /*close=*/true), after(2s), &source);
        EXPECT_TRUE(r.ok()) << "client " << source.to_string() << ": " << r.describe();
        if (!r.ok()) return worker;
        if (worker[i] == -1) worker[i] = r.response.worker();
        EXPECT_EQ(r.response.worker(), worker[i]) << "client " << source.to_string() << ", connection " << round;
      }
    }
    return worker;
  }
};

TEST_F(Sticky, EachClientKeepsItsWorkerAcrossConnectionsReloadsAndUpgradesAndOnlyADrainedWorkersClientsMove) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("bpf", 4, {"--policy", "sticky"})));
  EXPECT_EQ(ready_.policy, "sticky");
  const std::vector<int> before = workers_of_clients(3);
  const std::set<int> used(before.begin(), before.end());
  ASSERT_GE(used.size(), 3u) << "60 client addresses over 4 workers";

  CommandResult reload = lbctl({"reload"});
  ASSERT_TRUE(reload.exited(0)) << reload.describe();
  EXPECT_EQ(workers_of_clients(), before) << "a reloaded worker keeps its slot's clients";

  ASSERT_GT(std::count(before.begin(), before.end(), 2), 0) << "no client on worker 2 to move";
  CommandResult drain = lbctl({"drain", "2"});
  ASSERT_TRUE(drain.exited(0)) << drain.describe();
  const std::vector<int> drained = workers_of_clients();
  for (int i = 0; i < kClients; i++) {
    if (before[i] == 2) {
      EXPECT_NE(drained[i], 2) << "client " << i;
    } else {
      EXPECT_EQ(drained[i], before[i]) << "client " << i << " was not on worker 2, yet moved";
    }
  }

  CommandResult undrain = lbctl({"undrain", "2"});
  ASSERT_TRUE(undrain.exited(0)) << undrain.describe();
  EXPECT_EQ(workers_of_clients(), before) << "worker 2's clients come back, nobody else moves";

  // Set at run time, from another policy, the same clients land on the same workers.
  ASSERT_TRUE(lbctl({"policy", "rr"}).exited(0));
  ASSERT_TRUE(lbctl({"policy", "sticky"}).exited(0));
  EXPECT_EQ(workers_of_clients(), before);

  // A new lbd (an upgrade) keeps the policy and the mapping: it has no seed.
  CommandResult upgrade = lbctl({"upgrade"});
  ASSERT_TRUE(upgrade.exited(0)) << upgrade.describe();
  EXPECT_EQ(status()["lbd"].value("policy", ""), "sticky");
  EXPECT_EQ(workers_of_clients(), before);
}

TEST_F(Sticky, AStoppedWorkersClientsAreServedByTheirNextChoiceMeanwhile) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("bpf", 4, {"--policy", "sticky", "--sticky-stale-after", "50"})));
  const std::vector<int> before = workers_of_clients();
  ASSERT_GT(std::count(before.begin(), before.end(), 1), 0) << "no client on worker 1";
  const pid_t stalled = lbd().worker_pid(1);
  ASSERT_TRUE(stop_process(stalled, after(2s))) << "worker 1 did not stop";
  std::this_thread::sleep_for(100ms);  // the bound --sticky-stale-after 50 promises (docs/ARCHITECTURE.md, section 5)

  const std::vector<int> meanwhile = workers_of_clients();  // a timeout here: sent to the stopped worker
  for (int i = 0; i < kClients; i++) {
    if (before[i] == 1) {
      EXPECT_NE(meanwhile[i], 1) << "client " << i;
    } else {
      EXPECT_EQ(meanwhile[i], before[i]) << "client " << i << " was not on worker 1, yet moved";
    }
  }
  ASSERT_EQ(kill(stalled, SIGCONT), 0);
  // Live again within the heartbeat's bound; then its clients are back.
  const Deadline deadline = after(5s);
  std::vector<int> now = workers_of_clients();
  while (now != before && Clock::now() < deadline) now = workers_of_clients();
  EXPECT_EQ(now, before);
}

TEST_F(Sticky, AWorkerThatPausesForLessThanTheStickyBoundKeepsItsClients) {
  // A worker busy for a few hundred ms (a burst of handshakes, a garbage collection) is not worth
  // moving its clients away from: they would lose what it holds for them. By default sticky waits
  // a second (--sticky-stale-after) before it moves them.
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("bpf", 4, {"--policy", "sticky"})));
  const std::vector<int> before = workers_of_clients();
  const auto on_one = std::find(before.begin(), before.end(), 1);
  ASSERT_NE(on_one, before.end()) << "no client on worker 1";
  const net::Address source = client(static_cast<int>(on_one - before.begin()));
  const pid_t paused = lbd().worker_pid(1);
  auto steered_to_1 = [&] {
    const nlohmann::json now = status();
    for (const auto& row : now["workers"]) {
      if (row.value("slot", -1) == 1) return row.value("steered", uint64_t{0});
    }
    return uint64_t{0};
  };
  const uint64_t steered_before = steered_to_1();
  ASSERT_TRUE(stop_process(paused, after(2s))) << "worker 1 did not stop";
  const auto stopped_at = Clock::now();
  std::this_thread::sleep_for(200ms);  // paused for a while, well under the second
  auto answer = std::async(std::launch::async, [&] {
    return fetch(address(), http_get("/", /*close=*/true), after(5s), &source);
  });
  // The client's connection was steered while worker 1 was stopped, and within the bound.
  ASSERT_TRUE(eventually(after(2s), [&] { return steered_to_1() > steered_before; }))
      << "the client's connection was not steered to worker 1 (" << steered_before << " before, " << steered_to_1()
      << " now)";
  ASSERT_LT(Clock::now() - stopped_at, 900ms) << "the machine was too slow for this test's point";
  ASSERT_EQ(kill(paused, SIGCONT), 0);
  HttpResult r = answer.get();
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.response.worker(), 1) << "the client was moved off a worker paused for 400 ms";
}

}  // namespace
}  // namespace lbd::test
