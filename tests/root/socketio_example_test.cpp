// examples/socketio under lbd run: socket.io's long-polling transport sends each poll and each
// message as a request of its own, and the upgrade to WebSocket is one more connection; all of
// them must reach the worker that holds the session. --policy sticky steers by the client's
// address, so 100 clients, each from an address of its own in 127/8, spread over 4 workers and
// each stays on its worker: polling, upgrade, messages, and again after a reload replaced every
// worker. Under --policy rr the same clients fail with socket.io's "Session ID unknown", which
// shows the sticky test is not passing by luck.
#include <gtest/gtest.h>
#include <signal.h>

#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "support/exec_test.h"
#include "support/npm_example.h"

namespace lbd::test {
namespace {

using nlohmann::json;

constexpr int kClients = 100;

class SocketIoExample : public ExecTest {
 protected:
  void SetUp() override {
    LBD_REQUIRE_ROOT("--policy sticky and rr are lbd's steering (--mode bpf)");
    app_ = prepare_npm_example("socketio");
    if (!app_.skip_reason.empty()) GTEST_SKIP() << app_.skip_reason;
    ASSERT_TRUE(app_.problem.empty()) << app_.problem;
  }
  void TearDown() override {
    client_.reset();
    lbd_.reset();
  }

  // lbd's defaults but the policy: sticky's stall bound (--sticky-stale-after, 1 s) is what lets
  // a Node.js worker busy with a burst of handshakes (100 clients at once, or every client of a
  // slot reconnecting after a reload) keep its clients; with a 50 ms bound 5 to 9 of 100 clients
  // failed with "Session ID unknown" in 3 runs of 5. The same flags for rr.
  void start_server(const std::string& policy) {
    start_program({"--mode", "bpf", "--policy", policy, "-i", "4", "--kill-timeout", "5"},
                  {"node", app_.path("server.js")});
  }

  // client.js against lbd's address: 100 clients from 127.1.0.1 on.
  void start_client(int phases, int phase_timeout) {
    client_.emplace(LbdProcess::Options{
        path_of("node"),
        {app_.path("client.js"), "--url", "http://" + address().to_string(), "--clients", std::to_string(kClients),
         "--first-address", "127.1.0.1", "--messages", "3", "--phases", std::to_string(phases), "--phase-timeout",
         std::to_string(phase_timeout)},
        {}});
  }

  // The client's report of phase `n`, or an empty object (and a failure) if none came in time.
  json phase_report(int n, Deadline deadline) {
    auto line = client_->wait_for_log("^phase " + std::to_string(n) + " ([{].*)$", deadline);
    if (!line) {
      ADD_FAILURE() << "no report of phase " << n << " from the client:\n" << client_->log();
      return json::object();
    }
    json report = json::parse(line->groups[1], nullptr, false);
    if (!report.is_object()) ADD_FAILURE() << "not JSON: " << line->groups[1];
    return report.is_object() ? report : json::object();
  }

  // The report's `workers` (LB_WORKER_ID -> clients), as "0:24 1:27 2:25 3:24".
  static std::string spread(const json& report) {
    std::string text;
    const json workers = report.value("workers", json::object());  // items() must not outlive it
    for (const auto& [worker, clients] : workers.items()) {
      text += (text.empty() ? "" : " ") + worker + ":" + std::to_string(clients.get<int>());
    }
    return text;
  }

  NpmExample app_;
  std::optional<LbdProcess> client_;
};

TEST_F(SocketIoExample, StickyKeepsEveryClientOnItsWorkerThroughPollingUpgradeAndAReload) {
  ASSERT_NO_FATAL_FAILURE(start_server("sticky"));
  const auto first_pids = serving_pids();
  ASSERT_EQ(first_pids.size(), 4u);
  const auto started = Clock::now();
  start_client(2, 40);

  const json one = phase_report(1, after(60s));
  ASSERT_FALSE(one.empty());
  EXPECT_EQ(one.value("completed", -1), kClients) << one.dump();
  EXPECT_EQ(one.value("errors", -1), 0) << one.dump();
  EXPECT_EQ(one.value("failures", -1), 0) << one.dump();
  EXPECT_EQ(one.value("disconnects", -1), 0) << one.dump();
  // The clients did come from 100 addresses (the server saw each one's own), and those spread
  // over the workers: with all of them on one worker, sticky would be untested.
  EXPECT_EQ(one.value("wrong_source_address", -1), 0) << one.dump();
  EXPECT_GE(one.value("workers", json::object()).size(), 3u) << "100 addresses on fewer than 3 of 4 workers: "
                                                             << one.dump();

  // Every worker is replaced, slot by slot; each drained worker closes its clients' connections,
  // and they reconnect by themselves.
  const auto reload_started = Clock::now();
  CommandResult reload = lbctl({"reload"});
  const double reload_seconds = std::chrono::duration<double>(Clock::now() - reload_started).count();
  ASSERT_TRUE(reload.exited(0)) << reload.describe();
  ASSERT_EQ(kill(client_->pid(), SIGUSR2), 0);

  // Each client again: on a new process (the client waits for that), on the same worker slot as
  // before, upgraded, its messages echoed; no error during the reload or after it.
  const json two = phase_report(2, after(60s));
  ASSERT_FALSE(two.empty());
  EXPECT_EQ(two.value("completed", -1), kClients) << two.dump();
  EXPECT_EQ(two.value("errors", -1), 0) << two.dump();
  EXPECT_EQ(two.value("failures", -1), 0) << two.dump();
  EXPECT_EQ(two.value("moved_worker", -1), 0) << two.dump();
  EXPECT_EQ(two.value("wrong_source_address", -1), 0) << two.dump();
  EXPECT_EQ(two.value("workers", json::object()), one.value("workers", json::object()));
  const json pids = two.value("pids", json::object());
  for (const auto& [pid, clients] : pids.items()) {
    for (auto [slot, old_pid] : first_pids) EXPECT_NE(std::to_string(old_pid), pid) << "an old worker served";
  }
  EXPECT_EQ(client_->wait_exit(after(10s)), ExitStatus::exited(0)) << client_->log();
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  std::cout << kClients << " socket.io clients, --policy sticky, 4 workers: workers " << spread(one)
            << "; phase 1 " << one.value("seconds", 0.0) << " s, reload " << reload_seconds << " s, phase 2 "
            << two.value("seconds", 0.0) << " s (" << two.value("disconnects", 0)
            << " disconnects, reconnected), " << seconds << " s in all\n";
  RecordProperty("spread", spread(one));
  EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u) << lbd().log();
}

TEST_F(SocketIoExample, RoundRobinBreaksThePollingTransportWithSessionIdUnknown) {
  ASSERT_NO_FATAL_FAILURE(start_server("rr"));
  start_client(1, 15);
  const json one = phase_report(1, after(40s));
  ASSERT_FALSE(one.empty());
  std::cout << "the same " << kClients << " clients under --policy rr: " << one.value("completed", -1)
            << " completed, " << one.value("errors", -1) << " errors, " << one.value("session_unknown", -1)
            << " of them \"Session ID unknown\"\n";
  EXPECT_LT(one.value("completed", -1), kClients) << one.dump();
  EXPECT_GT(one.value("session_unknown", -1), 0) << one.dump();
  EXPECT_EQ(client_->wait_exit(after(10s)), ExitStatus::exited(0)) << client_->log();
}

}  // namespace
}  // namespace lbd::test
