// Rolling reload in --mode bpf (docs/ARCHITECTURE.md, invariants 1 and 3): every worker is replaced
// by a freshly executed one, slot by slot, and clients do not notice — neither a client that
// opens a new connection per request nor keep-alive clients that never retry. A new worker that
// exits or never gets ready leaves the old one serving, and lbctl says so.
#include <gtest/gtest.h>

#include <cstdio>
#include <iostream>
#include <set>
#include <thread>
#include <tuple>

#include "support/control_test.h"

namespace lbd::test {
namespace {

using nlohmann::json;

// One "slot N: starting pid P to replace pid Q" progress line of lbctl reload.
struct Replacement {
  unsigned slot = 0;
  pid_t new_pid = 0;
  pid_t old_pid = 0;
};

std::vector<Replacement> replacements(const CommandResult& reload) {
  std::vector<Replacement> out;
  for (const auto& line : reload.out_lines()) {
    Replacement r;
    if (sscanf(line.c_str(), "slot %u: starting pid %d to replace pid %d", &r.slot, &r.new_pid, &r.old_pid) == 3) {
      out.push_back(r);
    }
  }
  return out;
}

// An upper bound on every load here (10 reloads take 3-5 s, and about 10 s under ASan).
constexpr auto kLoadBound = 30s;

std::string exited_line(pid_t pid) { return "\\(pid " + std::to_string(pid) + "\\) exited with status 0"; }

class Reload : public ControlTest {
 protected:
  void SetUp() override { LBD_REQUIRE_ROOT("--mode bpf loads the steering program"); }

  void start_bpf(unsigned workers, std::string binary = LBD_BINARY_PATH) {
    start_controlled(lbd_flags("bpf", workers, {"--shutdown-timeout", "5"}), std::move(binary));
  }

  // Ten `lbctl reload` in a row while `options` load runs: each replaces every worker (the pid
  // it replaces is the one the previous reload started), and no request fails.
  void ten_reloads_under_load(LoadOptions options, const std::string& what, LoadReport* out = nullptr) {
    ASSERT_NO_FATAL_FAILURE(start_bpf(2));
    std::map<unsigned, pid_t> current = serving_pids();
    ASSERT_EQ(current.size(), 2u);
    const auto first = current;

    const auto load_started = Clock::now();
    LoadGenerator load(bounded(options, kLoadBound));
    ASSERT_TRUE(wait_for_requests(load, 200, after(5s))) << "the load did not get going";
    const uint64_t before_reloads = load.completed();
    std::vector<pid_t> retired;
    const auto reloads_started = Clock::now();
    for (int i = 1; i <= 10; i++) {
      CommandResult r = lbctl({"reload"});
      ASSERT_TRUE(r.exited(0)) << "reload " << i << ": " << r.describe();
      const auto replaced = replacements(r);
      ASSERT_EQ(replaced.size(), 2u) << "reload " << i << ": " << r.out;
      std::set<unsigned> slots;
      for (const auto& [slot, new_pid, old_pid] : replaced) {
        EXPECT_EQ(old_pid, current[slot]) << "reload " << i << " replaced another pid in slot " << slot;
        slots.insert(slot);
        retired.push_back(old_pid);
        current[slot] = new_pid;
      }
      EXPECT_EQ(slots, (std::set<unsigned>{0, 1})) << r.out;
      EXPECT_TRUE(r.out_lines().back().starts_with("reload done: 2 slot(s) in ")) << r.out;
    }
    const auto reload_time = Clock::now() - reloads_started;
    const uint64_t during_reloads = load.completed() - before_reloads;
    EXPECT_LT(Clock::now() - load_started, kLoadBound - 1s) << "the reloads outlasted the load's time bound";
    EXPECT_TRUE(wait_for_requests(load, 500, after(5s))) << "the load stalled after the reloads";
    LoadReport report = load.stop();

    // Every worker was replaced: the last reload's pids serve, none of the first ones does, and
    // every replaced worker drained and exited cleanly.
    EXPECT_EQ(serving_pids(), current);
    for (auto [slot, pid] : first) EXPECT_NE(current[slot], pid) << "slot " << slot << " was never replaced";
    const Deadline exits = after(10s);
    for (pid_t pid : retired) EXPECT_TRUE(lbd().wait_for_log(exited_line(pid), exits)) << "pid " << pid << " did not exit cleanly";
    EXPECT_EQ(status()["lbd"].value("reloads", -1), 10);
    EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u);

    const double seconds = std::chrono::duration<double>(reload_time).count();
    std::cout << what << ": 10 reloads of 2 workers in " << seconds << " s, " << during_reloads
              << " requests completed meanwhile; " << report.summary() << "\n";
    RecordProperty("load", report.summary());
    EXPECT_EQ(report.failed(), 0u) << report.summary();
    EXPECT_TRUE(report.all_ok()) << report.summary();
    EXPECT_GT(report.worker_count(0), 0u) << report.summary();
    EXPECT_GT(report.worker_count(1), 0u) << report.summary();
    if (out) *out = report;
  }
};

TEST_F(Reload, TenReloadsUnderNewConnectionLoadFailNothing) {
  LoadOptions options;
  options.threads = 4;  // each a new connection per request, as fast as it can
  ten_reloads_under_load(options, "new connection per request");
}

// README: a reload passes the old worker's idle keep-alive connections, still open, to the new
// worker; only a request already on its way to the old worker is answered by it, with
// "Connection: close". So every connection an old worker held when it began draining ("draining
// (handover): N connections open") was either handed over ("drained: R requests served, H idle
// connections handed over") or answered with "Connection: close", and the clients saw no other
// close: N - H summed over the 20 drains is exactly the closes they counted. (lbd shuts the old
// listener before it tells the worker to drain, so nothing is accepted after the N was counted.)
TEST_F(Reload, TenReloadsUnder64KeepAliveConnectionsFailNothing) {
  LoadOptions options;
  options.keep_alive = true;
  options.threads = 64;
  options.request = http_get("/");
  LoadReport report;
  ASSERT_NO_FATAL_FAILURE(ten_reloads_under_load(options, "64 keep-alive connections", &report));
  uint64_t held = 0, handed_over = 0;
  unsigned handover_drains = 0;
  for (const auto& line : lbd().lines()) {
    unsigned long long open = 0, requests = 0, idle = 0;
    if (const auto at = line.find("draining (handover): "); at != std::string::npos &&
        sscanf(line.c_str() + at, "draining (handover): %llu connections open", &open) == 1) {
      handover_drains++;
      held += open;
    }
    if (const auto at = line.find("drained: "); at != std::string::npos &&
        sscanf(line.c_str() + at, "drained: %llu requests served, %llu idle", &requests, &idle) == 2) {
      handed_over += idle;
    }
  }
  std::cout << held << " keep-alive connections held by the 20 old workers as they drained: " << handed_over
            << " handed to new workers idle, " << report.server_closes << " answered with Connection: close\n";
  EXPECT_EQ(handover_drains, 20u) << "each old worker drains by handing its connections over";
  EXPECT_GT(handed_over, 0u) << "no idle connection was handed over";
  EXPECT_EQ(held - handed_over, report.server_closes)
      << "connections the old workers did not hand over, against the closes the clients saw: " << report.summary();
}

// --parallel 2 on four workers, under both kinds of client at once: two slots are mid-swap at
// any moment, and still nothing fails.
TEST_F(Reload, ParallelReloadsUnderLoadFailNothing) {
  ASSERT_NO_FATAL_FAILURE(start_bpf(4));
  const auto before = serving_pids();
  ASSERT_EQ(before.size(), 4u);
  LoadOptions fresh;
  fresh.threads = 4;
  LoadOptions kept;
  kept.keep_alive = true;
  kept.threads = 16;
  kept.request = http_get("/");
  LoadGenerator new_connections(bounded(fresh, kLoadBound));
  LoadGenerator keep_alive(bounded(kept, kLoadBound));
  ASSERT_TRUE(wait_for_requests(new_connections, 200, after(5s)));
  ASSERT_TRUE(wait_for_requests(keep_alive, 200, after(5s)));

  for (int i = 1; i <= 3; i++) {
    CommandResult r = lbctl({"reload", "--parallel", "2"});
    ASSERT_TRUE(r.exited(0)) << "reload " << i << ": " << r.describe();
    EXPECT_EQ(replacements(r).size(), 4u) << r.out;
  }
  EXPECT_TRUE(wait_for_requests(new_connections, 500, after(5s)));
  LoadReport report = new_connections.stop();
  LoadReport kept_report = keep_alive.stop();
  const auto now = serving_pids();
  ASSERT_EQ(now.size(), 4u);
  for (unsigned slot = 0; slot < 4; slot++) EXPECT_NE(now.at(slot), before.at(slot)) << "slot " << slot;

  std::cout << "3 reloads --parallel 2 of 4 workers\n  new connection per request: " << report.summary()
            << "\n  16 keep-alive connections: " << kept_report.summary() << "\n";
  EXPECT_TRUE(report.all_ok()) << report.summary();
  EXPECT_EQ(report.failed(), 0u) << report.summary();
  EXPECT_TRUE(kept_report.all_ok()) << kept_report.summary();
  EXPECT_EQ(kept_report.failed(), 0u) << kept_report.summary();
}

// An idle keep-alive connection outlives the worker that accepted it: the old worker hands it to
// its successor, which answers the next request on it as if nothing happened.
TEST_F(Reload, IdleKeepAliveConnectionsAreHandedToTheNewWorkers) {
  ASSERT_NO_FATAL_FAILURE(start_bpf(2));
  const auto before = serving_pids();
  std::vector<HttpConnection> idle;
  std::vector<int> slot_of;
  for (int i = 0; i < 8; i++) {
    idle.push_back(HttpConnection::open(address(), after(2s)));
    HttpResult r = idle.back().request(http_get("/"), after(2s));
    ASSERT_EQ(r.status(), 200) << r.describe();
    ASSERT_FALSE(r.response.closes());
    slot_of.push_back(r.worker());
  }

  CommandResult r = lbctl({"reload"});
  ASSERT_TRUE(r.exited(0)) << r.describe();
  // Both old workers exit once their idle connections are handed over.
  for (auto [slot, pid] : before) ASSERT_TRUE(lbd().wait_for_log(exited_line(pid), after(5s))) << "pid " << pid;
  EXPECT_EQ(lbd().count_log(R"(drained: [0-9]+ requests served, [0-9]+ idle connections handed over)"), 2u)
      << "each old worker should hand its idle connections over";

  for (size_t i = 0; i < idle.size(); i++) {
    for (int round = 0; round < 2; round++) {
      HttpResult answer = idle[i].request(http_get("/"), after(2s));
      ASSERT_EQ(answer.status(), 200) << "connection " << i << ", request " << round << ": " << answer.describe();
      EXPECT_EQ(answer.worker(), slot_of[i]) << "a handed-over connection stays in its slot";
      EXPECT_FALSE(answer.response.closes()) << "the new worker keeps the connection alive";
    }
  }
}

// A request that is half-way in when the old worker starts its handover: the worker must either
// answer it itself or pass the connection on; either way the client gets its answer. (A
// regression: the old worker once stopped reading such a connection and reset it at the drain
// deadline.) The old worker is stopped while the reload swaps it out, so the partial request is
// waiting for it when it resumes and finds the DRAIN command.
TEST_F(Reload, RequestHalfSentDuringTheHandoverIsAnswered) {
  ASSERT_NO_FATAL_FAILURE(start_bpf(1));
  HttpConnection c = HttpConnection::open(address(), after(2s));
  ASSERT_EQ(c.request(http_get("/"), after(2s)).status(), 200);
  const pid_t old = serving_pids().at(0);
  ASSERT_TRUE(stop_process(old, after(2s)));

  CommandResult r = lbctl({"reload"});
  ASSERT_TRUE(r.exited(0)) << r.describe();
  ASSERT_EQ(c.send("GET / HTTP/1.1\r\nHost: lbd\r\n", after(2s)), Outcome::kOk);
  ASSERT_EQ(kill(old, SIGCONT), 0);
  ASSERT_TRUE(lbd().wait_for_log(R"(draining \(handover\))", after(5s)));
  ASSERT_EQ(c.send("\r\n", after(2s)), Outcome::kOk);

  HttpResult answer = c.read_response(after(3s));
  ASSERT_TRUE(answer.ok()) << answer.describe();
  EXPECT_EQ(answer.status(), 200);
  EXPECT_TRUE(lbd().wait_for_log(exited_line(old), after(8s))) << "the old worker finishes and exits";
}

// The binary on disk is replaced by one that exits at once: the reload fails on the first slot,
// says why, and the old workers never stop serving.
TEST_F(Reload, NewWorkerThatExitsLeavesTheOldOnesServing) {
  const std::string binary = dir_.path("lbd");
  copy_executable(LBD_BINARY_PATH, binary);
  ASSERT_NO_FATAL_FAILURE(start_bpf(2, binary));
  const auto before = serving_pids();
  ASSERT_EQ(before.size(), 2u);

  LoadOptions options;
  options.threads = 4;
  LoadGenerator load(bounded(options, kLoadBound));
  ASSERT_TRUE(wait_for_requests(load, 200, after(5s)));

  replace_executable_with_text(binary, "#!/bin/sh\nexit 1\n");
  CommandResult r = lbctl({"reload", "--timeout", "10"});
  EXPECT_TRUE(r.exited(1)) << r.describe();
  unsigned slot = 99;
  pid_t new_pid = 0, kept = 0;
  int exit_code = -1;
  ASSERT_EQ(sscanf(r.err.c_str(),
                   "lbctl: reload failed: slot %u: new worker pid %d exited with status %d before it was ready; "
                   "pid %d keeps serving",
                   &slot, &new_pid, &exit_code, &kept),
            4)
      << r.describe();
  EXPECT_EQ(r.err, "lbctl: reload failed: slot " + std::to_string(slot) + ": new worker pid " +
                       std::to_string(new_pid) + " exited with status 1 before it was ready; pid " +
                       std::to_string(before.at(slot)) + " keeps serving\n");

  // The same workers serve, nothing is left half-replaced, and the reload did not count.
  const json after_failure = status();
  EXPECT_EQ(serving_pids(), before);
  for (unsigned s = 0; s < 2; s++) EXPECT_EQ(states_of(after_failure, s), "active") << after_failure.dump(2);
  EXPECT_EQ(after_failure["lbd"].value("reloads", -1), 0);
  EXPECT_TRUE(after_failure["lbd"]["operation"].is_null());
  EXPECT_TRUE(wait_for_requests(load, 500, after(5s)));
  LoadReport report = load.stop();
  EXPECT_TRUE(report.all_ok()) << report.summary();
  EXPECT_EQ(report.failed(), 0u) << report.summary();
  EXPECT_GT(report.worker_count(0), 0u) << report.summary();
  EXPECT_GT(report.worker_count(1), 0u) << report.summary();

  // A good binary again: the next reload works (the failure left nothing stuck).
  replace_executable_with_file(binary, LBD_BINARY_PATH);
  CommandResult retry = lbctl({"reload"});
  ASSERT_TRUE(retry.exited(0)) << retry.describe();
  const auto now = serving_pids();
  ASSERT_EQ(now.size(), 2u);
  EXPECT_NE(now.at(0), before.at(0));
  EXPECT_NE(now.at(1), before.at(1));
}

// A new worker that never reports ready: the reload is busy meanwhile (status shows the slot's
// two workers, other operations are refused), then times out and fails; the old worker serves
// throughout and no connection ever reaches the one that is not ready.
TEST_F(Reload, NewWorkerThatNeverGetsReadyTimesOut) {
  const std::string binary = dir_.path("lbd");
  copy_executable(LBD_BINARY_PATH, binary);
  ASSERT_NO_FATAL_FAILURE(start_bpf(2, binary));
  const auto before = serving_pids();
  ASSERT_EQ(before.size(), 2u);

  LoadOptions options;
  options.threads = 4;
  LoadGenerator load(bounded(options, kLoadBound));
  ASSERT_TRUE(wait_for_requests(load, 200, after(5s)));

  // It holds its listener and status channel but never says READY=1.
  replace_executable_with_text(binary, "#!/bin/sh\nexec sleep 60\n");
  CommandResult reload;
  const auto reload_started = Clock::now();
  std::thread reloader([&] { reload = lbctl({"reload", "--timeout", "2"}, after(20s)); });

  json busy_status;
  const bool replacing = eventually(after(5s), [&] {
    busy_status = status();
    return busy_status["lbd"].value("operation", json()) == "reload" &&
           states_of(busy_status, 0) == "active,starting";
  }, 20ms);
  EXPECT_TRUE(replacing) << "status does not show slot 0 being replaced: " << busy_status.dump(2);
  CommandResult second = lbctl({"reload"}, after(10s));
  EXPECT_TRUE(second.exited(1)) << second.describe();
  EXPECT_EQ(second.err, "lbctl: busy: a reload is in progress\n");
  CommandResult scale = lbctl({"scale", "3"}, after(10s));
  EXPECT_EQ(scale.err, "lbctl: busy: a reload is in progress\n") << scale.describe();

  reloader.join();
  const auto reload_took = Clock::now() - reload_started;
  EXPECT_TRUE(reload.exited(1)) << reload.describe();
  EXPECT_TRUE(reload.err.starts_with("lbctl: reload failed: slot 0: new worker pid ")) << reload.describe();
  EXPECT_TRUE(reload.err.ends_with("pid " + std::to_string(before.at(0)) + " keeps serving\n")) << reload.describe();
  EXPECT_GE(reload_took, 2s);
  EXPECT_LT(reload_took, 8s);

  EXPECT_EQ(serving_pids(), before);
  EXPECT_TRUE(wait_for_requests(load, 500, after(5s)));
  LoadReport report = load.stop();
  EXPECT_TRUE(report.all_ok()) << report.summary();
  EXPECT_EQ(report.failed(), 0u) << report.summary();
}

}  // namespace
}  // namespace lbd::test
