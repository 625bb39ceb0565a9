// docs/ARCHITECTURE.md, invariant 1: a connection that reached a worker's accept queue is never reset when
// that worker's listener goes away (here: shut down under it, or the worker is killed) while
// another worker is active. The program migrates the queue; every client gets its answer.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>

#include <iostream>

#include "support/lbd_test.h"

namespace lbd::test {
namespace {

class Migration : public LbdTest {
 protected:
  void SetUp() override {
    LBD_REQUIRE_ROOT("loads the BPF steering program and takes a worker's socket (pidfd_getfd)");
    // Round-robin sends every other connection to worker 0 even when it is stopped, so
    // connections pile up in its accept queue.
    ASSERT_NO_FATAL_FAILURE(start(lbd_flags("bpf", 2, {"--policy", "rr"})));
  }
};

TEST_F(Migration, QueuedConnectionsMoveWhenAListenerShutsDown) {
  const pid_t stopped = lbd().worker_pid(0);
  ASSERT_TRUE(stop_process(stopped, after(2s)));

  // 20 clients each send a request; worker 1 answers its half, the rest wait in worker 0's queue.
  std::vector<HttpConnection> clients;
  for (int i = 0; i < 20; i++) {
    HttpResult failure;
    clients.push_back(HttpConnection::open(address(), after(2s), &failure));
    ASSERT_TRUE(clients.back().valid()) << failure.describe();
    ASSERT_EQ(clients.back().send(http_get("/", /*close=*/true), after(2s)), Outcome::kOk);
  }
  auto answered = [&] {
    size_t n = 0;
    for (auto& c : clients) n += c.nothing_received() ? 0 : 1;
    return n;
  };
  EXPECT_TRUE(eventually(after(3s), [&] { return answered() >= 10; }));
  const size_t queued = clients.size() - answered();
  EXPECT_GE(queued, 5u) << "too few connections queued on the stopped worker to test migration";

  UniqueFd listener = take_listener(stopped, address().port());
  ASSERT_TRUE(listener.valid()) << "no listener on port " << address().port() << " in worker 0";
  ASSERT_EQ(shutdown(listener.get(), SHUT_RD), 0);

  std::map<Outcome, int> outcomes;
  for (auto& c : clients) {
    HttpResult r = c.read_response(after(5s));
    outcomes[r.outcome]++;
    EXPECT_TRUE(r.ok()) << r.describe();
    if (r.ok()) {
      EXPECT_EQ(r.response.status, 200);
      EXPECT_EQ(r.response.worker(), 1);
    }
  }
  EXPECT_EQ(outcomes[Outcome::kReset], 0);
  std::cout << queued << " of " << clients.size() << " connections were queued on the stopped worker; "
            << outcomes[Outcome::kOk] << " answered, " << outcomes[Outcome::kReset] << " reset\n";
}

TEST_F(Migration, WorkerKilledUnderLoadLosesNoRequest) {
  const pid_t victim = lbd().worker_pid(0);
  ASSERT_TRUE(stop_process(victim, after(2s)));

  constexpr unsigned kClients = 8;
  LoadOptions options;
  options.address = address();
  options.threads = kClients;
  options.duration = 15s;  // an upper bound: stopped below once worker 0 is back and serving
  options.max_requests = 50'000;
  LoadGenerator load(options);

  // Every client ends up waiting on a connection queued at the stopped worker (round-robin keeps
  // sending there): nothing completes for a while although all are in flight.
  const bool all_stuck = eventually(after(5s), [&] {
    const uint64_t before = load.completed();
    std::this_thread::sleep_for(50ms);
    return load.in_flight() == kClients && load.completed() == before;
  });
  EXPECT_TRUE(all_stuck) << "clients did not pile up on the stopped worker";
  const uint64_t before_kill = load.completed();

  ASSERT_EQ(kill(victim, SIGKILL), 0);
  EXPECT_TRUE(lbd().wait_for_log(R"(worker 0 \(pid [0-9]+\) crashed: was killed by signal 9)", after(5s)));
  const pid_t restarted = lbd().wait_for_worker_restart(0, victim, after(5s));
  EXPECT_GT(restarted, 0) << "worker 0 was not restarted";
  const uint64_t at_restart = load.completed();
  // Some load after the restart, so the new worker 0 serves too (checked below: round-robin sends
  // it every other connection).
  EXPECT_TRUE(wait_for_requests(load, 400, after(10s))) << "the load stalled after the restart";
  LoadReport report = load.stop();

  std::cout << "crash under load: " << kClients << " clients queued on worker 0 when it was killed ("
            << before_kill << " requests done before), " << at_restart
            << " done when it was back; " << report.summary() << "\n";
  RecordProperty("load", report.summary());
  EXPECT_TRUE(report.all_ok()) << report.summary();
  EXPECT_EQ(report.count(Outcome::kReset), 0u) << report.summary();
  EXPECT_GT(report.worker_count(0), 0u) << "the restarted worker 0 served nothing: " << report.summary();
  EXPECT_GT(report.worker_count(1), 0u) << report.summary();
}

}  // namespace
}  // namespace lbd::test
