// Exec mode under lbd's steering (--mode bpf, root): a program lbd did not write is
// steered by the load lbd reads from the kernel for it (its listener's queue, its connections),
// so `least` avoids one that stopped; reloads and --max-memory replacements fail no request.
#include <gtest/gtest.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/exec_test.h"

namespace lbd::test {
namespace {

using nlohmann::json;

constexpr auto kLoadBound = 40s;

class ExecBpf : public ExecTest {
 protected:
  void SetUp() override { LBD_REQUIRE_ROOT("--mode bpf loads the steering program"); }

  // Two programs under `least`, each seen answering (both past their start): for the tests of
  // one that is stopped.
  void start_two_programs_under_least() {
    ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "bpf", "--policy", "least", "-i", "2", "--wait-ready"},
                                          {SOCKET_ACTIVATED_SERVER_PATH}));
    ASSERT_EQ(serving_pids().size(), 2u);
    std::set<int> seen;
    ASSERT_TRUE(eventually(after(10s), [&] {
      seen.insert(fetch(address(), http_get("/", true), after(2s)).worker());
      return seen.count(0) && seen.count(1);
    }, 1ms));
  }
};

TEST_F(ExecBpf, TenReloadsUnderNewConnectionLoadFailNothing) {
  ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "bpf", "-i", "2", "--wait-ready", "--kill-timeout", "5"},
                                        {SOCKET_ACTIVATED_SERVER_PATH}));
  const auto first = serving_pids();
  ASSERT_EQ(first.size(), 2u);
  LoadOptions options;
  options.threads = 4;
  LoadGenerator load(bounded(options, kLoadBound));
  ASSERT_TRUE(wait_for_requests(load, 200, after(5s))) << "the load did not get going";
  const auto started = Clock::now();
  for (int i = 1; i <= 10; i++) {
    CommandResult r = lbctl({"reload"});
    ASSERT_TRUE(r.exited(0)) << "reload " << i << ": " << r.describe();
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  EXPECT_TRUE(wait_for_requests(load, 500, after(5s))) << "the load stalled after the reloads";
  LoadReport report = load.stop();
  const auto last = serving_pids();
  ASSERT_EQ(last.size(), 2u);
  for (auto [slot, pid] : first) EXPECT_NE(last.at(slot), pid);
  EXPECT_EQ(status()["lbd"].value("reloads", -1), 10);
  std::cout << "exec mode: 10 reloads of 2 workers in " << seconds << " s; " << report.summary() << "\n";
  RecordProperty("load", report.summary());
  EXPECT_EQ(report.failed(), 0u) << report.summary();
  EXPECT_TRUE(report.all_ok()) << report.summary();
  EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u) << lbd().log();
}

// Most programs never send READY=1. In --mode bpf lbd sees them accept instead: a program is
// ready once it takes lbd's probe connection off its queue. So a reload waits for a build that
// starts slowly, and refuses one that never accepts, leaving the old one serving: no request
// fails either way.
TEST_F(ExecBpf, AProgramThatDoesNotNotifyIsReadyOnlyOnceItAccepts) {
  const std::string program = dir_.path("server.sh");
  auto deploy = [&](const std::string& command) {
    replace_executable_with_text(program, "#!/bin/sh\nexec " + command + "\n");
  };
  deploy(std::string(SOCKET_ACTIVATED_SERVER_PATH) + " --no-notify");
  ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "bpf", "-i", "2", "--ready-timeout", "4", "--kill-timeout", "5"},
                                        {program}));
  const auto first = serving_pids();
  ASSERT_EQ(first.size(), 2u);
  LoadOptions options;
  options.threads = 4;
  options.request_timeout = 20s;
  LoadGenerator load(bounded(options, kLoadBound));
  ASSERT_TRUE(wait_for_requests(load, 200, after(5s))) << "the load did not get going";

  // A slow start: 1.5 s before it accepts. Each slot's new program is ready only then.
  deploy(std::string(SOCKET_ACTIVATED_SERVER_PATH) + " --no-notify --ready-after-ms 1500");
  const auto slow_started = Clock::now();
  CommandResult slow = lbctl({"reload"});
  const auto slow_took = Clock::now() - slow_started;
  ASSERT_TRUE(slow.exited(0)) << slow.describe();
  EXPECT_GE(slow_took, 3s) << "two slots, one after the other, each ready only once it accepts";
  const auto second = serving_pids();
  ASSERT_EQ(second.size(), 2u);
  for (auto [slot, pid] : first) EXPECT_NE(second.at(slot), pid);

  // A build that never accepts (it holds fd 3 and sleeps): never ready, killed at --ready-timeout,
  // the reload fails and the programs that accept keep serving.
  deploy("sleep 600");
  CommandResult broken = lbctl({"reload"});
  EXPECT_TRUE(broken.exited(1)) << broken.describe();
  EXPECT_TRUE(broken.err.starts_with("lbctl: reload failed: slot 0: new worker pid ")) << broken.describe();
  EXPECT_NE(broken.err.find("not ready"), std::string::npos) << broken.describe();
  EXPECT_EQ(serving_pids(), second);

  EXPECT_TRUE(wait_for_requests(load, 500, after(5s))) << "the load stalled";
  LoadReport report = load.stop();
  std::cout << "exec mode, readiness by accepting: slow reload " << std::chrono::duration<double>(slow_took).count()
            << " s; " << report.summary() << "\n";
  EXPECT_EQ(report.failed(), 0u) << report.summary();
  EXPECT_TRUE(report.all_ok()) << report.summary();
}

// Listening sockets on `port`, by inode, with their accept queues (what `ss -lt` shows as
// Recv-Q), from one sock_diag dump of listeners alone: quick however many connections the
// machine has (reading /proc/net/tcp walks them all, tens of milliseconds under load).
std::map<uint32_t, uint32_t> listener_queues(uint16_t port) {
  std::map<uint32_t, uint32_t> queues;
  UniqueFd sock(socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!sock) {
    ADD_FAILURE() << "sock_diag socket: " << strerror(errno);
    return queues;
  }
  struct {
    nlmsghdr header;
    inet_diag_req_v2 request;
  } dump{};
  dump.header.nlmsg_len = sizeof(dump);
  dump.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  dump.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  dump.request.sdiag_family = AF_INET;
  dump.request.sdiag_protocol = IPPROTO_TCP;
  dump.request.idiag_states = 1u << TCP_LISTEN;
  if (send(sock.get(), &dump, sizeof(dump), 0) < 0) {
    ADD_FAILURE() << "sock_diag dump: " << strerror(errno);
    return queues;
  }
  alignas(nlmsghdr) char buffer[32768];
  while (true) {
    ssize_t n = recv(sock.get(), buffer, sizeof(buffer), 0);
    if (n <= 0) return queues;
    size_t left = static_cast<size_t>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buffer); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) return queues;
      const auto* socket = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
      if (ntohs(socket->id.idiag_sport) == port) queues[socket->idiag_inode] = socket->idiag_rqueue;
    }
  }
}

// The only worker crashes under load: with no slot active, the kernel's hash sends the clients to
// the starting program's listener too, and a program that falls behind never shows an empty
// queue. It is still seen accepting (its queue shrinks), so it is ready long before
// --ready-timeout.
TEST_F(ExecBpf, AProgramRestartedUnderLoadIsSeenAcceptingThoughItsQueueNeverEmpties) {
  ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "bpf", "-i", "1", "--ready-timeout", "30"},
                                        {SOCKET_ACTIVATED_SERVER_PATH, "--no-notify", "--accept-delay-ms", "5"}));
  const pid_t first = serving_pids().at(0);
  const auto before = listener_queues(address().port());
  ASSERT_EQ(before.size(), 1u) << "one listener: the program's (lbd holds a copy of the same socket)";
  const uint32_t old_listener = before.begin()->first;
  constexpr unsigned kClients = 16;
  LoadOptions options;
  options.threads = kClients;
  options.request_timeout = 20s;
  options.record_samples = true;
  options = bounded(options, kLoadBound);
  // Not at a low priority, unlike other loads: here the clients must outpace a program that falls
  // behind by design, or on a busy machine its queue empties for want of clients (seen: a queue of
  // one connection for 20 ms, then none) and the test would no longer be about a full queue.
  options.nice = 0;
  LoadGenerator load(options);
  ASSERT_TRUE(wait_for_requests(load, 100, after(5s))) << "the load did not get going";

  // The restarted program's listener, looked at until it is ready: its queue as lbd sees it.
  std::atomic<bool> watching{true};
  std::vector<uint32_t> queue_seen;
  std::thread watcher([&] {
    while (watching) {
      for (auto [inode, queued] : listener_queues(address().port())) {
        if (inode != old_listener) queue_seen.push_back(queued);
      }
      std::this_thread::sleep_for(500us);
    }
  });
  const size_t from_line = lbd().log_lines();
  const auto killed_at = Clock::now();
  ASSERT_EQ(kill(first, SIGKILL), 0);
  auto ready = lbd().wait_for_log("worker 0 ready: pid [0-9]+", after(15s), from_line);
  const auto ready_seen = Clock::now();
  watching = false;
  watcher.join();
  const auto took = ready_seen - killed_at;
  ASSERT_TRUE(ready) << "not ready again within 15 s (the queue never emptied?)\n" << lbd().log();
  EXPECT_TRUE(wait_for_requests(load, 200, after(10s))) << "no requests served after the restart";
  LoadReport report = load.stop();
  std::string queues;
  for (uint32_t q : queue_seen) queues += " " + std::to_string(q);
  std::cout << "restart under load, queue never empty: ready again in " << std::chrono::duration<double>(took).count()
            << " s; the new listener's queue:" << queues << "\n" << report.summary() << "\n";
  EXPECT_NE(serving_pids().at(0), first);

  // The queue the restarted program was judged by: clients piled up in it at once (they were being
  // refused meanwhile), and from the first look that found more than one connection queued (more
  // than lbd's own probe) it never emptied until the program was ready. Ready all the same, so lbd
  // saw it accept by its queue shrinking, not by an empty queue.
  const auto reached = std::find_if(queue_seen.begin(), queue_seen.end(), [](uint32_t q) { return q > 1; });
  EXPECT_NE(reached, queue_seen.end()) << "no client reached the restarted program's listener before it was ready:"
                                       << queues;
  if (reached != queue_seen.end()) {
    EXPECT_GE(queue_seen.end() - reached, 3) << "too few looks at the queue to tell:" << queues;
    EXPECT_EQ(std::count(reached, queue_seen.end(), 0u), 0) << "the queue emptied before the program was ready:"
                                                             << queues;
  }

  // What may fail, and only before the program was ready again: with the only program dead and
  // no slot active, nothing listens until lbd starts the next one (after 100 ms), so connections
  // are refused; a client's request on the killed program (accepted, or in its queue, which lbd's
  // copy of the listener keeps until it sees the exit: nowhere to migrate it) is reset or cut off.
  // Each client had one such request when the program died, and at most one more reached the
  // queue lbd's copy kept: 2 per client. No timeout, no bad answer, and nothing fails once the
  // program is ready.
  uint64_t after_ready = 0, failed_after_ready = 0, cut_off = 0, other_failures = 0;
  for (const Sample& sample : report.samples) {
    const bool ok = sample.outcome == Outcome::kOk && sample.status == 200;
    if (sample.started >= ready_seen) {
      after_ready++;
      failed_after_ready += ok ? 0 : 1;
    } else if (sample.outcome == Outcome::kReset || sample.outcome == Outcome::kClosedBeforeResponse) {
      cut_off++;
    } else if (!ok && !(sample.outcome == Outcome::kRefused && sample.started >= killed_at)) {
      other_failures++;
    }
  }
  EXPECT_EQ(failed_after_ready, 0u) << "requests failed after the program was ready again: " << report.summary();
  EXPECT_EQ(other_failures, 0u) << "timeouts, bad answers or refusals before the kill: " << report.summary();
  EXPECT_LE(cut_off, 2u * kClients) << "cut off with the killed program: " << report.summary();
  // 200 completed after it was ready, of which at most one per client had started before.
  EXPECT_GE(after_ready, 200u - kClients) << report.summary();
}

// Node.js as PM2 would run it (no READY=1, ever), under lbd's steering: ready when it accepts, and
// reloads under load fail nothing.
TEST_F(ExecBpf, NodeIsReadyWhenItAcceptsAndReloadsUnderLoadFailNothing) {
  if (!on_path("node")) GTEST_SKIP() << "needs Node.js";
  ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "bpf", "-i", "2", "--kill-timeout", "5"},
                                        {"node", std::string(FIXTURES_DIR) + "/node_hello.js"}));
  LoadOptions options;
  options.threads = 4;
  LoadGenerator load(bounded(options, kLoadBound));
  ASSERT_TRUE(wait_for_requests(load, 200, after(5s))) << "the load did not get going";
  for (int i = 1; i <= 3; i++) {
    CommandResult r = lbctl({"reload"});
    ASSERT_TRUE(r.exited(0)) << "reload " << i << ": " << r.describe();
  }
  EXPECT_TRUE(wait_for_requests(load, 500, after(5s))) << "the load stalled after the reloads";
  LoadReport report = load.stop();
  std::cout << "node under lbd run --mode bpf, 3 reloads: " << report.summary() << "\n";
  EXPECT_EQ(report.failed(), 0u) << report.summary();
  EXPECT_TRUE(report.all_ok()) << report.summary();
  EXPECT_EQ(lbd().count_log("cannot see whether"), 0u) << lbd().log();
}

TEST_F(ExecBpf, RoundRobinSpreadsNewConnectionsEvenlyAndScaleAddsAProgram) {
  ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "bpf", "--policy", "rr", "-i", "2", "--wait-ready"},
                                        {SOCKET_ACTIVATED_SERVER_PATH}));
  std::map<int, int> per_worker;
  for (int i = 0; i < 100; i++) per_worker[fetch(address(), http_get("/", true), after(5s)).worker()]++;
  EXPECT_EQ(per_worker, (std::map<int, int>{{0, 50}, {1, 50}}));

  // A third program joins the rotation.
  CommandResult scale = lbctl({"scale", "3"});
  ASSERT_TRUE(scale.exited(0)) << scale.describe();
  ASSERT_EQ(serving_pids().size(), 3u);
  per_worker.clear();
  for (int i = 0; i < 99; i++) per_worker[fetch(address(), http_get("/", true), after(5s)).worker()]++;
  EXPECT_EQ(per_worker, (std::map<int, int>{{0, 33}, {1, 33}, {2, 33}}));
}

TEST_F(ExecBpf, LeastStopsChoosingAStoppedProgram) {
  ASSERT_NO_FATAL_FAILURE(start_two_programs_under_least());
  const auto pids = serving_pids();

  ASSERT_TRUE(stop_process(pids.at(1), after(5s)));
  // A connection steered to the stopped program waits in its queue. lbd sees that queue stand
  // still, the program's heartbeat goes stale after --stale-after (50 ms), and from then on every
  // new connection goes to worker 0. Clients keep coming; at most a few may be caught before that.
  const auto stopped_at = Clock::now();
  std::atomic<unsigned> answered_by_0{0}, other{0};
  for (int i = 0; i < 200; i++) {
    HttpResult r = fetch(address(), http_get("/", true), after(300ms));
    if (r.ok() && r.worker() == 0) {
      answered_by_0++;
    } else {
      other++;
    }
  }
  const auto took = Clock::now() - stopped_at;
  const json s = status();
  kill(pids.at(1), SIGCONT);
  std::cout << "least with worker 1 stopped: " << answered_by_0 << " of 200 answered by worker 0, " << other
            << " caught by the stopped one, in " << std::chrono::duration<double>(took).count() << " s\n";
  EXPECT_LE(other.load(), 3u) << s.dump(2);
  EXPECT_GE(answered_by_0.load(), 197u);

  // Running again, it is chosen again.
  EXPECT_TRUE(eventually(after(10s), [&] { return fetch(address(), http_get("/", true), after(2s)).worker() == 1; }, 1ms));
}

// While nothing happens the supervisor looks at the programs less often (half of
// --stale-after), and it knows at once when one is stopped by a signal (the kernel tells the
// parent): from the first connection after a SIGSTOP, `least` sends nothing to it
// (docs/ARCHITECTURE.md, section 5).
TEST_F(ExecBpf, LeastSkipsAProgramStoppedWhileIdleFromTheFirstConnection) {
  ASSERT_NO_FATAL_FAILURE(start_two_programs_under_least());
  const auto pids = serving_pids();
  // Idle: a look has counted everything steered so far as taken, and nothing moves.
  ASSERT_TRUE(eventually(after(5s), [&] {
    const json s = status();
    for (unsigned slot : {0u, 1u}) {
      const json row = rows_of(s, slot).at(0);
      if (row.value("accepted", uint64_t{0}) != row.value("steered", uint64_t{1})) return false;
    }
    return true;
  }, 10ms));

  const size_t from_line = lbd().log_lines();
  ASSERT_TRUE(stop_process(pids.at(1), after(5s)));
  const auto stopped_at = Clock::now();
  const auto noticed = lbd().wait_for_log("worker 1: pid " + std::to_string(pids.at(1)) + " stopped", after(5s),
                                          from_line);
  const auto took = Clock::now() - stopped_at;
  ASSERT_TRUE(noticed) << lbd().log();
  std::cout << "a program stopped while idle: seen stopped in " << std::chrono::duration<double>(took).count()
            << " s\n";
  EXPECT_LT(took, 100ms) << "the supervisor took " << std::chrono::duration<double>(took).count()
                         << " s to see the stop";
  unsigned answered_by_0 = 0;
  for (int i = 0; i < 20; i++) {
    HttpResult r = fetch(address(), http_get("/", true), after(300ms));
    if (r.ok() && r.worker() == 0) answered_by_0++;
  }
  const json s = status();
  kill(pids.at(1), SIGCONT);
  EXPECT_EQ(answered_by_0, 20u) << s.dump(2);

  // Continued, it is chosen again.
  EXPECT_TRUE(lbd().wait_for_log("worker 1: pid " + std::to_string(pids.at(1)) + " continued", after(5s), from_line));
  EXPECT_TRUE(eventually(after(10s), [&] { return fetch(address(), http_get("/", true), after(2s)).worker() == 1; }, 1ms));
}

TEST_F(ExecBpf, DrainingAStoppedProgramMovesItsQueueToTheOthersAtOnce) {
  ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "bpf", "--policy", "rr", "-i", "2", "--wait-ready",
                                         "--kill-timeout", "30"},
                                        {SOCKET_ACTIVATED_SERVER_PATH}));
  const auto pids = serving_pids();
  ASSERT_EQ(pids.size(), 2u);
  ASSERT_TRUE(stop_process(pids.at(1), after(5s)));
  // rr sends every other connection to the stopped program: they wait in its queue.
  LoadOptions options;
  options.threads = 8;
  options.request_timeout = 20s;
  LoadGenerator load(bounded(options, kLoadBound));
  // Clients soon wait on connections queued at the stopped program.
  ASSERT_TRUE(eventually(after(10s), [&] { return rows_of(status(), 1).at(0).value("steered", 0) >= 4; }, 10ms));
  // Draining it must not wait for it to close its listener (it never will, stopped): the queue
  // moves to worker 0 now, and no request fails.
  CommandResult drain = lbctl({"drain", "1"});
  ASSERT_TRUE(drain.exited(0)) << drain.describe();
  const uint64_t at_drain = load.completed();
  EXPECT_TRUE(wait_for_requests(load, 200, after(5s))) << "requests stalled after the drain";
  LoadReport report = load.stop();
  kill(pids.at(1), SIGCONT);
  EXPECT_EQ(report.failed(), 0u) << report.summary();
  EXPECT_GT(report.total(), at_drain);
}

TEST_F(ExecBpf, MaxMemoryReplacesAGrowingProgramWithoutFailingARequest) {
  ASSERT_NO_FATAL_FAILURE(start_program(
      {"--mode", "bpf", "--policy", "rr", "-i", "2", "--wait-ready", "--max-memory", "96M", "--kill-timeout", "5"},
      {SOCKET_ACTIVATED_SERVER_PATH}));
  const auto before = serving_pids();
  LoadOptions options;
  options.threads = 2;
  LoadGenerator load(bounded(options, kLoadBound));
  ASSERT_TRUE(wait_for_requests(load, 200, after(5s)));

  // One worker grows past the limit: whichever the kernel steers this request to.
  HttpResult grow = fetch(address(), http_get("/grow?mb=128", true), after(5s));
  ASSERT_TRUE(grow.ok()) << grow.describe();
  const unsigned grown = static_cast<unsigned>(grow.worker());
  const unsigned other = 1 - grown;
  // A new worker starts in its slot and serves; then the old one drains and exits.
  const std::string old_pid = std::to_string(before.at(grown));
  ASSERT_TRUE(lbd().wait_for_log("worker " + std::to_string(grown) + " \\(pid " + old_pid +
                                     "\\) uses [0-9]+ MiB, over --max-memory 96 MiB; replacing it",
                                 after(10s)))
      << lbd().log();
  EXPECT_TRUE(lbd().wait_for_log("\\(pid " + old_pid + "\\) exited with status 0", after(15s))) << lbd().log();
  const auto after_growth = serving_pids();
  ASSERT_EQ(after_growth.size(), 2u);
  EXPECT_NE(after_growth.at(grown), before.at(grown));
  EXPECT_EQ(after_growth.at(other), before.at(other)) << "only the worker that grew is replaced";
  EXPECT_EQ(status()["lbd"].value("memory_replacements", -1), 1);
  EXPECT_TRUE(wait_for_requests(load, 200, after(5s)));
  LoadReport report = load.stop();
  EXPECT_EQ(report.failed(), 0u) << report.summary();
}

}  // namespace
}  // namespace lbd::test
