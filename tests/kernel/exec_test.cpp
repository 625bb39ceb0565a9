// Exec mode: `lbd run -- PROGRAM` runs programs that know nothing of lbd, the way
// systemd socket activation would, in --mode reuseport (no root). The steering, zero-failure
// reloads and --max-memory under load need the BPF program: tests/root/exec_bpf_test.cpp.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <regex>
#include <set>

#include "support/exec_test.h"

namespace lbd::test {
namespace {

using nlohmann::json;

// Fetches on new connections until every one of `workers` has answered (the kernel's hash picks
// a worker per connection); false at the deadline.
bool every_worker_answers(const net::Address& address, unsigned workers, const std::string& body_prefix,
                          std::string& last, Deadline deadline) {
  std::set<int> seen;
  return eventually(deadline, [&] {
    HttpResult r = fetch(address, http_get("/", true), after(5s));
    last = r.describe() + " " + r.response.body;
    if (!r.ok() || r.status() != 200 || !r.response.body.starts_with(body_prefix)) return false;
    seen.insert(r.worker());
    return seen.size() == workers;
  }, 1ms);
}

class Exec : public ExecTest {};

TEST_F(Exec, ASocketActivatedServerRunsUnchangedOnEveryWorker) {
  ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "reuseport", "-i", "2", "--wait-ready"},
                                        {SOCKET_ACTIVATED_SERVER_PATH}));
  std::string last;
  EXPECT_TRUE(every_worker_answers(address(), 2, "hello from worker ", last, after(10s))) << last;

  json s = status();
  EXPECT_EQ(s["lbd"].value("app", ""), "app");
  EXPECT_EQ(s["lbd"]["command"], json::array({SOCKET_ACTIVATED_SERVER_PATH}));
  const auto pids = serving_pids();
  ASSERT_EQ(pids.size(), 2u) << s.dump(2);
  for (const auto& w : s["workers"]) EXPECT_GT(w.value("rss_bytes", 0), 0) << w.dump();

  // Its stdout went into the app's log, stamped with the worker: "<time> app 1 out worker 1 ...".
  EXPECT_TRUE(eventually(after(5s), [&] {
    return count_records(" app 0 out worker 0 (pid " + std::to_string(pids.at(0)) + ") serving on fd 3") == 1 &&
           count_records(" app 1 out worker 1 (pid " + std::to_string(pids.at(1)) + ") serving on fd 3") == 1;
  })) << testing::PrintToString(log_records());
  EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u) << lbd().log();
}

TEST_F(Exec, EachWorkerGetsItsListenerAsFd3WithTheSystemdVariables) {
  // The shell reports what it was given, then stays (a worker that exits would be restarted).
  const std::string report =
      R"sh(echo "fds=$LISTEN_FDS pid=$LISTEN_PID self=$$ names=$LISTEN_FDNAMES id=$LB_WORKER_ID of=$LB_WORKERS )sh"
      R"sh(notify=${NOTIFY_SOCKET:+set} fd3=$(readlink /proc/$$/fd/3) fd0=$(readlink /proc/$$/fd/0)"; exec sleep 600)sh";
  ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "reuseport", "-i", "2", "--ready-delay", "0.1"},
                                        {"/bin/sh", "-c", report}));
  const auto pids = serving_pids();
  ASSERT_EQ(pids.size(), 2u);
  for (unsigned slot = 0; slot < 2; slot++) {
    const std::string pid = std::to_string(pids.at(slot));
    const std::string expected = " app " + std::to_string(slot) + " out fds=1 pid=" + pid + " self=" + pid +
                                 " names=app id=" + std::to_string(slot) + " of=2 notify=set fd3=socket:[";
    EXPECT_TRUE(eventually(after(5s), [&] { return count_records(expected) == 1; }))
        << expected << "\n" << testing::PrintToString(log_records());
    EXPECT_EQ(count_records(" app " + std::to_string(slot) + " out fds=1") , 1u);
  }
  EXPECT_EQ(count_records("fd0=/dev/null"), 2u) << testing::PrintToString(log_records());
}

TEST_F(Exec, AProgramThatExitsAtOnceIsReportedAndNotRestartedInATightLoop) {
  LbdProcess lbd_run(run_args({"--mode", "reuseport", "-i", "1", "--max-restarts", "3"}, {"/bin/false"},
                              socket_path(), log_dir()));
  EXPECT_EQ(lbd_run.wait_exit(after(20s)), ExitStatus::exited(1)) << lbd_run.log();
  // Each restart waits longer than the one before; then lbd gives up and says so.
  std::vector<int> delays;
  static const std::regex kRestarting(R"(restarting in ([0-9]+) ms)");
  for (const auto& line : lbd_run.lines()) {
    std::smatch m;
    if (std::regex_search(line, m, kRestarting)) delays.push_back(std::stoi(m[1]));
  }
  ASSERT_GE(delays.size(), 2u) << lbd_run.log();
  EXPECT_LE(delays.size(), 3u) << lbd_run.log();
  for (size_t i = 1; i < delays.size(); i++) EXPECT_GT(delays[i], delays[i - 1]) << lbd_run.log();
  EXPECT_EQ(lbd_run.count_log("exited with status 1.*not restarting it"), 1u) << lbd_run.log();
  EXPECT_EQ(lbd_run.count_log("every worker has failed; lbd is exiting"), 1u) << lbd_run.log();
  // The app's log says it too, line by line.
  EXPECT_GE(count_records(" app 0 lbd pid "), delays.size() + 1) << testing::PrintToString(log_records());
}

TEST_F(Exec, AProgramOverMaxMemoryFromTheStartIsNotReplacedInATightLoop) {
  // Every process of this program is over 1 MiB as soon as it starts: each replacement is over
  // the limit too. lbd replaces it, but waits longer each time (2 s, 4 s, 8 s ...) and says why.
  ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "reuseport", "-i", "1", "--wait-ready", "--max-memory", "1M"},
                                        {SOCKET_ACTIVATED_SERVER_PATH}));
  ASSERT_TRUE(lbd().wait_for_log("3 replacements in 10 min; next look in 8 s", after(30s))) << lbd().log();
  std::vector<int> quiet_s;
  static const std::regex kNextLook(R"(replacements in 10 min; next look in ([0-9]+) s: is the limit below)");
  for (const auto& line : lbd().lines()) {
    std::smatch m;
    if (std::regex_search(line, m, kNextLook)) quiet_s.push_back(std::stoi(m[1]));
  }
  EXPECT_EQ(quiet_s, (std::vector<int>{4, 8})) << lbd().log();
  EXPECT_EQ(lbd().count_log("over --max-memory 1 MiB.*replacing it"), 3u) << lbd().log();
  std::string last;
  EXPECT_TRUE(every_worker_answers(address(), 1, "hello from worker ", last, after(10s))) << last;
}

TEST_F(Exec, AProgramThatDoesNotExistIsOneClearLine) {
  LbdProcess lbd_run(run_args({"--mode", "reuseport", "-i", "2"}, {"/nonexistent/server"}, socket_path(), log_dir()));
  EXPECT_EQ(lbd_run.wait_exit(after(10s)), ExitStatus::exited(1)) << lbd_run.log();
  EXPECT_EQ(lbd_run.count_log("error +\\[lbd app\\] cannot execute /nonexistent/server: No such file or directory$"), 1u)
      << lbd_run.log();
  EXPECT_EQ(lbd_run.count_log("ready"), 0u) << lbd_run.log();
}

TEST_F(Exec, ReloadRunsTheProgramOnDiskNow) {
  // A deploy replaces the file; a reload starts what is there now.
  const std::string script = dir_.path("server.sh");
  auto write_version = [&](int version) {
    const std::string next = script + ".new";
    std::ofstream(next) << "#!/bin/sh\necho \"version " << version << "\"\nexec " << SOCKET_ACTIVATED_SERVER_PATH << "\n";
    chmod(next.c_str(), 0755);
    ASSERT_EQ(rename(next.c_str(), script.c_str()), 0);
  };
  ASSERT_NO_FATAL_FAILURE(write_version(1));
  ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "reuseport", "-i", "2", "--wait-ready"}, {script}));
  const auto before = serving_pids();
  ASSERT_NO_FATAL_FAILURE(write_version(2));

  CommandResult r = lbctl({"reload"});
  ASSERT_TRUE(r.exited(0)) << r.describe();
  const auto after_reload = serving_pids();
  ASSERT_EQ(after_reload.size(), 2u);
  for (unsigned slot = 0; slot < 2; slot++) EXPECT_NE(after_reload.at(slot), before.at(slot));
  EXPECT_TRUE(eventually(after(5s), [&] { return count_records(" out version 2") == 2; }))
      << testing::PrintToString(log_records());
  EXPECT_EQ(count_records(" out version 1"), 2u);
  // The old ones were told to stop and did, on their own (SIGTERM, no SIGKILL).
  for (unsigned slot = 0; slot < 2; slot++) {
    EXPECT_TRUE(lbd().wait_for_log("\\(pid " + std::to_string(before.at(slot)) + "\\) exited with status 0", after(10s)))
        << lbd().log();
  }
  std::string last;
  EXPECT_TRUE(every_worker_answers(address(), 2, "hello from worker ", last, after(10s))) << last;
}

TEST_F(Exec, DrainStopsAProgramWorkerAndUndrainStartsANewOne) {
  ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "reuseport", "-i", "2", "--wait-ready"},
                                        {SOCKET_ACTIVATED_SERVER_PATH}));
  const auto before = serving_pids();
  CommandResult drain = lbctl({"drain", "1", "--wait"});
  ASSERT_TRUE(drain.exited(0)) << drain.describe();
  EXPECT_EQ(states_of(status(), 1), "drained");
  EXPECT_EQ(count_records(" app 1 out worker 1: stopped"), 1u) << testing::PrintToString(log_records());
  EXPECT_EQ(process_state(before.at(1)), 0) << "the drained worker is gone";

  CommandResult undrain = lbctl({"undrain", "1"});
  ASSERT_TRUE(undrain.exited(0)) << undrain.describe();
  const auto after_undrain = serving_pids();
  ASSERT_EQ(after_undrain.size(), 2u);
  EXPECT_EQ(after_undrain.at(0), before.at(0));
  EXPECT_NE(after_undrain.at(1), before.at(1));
}

TEST_F(Exec, TwoWorkersWritingConcurrentlyGiveWholeLinesInTheLog) {
  // Each child writes 100,000 numbered lines as fast as it can, then stays.
  ASSERT_NO_FATAL_FAILURE(start_program(
      {"--mode", "reuseport", "-i", "2", "--ready-delay", "0.1", "--log-max-size", "1G"},
      {"/bin/sh", "-c", R"(seq -f "w$LB_WORKER_ID-%.0f" 1 100000; exec sleep 600)"}));
  std::vector<std::string> records;
  auto out_records = [&] {
    records = log_records();
    size_t n = 0;
    for (const auto& r : records) n += r.find(" out w") != std::string::npos ? 1 : 0;
    return n;
  };
  ASSERT_TRUE(eventually(after(60s), [&] { return out_records() >= 200'000; }, 20ms)) << out_records();
  EXPECT_EQ(out_records(), 200'000u);
  // "<time> app <worker> out w<worker>-<n>": whole, from the right worker, in order.
  static const std::regex kRecord(R"(^\S+ app ([01]) out w([01])-([0-9]+)$)");
  uint64_t next[2] = {1, 1};
  size_t bad = 0;
  for (const auto& r : records) {
    if (r.find(" out w") == std::string::npos) continue;
    std::smatch m;
    if (!std::regex_match(r, m, kRecord) || m[1] != m[2]) {
      if (bad++ < 5) ADD_FAILURE() << "not a whole record: " << r;
      continue;
    }
    const int worker = std::stoi(m[1]);
    if (std::stoull(m[3]) != next[worker] && bad++ < 5) ADD_FAILURE() << "out of order: " << r;
    next[worker] = std::stoull(m[3]) + 1;
  }
  EXPECT_EQ(bad, 0u);
  EXPECT_EQ(next[0], 100'001u);
  EXPECT_EQ(next[1], 100'001u);
  EXPECT_EQ(status()["lbd"].value("log_dropped_lines", -1), 0);
}

TEST_F(Exec, GunicornRunsUnchanged) {
  if (!on_path("gunicorn")) GTEST_SKIP() << "needs gunicorn (apt install gunicorn)";
  // gunicorn takes its listener from LISTEN_FDS and says READY=1 itself.
  ASSERT_NO_FATAL_FAILURE(start_program(
      {"--mode", "reuseport", "-i", "2", "--wait-ready"},
      {"gunicorn", "--workers", "2", "--chdir", FIXTURES_DIR, "wsgi_hello:app"}));
  std::string last;
  EXPECT_TRUE(every_worker_answers(address(), 2, "hello from gunicorn worker ", last, after(10s))) << last;
  // Its memory is the whole tree's: the master and its two workers.
  const json s = status();
  for (const auto& w : s["workers"]) {
    EXPECT_GT(w.value("rss_bytes", uint64_t{0}), process_rss_bytes(w.value("pid", 0))) << w.dump();
  }
  CommandResult r = lbctl({"reload"});
  EXPECT_TRUE(r.exited(0)) << r.describe();
  EXPECT_TRUE(every_worker_answers(address(), 2, "hello from gunicorn worker ", last, after(10s))) << last;
  EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u) << lbd().log();
}

TEST_F(Exec, NodeRunsUnchangedListeningOnFd3) {
  if (!on_path("node")) GTEST_SKIP() << "needs Node.js";
  ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "reuseport", "-i", "2"},
                                        {"node", std::string(FIXTURES_DIR) + "/node_hello.js"}));
  std::string last;
  EXPECT_TRUE(every_worker_answers(address(), 2, "hello from node worker ", last, after(10s))) << last;
  CommandResult r = lbctl({"reload"});
  EXPECT_TRUE(r.exited(0)) << r.describe();
  EXPECT_TRUE(every_worker_answers(address(), 2, "hello from node worker ", last, after(10s))) << last;
  EXPECT_TRUE(eventually(after(5s), [&] { return count_records("listening on fd 3") == 4; }))
      << testing::PrintToString(log_records());
  EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u) << lbd().log();
}

}  // namespace
}  // namespace lbd::test
