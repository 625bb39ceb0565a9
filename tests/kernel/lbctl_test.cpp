// lbctl as an operator uses it, against an lbd in --mode reuseport (no root needed): exit codes
// and one-line reasons, status with live numbers, restart of one slot, drain --all / undrain
// --all, SIGHUP, stop, and a reload that runs the binary now on disk.
//
// Exit status contract (tools/lbctl/lbctl.cpp): 0 success; 1 with one line "lbctl: <reason>"
// when lbd refuses or cannot be reached; 2 for a usage error.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "support/control_test.h"

namespace lbd::test {
namespace {

using nlohmann::json;

// "lbctl: ..." on one line, nothing on stdout.
void expect_one_line_error(const CommandResult& r, const std::string& expected_stderr) {
  EXPECT_TRUE(r.exited(1)) << r.describe();
  EXPECT_EQ(r.err, expected_stderr) << r.describe();
  EXPECT_EQ(r.out, "") << r.describe();
}

uint64_t sum_of(const json& status, const char* field) {
  uint64_t sum = 0;
  for (const auto& w : status.value("workers", json::array())) {
    if (w.contains(field) && w[field].is_number()) sum += w[field].get<uint64_t>();
  }
  return sum;
}

class Lbctl : public ControlTest {};

// --- errors -------------------------------------------------------------------------------------

TEST_F(Lbctl, SaysLbdIsNotRunningWhenNoOneListens) {
  const std::string missing = dir_.path("missing.sock");
  expect_one_line_error(run_lbctl(missing, {"status"}, after(10s)),
                        "lbctl: lbd is not running (no control socket at " + missing + ")\n");

  // A socket file left behind by an lbd that died: nobody accepts on it.
  const std::string stale = dir_.path("stale.sock");
  {
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, stale.c_str());
    ASSERT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << strerror(errno);
  }
  expect_one_line_error(run_lbctl(stale, {"reload"}, after(10s)),
                        "lbctl: lbd is not running (no control socket at " + stale + ")\n");
}

TEST_F(Lbctl, UsageErrorsExitWithStatus2AndChangeNothing) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 2)));
  const auto pids = serving_pids();
  ASSERT_EQ(pids.size(), 2u);

  const std::vector<std::vector<std::string>> usage_errors = {
      {},                       // no verb
      {"explode"},              // unknown verb
      {"restart"},              // missing slot
      {"scale", "many"},        // not a number
      {"status", "--colour"},   // unknown flag
      {"drain"},                // neither a slot nor --all
      {"drain", "0", "--all"},  // both
      {"undrain"},
  };
  for (const auto& args : usage_errors) {
    std::string command = "lbctl";
    for (const auto& a : args) command += " " + a;
    CommandResult r = lbctl(args, after(10s));
    EXPECT_TRUE(r.exited(2)) << command << ": " << r.describe();
    EXPECT_FALSE(r.err.empty()) << command << ": a usage error should say what is wrong";
  }
  EXPECT_EQ(serving_pids(), pids) << "a usage error changed the workers";
  EXPECT_EQ(lbd().count_log(R"(\[lbd\] (drain|undrain|reload|restart|scale|policy|stop)|draining pid|control: )"), 0u)
      << "a usage error reached lbd";
}

TEST_F(Lbctl, NamesTheSlotsThatExistWhenASlotDoesNot) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 2)));
  const auto pids = serving_pids();
  for (const std::string verb : {"drain", "undrain", "restart"}) {
    SCOPED_TRACE("lbctl " + verb + " 7");
    expect_one_line_error(lbctl({verb, "7"}, after(10s)), "lbctl: no such slot: 7 (slots are 0-1)\n");
  }
  EXPECT_EQ(serving_pids(), pids);
}

TEST_F(Lbctl, PolicyIsRefusedOutsideBpfMode) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 1)));
  CommandResult r = lbctl({"policy", "rr"}, after(10s));
  EXPECT_TRUE(r.exited(1)) << r.describe();
  EXPECT_TRUE(r.err.starts_with("lbctl: policies apply to --mode bpf")) << r.describe();
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.describe();
  EXPECT_EQ(fetch(address(), http_get("/"), after(2s)).status(), 200);
}

TEST_F(Lbctl, SecondLbdOnTheSameControlSocketIsRefused) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 1)));
  LbdProcess second(lbd_flags("reuseport", 1, {"--control", socket_path()}));
  EXPECT_EQ(second.wait_exit(after(10s)), ExitStatus::exited(1));
  EXPECT_TRUE(second.wait_for_log("another lbd is running \\(control socket " + socket_path() + "\\)", after(1s)))
      << second.log();
  // The first one still owns the socket.
  const json s = status();
  EXPECT_EQ(s["lbd"].value("pid", 0), lbd().pid());
}

// --- status -------------------------------------------------------------------------------------

TEST_F(Lbctl, StatusShowsEveryWorkerWithLiveNumbers) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 2)));
  const json before = status();
  ASSERT_TRUE(before.contains("lbd")) << before.dump();
  const json& head = before["lbd"];
  EXPECT_EQ(head.value("pid", 0), lbd().pid());
  EXPECT_EQ(head.value("mode", ""), "reuseport");
  EXPECT_EQ(head.value("listen", json::array()), json::array({address().to_string()}));
  EXPECT_EQ(head.value("reloads", -1), 0);
  EXPECT_TRUE(head.contains("operation") && head["operation"].is_null()) << head.dump();
  EXPECT_TRUE(head.contains("version") && head.contains("policy") && head.contains("uptime_s")) << head.dump();

  ASSERT_EQ(before["workers"].size(), 2u) << before.dump(2);
  for (unsigned slot = 0; slot < 2; slot++) {
    const auto rows = rows_of(before, slot);
    ASSERT_EQ(rows.size(), 1u) << before.dump(2);
    const json& w = rows[0];
    EXPECT_EQ(w.value("pid", 0), lbd().worker_pid(slot)) << w.dump();
    EXPECT_EQ(w.value("state", ""), "active") << w.dump();
    EXPECT_GT(w.value("rss_bytes", uint64_t{0}), 0u) << w.dump();
    EXPECT_EQ(w.value("restarts", -1), 0) << w.dump();
    for (const char* field : {"cpu", "connections", "accepted", "requests", "cpu_percent", "uptime_s"}) {
      EXPECT_TRUE(w.contains(field)) << "no '" << field << "' in " << w.dump();
    }
  }

  // Requests: the counters grow by what was served.
  constexpr uint64_t kRequests = 300;
  LoadOptions options;
  options.address = address();
  options.threads = 2;
  options.duration = 10s;
  options.max_requests = kRequests;
  LoadReport report = run_load(options);
  ASSERT_TRUE(report.all_ok()) << report.summary();
  ASSERT_EQ(report.total(), kRequests);
  const uint64_t requests_before = sum_of(before, "requests");
  const uint64_t accepted_before = sum_of(before, "accepted");
  json after_load;
  EXPECT_TRUE(eventually(after(3s), [&] {
    after_load = status();
    return sum_of(after_load, "requests") >= requests_before + kRequests &&
           sum_of(after_load, "accepted") >= accepted_before + kRequests;
  }, 20ms)) << "requests before: " << requests_before << ", now: " << after_load.dump(2);

  // Live connections: four idle keep-alive clients are counted while they stay.
  std::vector<HttpConnection> idle;
  for (int i = 0; i < 4; i++) {
    idle.push_back(HttpConnection::open(address(), after(2s)));
    ASSERT_EQ(idle.back().request(http_get("/"), after(2s)).status(), 200);
  }
  json with_idle;
  EXPECT_TRUE(eventually(after(3s), [&] {
    with_idle = status();
    return sum_of(with_idle, "connections") == 4;
  }, 20ms)) << with_idle.dump(2);
  for (auto& c : idle) c.close();
  EXPECT_TRUE(eventually(after(3s), [&] { return sum_of(status(), "connections") == 0; }, 20ms));

  // The table: a summary line, a header, one row per worker with its pid and state.
  CommandResult table = lbctl({"status"}, after(10s));
  ASSERT_TRUE(table.exited(0)) << table.describe();
  const auto lines = table.out_lines();
  ASSERT_GE(lines.size(), 4u) << table.out;
  EXPECT_NE(lines[0].find("pid " + std::to_string(lbd().pid())), std::string::npos) << table.out;
  EXPECT_NE(lines[0].find("mode reuseport"), std::string::npos) << table.out;
  EXPECT_NE(lines[0].find(address().to_string()), std::string::npos) << table.out;
  EXPECT_TRUE(lines[1].starts_with("SLOT")) << table.out;
  for (unsigned slot = 0; slot < 2; slot++) {
    const std::string& row = lines[2 + slot];
    EXPECT_TRUE(row.starts_with(std::to_string(slot) + " ")) << table.out;
    EXPECT_NE(row.find(" " + std::to_string(lbd().worker_pid(slot)) + " "), std::string::npos) << table.out;
    EXPECT_NE(row.find(" active "), std::string::npos) << table.out;
  }
  EXPECT_EQ(lines.size(), 4u) << "one row per worker: " << table.out;
}

// --- restart, drain, undrain, SIGHUP, stop --------------------------------------------------------

TEST_F(Lbctl, RestartReplacesExactlyThatSlot) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 3)));
  const auto before = serving_pids();
  ASSERT_EQ(before.size(), 3u);

  CommandResult r = lbctl({"restart", "1"});
  ASSERT_TRUE(r.exited(0)) << r.describe();
  ASSERT_FALSE(r.out_lines().empty());
  EXPECT_TRUE(r.out_lines().back().starts_with("restart done: 1 slot(s) in ")) << r.out;

  const auto now = serving_pids();
  ASSERT_EQ(now.size(), 3u);
  EXPECT_EQ(now.at(0), before.at(0));
  EXPECT_EQ(now.at(2), before.at(2));
  EXPECT_NE(now.at(1), before.at(1));
  EXPECT_EQ(now.at(1), lbd().worker_pid(1));
  EXPECT_TRUE(lbd().wait_for_log("worker 1 ready: pid " + std::to_string(now.at(1)) + ", cpu [0-9]+; replaces pid " +
                                     std::to_string(before.at(1)) + "$",
                                 after(2s)));
  EXPECT_TRUE(lbd().wait_for_log("worker 1 \\(pid " + std::to_string(before.at(1)) + "\\) exited with status 0",
                                 after(5s)));
  EXPECT_EQ(lbd().count_log("worker [02] ready"), 2u) << "only slot 1 was to be replaced";
  EXPECT_EQ(fetch_from_worker(address(), 1, after(5s)).status(), 200);
}

TEST_F(Lbctl, DrainAllWaitThenUndrainAll) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 2)));
  const auto before = serving_pids();
  ASSERT_EQ(before.size(), 2u);

  CommandResult drained = lbctl({"drain", "--all", "--wait", "--timeout", "5"});
  ASSERT_TRUE(drained.exited(0)) << drained.describe();
  // --wait: when it returns, the workers are gone.
  const json down = status();
  ASSERT_EQ(down["workers"].size(), 2u) << down.dump(2);
  for (const auto& w : down["workers"]) {
    EXPECT_EQ(w.value("state", ""), "drained") << w.dump();
    EXPECT_TRUE(w["pid"].is_null()) << w.dump();
  }
  for (auto [slot, pid] : before) {
    EXPECT_TRUE(lbd().wait_for_log("worker " + std::to_string(slot) + " \\(pid " + std::to_string(pid) +
                                       "\\) exited with status 0",
                                   after(2s)));
  }
  EXPECT_EQ(lbd().wait_exit(after(100ms)), ExitStatus::running()) << "lbd stopped with its workers";
  expect_one_line_error(lbctl({"restart", "0"}, after(10s)),
                        "lbctl: slot 0 has no serving worker (drained? use undrain)\n");

  CommandResult undrained = lbctl({"undrain", "--all"});
  ASSERT_TRUE(undrained.exited(0)) << undrained.describe();
  EXPECT_TRUE(undrained.out_lines().back().starts_with("undrain done: 2 slot(s)")) << undrained.out;
  // It returns when they serve: no waiting here.
  const auto after_undrain = serving_pids();
  ASSERT_EQ(after_undrain.size(), 2u);
  for (unsigned slot = 0; slot < 2; slot++) {
    EXPECT_NE(after_undrain.at(slot), before.at(slot));
    HttpResult r = fetch_from_worker(address(), static_cast<int>(slot), after(5s));
    EXPECT_EQ(r.status(), 200) << r.describe();
    EXPECT_EQ(r.worker(), static_cast<int>(slot)) << r.describe();
  }
}

// The drain verb: "It stays out until `undrain` or a reload."
TEST_F(Lbctl, DrainedSlotStaysOutUntilAReload) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 2)));
  CommandResult drained = lbctl({"drain", "0", "--wait"});
  ASSERT_TRUE(drained.exited(0)) << drained.describe();
  // Restarting another slot leaves it out...
  CommandResult restart = lbctl({"restart", "1"});
  ASSERT_TRUE(restart.exited(0)) << restart.describe();
  EXPECT_EQ(states_of(status(), 0), "drained");
  // ...a reload brings it back.
  CommandResult reload = lbctl({"reload"});
  ASSERT_TRUE(reload.exited(0)) << reload.describe();
  const json s = status();
  EXPECT_EQ(states_of(s, 0), "active") << "a reload should end the drain: " << s.dump(2);
  // "reload done" means every slot's new worker serves; slot 1's old worker may still be
  // draining then (the README's reload: "drain the old worker"), and leaves on its own.
  EXPECT_TRUE(states_of(s, 1) == "active" || states_of(s, 1) == "active,draining") << s.dump(2);
  EXPECT_TRUE(eventually(after(5s), [&] { return states_of(status(), 1) == "active"; }, 20ms))
      << status().dump(2);
  EXPECT_TRUE(reload.out_lines().back().starts_with("reload done: 2 slot(s)")) << reload.out;
}

TEST_F(Lbctl, ReloadInParallelReplacesTwoSlotsAtATime) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 4)));
  const auto before = serving_pids();
  ASSERT_EQ(before.size(), 4u);

  CommandResult r = lbctl({"reload", "--parallel", "2"});
  ASSERT_TRUE(r.exited(0)) << r.describe();
  const auto lines = r.out_lines();
  EXPECT_TRUE(lines.back().starts_with("reload done: 4 slot(s) in ")) << r.out;
  // A progress line per slot as it changes; two slots start before the first one serves.
  size_t started_before_first_serving = 0;
  for (const auto& line : lines) {
    if (line.find(" serving") != std::string::npos) break;
    if (line.find(": starting pid ") != std::string::npos) started_before_first_serving++;
  }
  EXPECT_EQ(started_before_first_serving, 2u) << r.out;
  const auto now = serving_pids();
  ASSERT_EQ(now.size(), 4u);
  for (unsigned slot = 0; slot < 4; slot++) EXPECT_NE(now.at(slot), before.at(slot)) << "slot " << slot;
}

TEST_F(Lbctl, SighupReloadsEveryWorker) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 2)));
  const auto before = serving_pids();
  ASSERT_EQ(before.size(), 2u);

  lbd().signal(SIGHUP);
  ASSERT_TRUE(lbd().wait_for_log(R"(\[lbd\] reload done in [0-9.]+ s)", after(10s)));
  const auto now = serving_pids();
  ASSERT_EQ(now.size(), 2u);
  for (unsigned slot = 0; slot < 2; slot++) {
    EXPECT_NE(now.at(slot), before.at(slot)) << "slot " << slot << " was not replaced";
    EXPECT_EQ(now.at(slot), lbd().worker_pid(slot));
  }
  EXPECT_EQ(status()["lbd"].value("reloads", -1), 1);
  EXPECT_EQ(fetch(address(), http_get("/"), after(2s)).status(), 200);
}

TEST_F(Lbctl, StopStopsLbdGracefully) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 2)));
  CommandResult r = lbctl({"stop"});
  EXPECT_TRUE(r.exited(0)) << r.describe();
  EXPECT_EQ(r.out, "lbd is stopping\n");
  EXPECT_EQ(lbd().wait_exit(after(10s)), ExitStatus::exited(0));
  EXPECT_FALSE(std::filesystem::exists(socket_path())) << "lbd left its control socket behind";
  expect_one_line_error(lbctl({"status"}, after(10s)),
                        "lbctl: lbd is not running (no control socket at " + socket_path() + ")\n");
}

// --- reload runs the binary on disk -------------------------------------------------------------

TEST_F(Lbctl, ReloadRunsTheBinaryNowOnDisk) {
  // lbd runs from a copy; the deploy renames a different program (a service embedding lbd) over
  // that copy, then reloads.
  const std::string binary = dir_.path("lbd");
  copy_executable(LBD_BINARY_PATH, binary);
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 2), binary));
  EXPECT_EQ(fetch(address(), http_get("/hello?name=x"), after(2s)).status(), 404) << "lbd's own app has no /hello";

  replace_executable_with_file(binary, HELLO_SERVICE_PATH);
  CommandResult r = lbctl({"reload"});
  ASSERT_TRUE(r.exited(0)) << r.describe();
  EXPECT_TRUE(r.out_lines().back().starts_with("reload done: 2 slot(s) in ")) << r.out;

  std::set<int> workers;
  for (int i = 0; i < 50; i++) {
    HttpResult answer = fetch(address(), http_get("/hello?name=x"), after(2s));
    ASSERT_EQ(answer.status(), 200) << answer.describe();
    EXPECT_EQ(answer.response.body, "hello, x\n");
    workers.insert(answer.worker());
  }
  EXPECT_EQ(workers, (std::set<int>{0, 1})) << "both new workers should serve";
}

}  // namespace
}  // namespace lbd::test
