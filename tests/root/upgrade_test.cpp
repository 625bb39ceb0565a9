// Upgrading lbd itself (`lbctl upgrade`, SIGUSR2): the binary on disk takes over from the running
// supervisor, which exits only once it has; the workers keep their pids and their connections,
// and no request fails. A successor that exits at once, or never takes over, is killed and the
// old lbd keeps serving: the upgrade fails with one line (docs/ARCHITECTURE.md, section 9).
#include <gtest/gtest.h>

#include <dirent.h>

#include <atomic>
#include <cstdio>
#include <thread>
#include <regex>
#include <set>
#include <tuple>

#include "support/agent.h"
#include "support/control_test.h"
#include "support/exec_test.h"
#include "support/notify_socket.h"

namespace lbd::test {
namespace {

using nlohmann::json;

constexpr auto kLoadBound = 60s;

// "upgraded: lbd pid 10 handed over to pid 20" -> {10, 20}.
std::pair<pid_t, pid_t> handover_of(const CommandResult& r) {
  int old_pid = 0, new_pid = 0;
  for (const auto& line : r.out_lines()) {
    if (sscanf(line.c_str(), "upgraded: lbd pid %d handed over to pid %d", &old_pid, &new_pid) == 2) break;
  }
  return {old_pid, new_pid};
}

size_t open_fds(pid_t pid) {
  size_t n = 0;
  if (DIR* dir = opendir(("/proc/" + std::to_string(pid) + "/fd").c_str())) {
    while (readdir(dir)) n++;
    closedir(dir);
  }
  return n >= 2 ? n - 2 : 0;  // . and ..
}

class Upgrade : public ControlTest {
 protected:
  void SetUp() override { LBD_REQUIRE_ROOT("--mode bpf loads the steering program"); }

  // lbd from a copy of the binary, so that a test can put another file at its path.
  void start_copy() {
    copy_executable(LBD_BINARY_PATH, binary());
    start_controlled(lbd_flags("bpf", 2, {"--shutdown-timeout", "5"}), binary());
  }
  std::string binary() const { return dir_.path("lbd"); }

};

class UpgradeUnderLoad : public Upgrade, public ::testing::WithParamInterface<bool> {};

TEST_P(UpgradeUnderLoad, TenUpgradesFailNothingAndKeepEveryWorker) {
  const bool keep_alive = GetParam();
  ASSERT_NO_FATAL_FAILURE(start_copy());
  const auto workers = serving_pids();
  ASSERT_EQ(workers.size(), 2u);
  LoadGenerator load(bounded(clients(keep_alive), kLoadBound));
  ASSERT_TRUE(wait_for_requests(load, 200, after(5s)));

  pid_t supervisor = lbd().pid();
  std::set<pid_t> supervisors = {supervisor};
  for (int i = 1; i <= 10; i++) {
    CommandResult r = lbctl({"upgrade"});
    ASSERT_TRUE(r.exited(0)) << "upgrade " << i << ": " << r.describe();
    const auto [old_pid, new_pid] = handover_of(r);
    EXPECT_EQ(old_pid, supervisor) << r.out;
    EXPECT_TRUE(supervisors.insert(new_pid).second) << "upgrade " << i << " did not start a new lbd";
    supervisor = new_pid;
    EXPECT_EQ(status()["lbd"].value("pid", 0), supervisor);
    EXPECT_EQ(serving_pids(), workers) << "upgrade " << i << " replaced a worker";
    ASSERT_TRUE(wait_for_requests(load, 100, after(10s))) << "the load stalled after upgrade " << i;
  }
  LoadReport report = load.stop();
  std::cout << (keep_alive ? "64 keep-alive connections" : "new connection per request") << ", 10 upgrades: "
            << report.summary() << "\n";
  EXPECT_EQ(report.failed(), 0u) << report.summary();
  if (keep_alive) {
    EXPECT_EQ(report.connections, 64u) << "a keep-alive connection was closed by an upgrade: " << report.summary();
  }
  EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u) << lbd().log();
  EXPECT_EQ(status()["lbd"].value("reloads", -1), 0) << "no worker was reloaded";
}

INSTANTIATE_TEST_SUITE_P(Loads, UpgradeUnderLoad, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& load) {
                           return load.param ? "KeepAlive" : "NewConnections";
                         });

// A machine booted without systemd (a container, another init) has no BPF filesystem on
// /sys/fs/bpf, so lbd could pin nothing, and then nothing could take its workers over. lbd mounts
// one. The test runs lbd in a mount namespace of its own where /sys/fs/bpf is unmounted, so the
// machine's own mount (and every other lbd's pins on it) are untouched.
TEST_F(Upgrade, WithoutABpfFilesystemLbdMountsOneAndCanBeUpgraded) {
  const std::string wrapper = dir_.path("lbd-without-bpffs");
  replace_executable_with_text(wrapper,
                               "#!/bin/sh\n"
                               "exec unshare --mount --propagation private /bin/sh -c "
                               "'umount /sys/fs/bpf 2>/dev/null; exec \"$0\" \"$@\"' " LBD_BINARY_PATH " \"$@\"\n");
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("bpf", 2, {}), wrapper));
  EXPECT_TRUE(lbd().wait_for_log("mounted a BPF filesystem on /sys/fs/bpf", after(1s)));
  EXPECT_FALSE(lbd().wait_for_log("could not take these workers over", after(1ms)));
  const auto workers = serving_pids();
  CommandResult r = lbctl({"upgrade"});
  ASSERT_TRUE(r.exited(0)) << r.describe();
  EXPECT_EQ(serving_pids(), workers);
  HttpResult answer = fetch(address(), http_get("/", /*close=*/true), after(2s));
  EXPECT_TRUE(answer.ok()) << answer.describe();
}

TEST_F(Upgrade, ToABinaryThatExitsAtOnceFailsAndTheOldLbdKeepsServing) {
  ASSERT_NO_FATAL_FAILURE(start_copy());
  const auto workers = serving_pids();
  LoadGenerator load(bounded(clients(false), kLoadBound));
  ASSERT_TRUE(wait_for_requests(load, 200, after(5s)));
  replace_executable_with_text(binary(), "#!/bin/sh\nexit 3\n");
  CommandResult r = lbctl({"upgrade"});
  EXPECT_TRUE(r.exited(1)) << r.describe();
  EXPECT_TRUE(std::regex_search(r.err, std::regex("^lbctl: upgrade failed: the new lbd \\(pid [0-9]+\\) exited with status 3 "
                                                  "before it took over; this lbd \\(pid " +
                                                  std::to_string(lbd().pid()) + "\\) keeps serving\n$")))
      << r.err;
  EXPECT_EQ(status()["lbd"].value("pid", 0), lbd().pid());
  EXPECT_EQ(serving_pids(), workers);
  ASSERT_TRUE(wait_for_requests(load, 200, after(5s)));

  // The real binary back: the next upgrade goes through.
  replace_executable_with_file(binary(), LBD_BINARY_PATH);
  CommandResult ok = lbctl({"upgrade"});
  EXPECT_TRUE(ok.exited(0)) << ok.describe();
  EXPECT_EQ(serving_pids(), workers);
  ASSERT_TRUE(wait_for_requests(load, 200, after(5s)));
  LoadReport report = load.stop();
  EXPECT_EQ(report.failed(), 0u) << report.summary();
}

TEST_F(Upgrade, ToABinaryThatNeverTakesOverTimesOutAndTheOldLbdKeepsServing) {
  ASSERT_NO_FATAL_FAILURE(start_copy());
  const auto workers = serving_pids();
  LoadGenerator load(bounded(clients(false), kLoadBound));
  ASSERT_TRUE(wait_for_requests(load, 200, after(5s)));
  replace_executable_with_text(binary(), "#!/bin/sh\nexec sleep 60\n");
  CommandResult r = lbctl({"upgrade", "--timeout", "1"});
  EXPECT_TRUE(r.exited(1)) << r.describe();
  EXPECT_NE(r.err.find("did not take over within 1 s; this lbd (pid " + std::to_string(lbd().pid()) + ") keeps serving"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(serving_pids(), workers);
  // The old lbd still acts: a restart works (with the real binary back at its path).
  replace_executable_with_file(binary(), LBD_BINARY_PATH);
  CommandResult reload = lbctl({"restart", "0"});
  EXPECT_TRUE(reload.exited(0)) << reload.describe();
  ASSERT_TRUE(wait_for_requests(load, 200, after(5s)));
  LoadReport report = load.stop();
  EXPECT_EQ(report.failed(), 0u) << report.summary();
}

TEST_F(Upgrade, Sigusr2UpgradesAndUpgradeReloadRollsTheWorkersToo) {
  ASSERT_NO_FATAL_FAILURE(start_copy());
  const auto workers = serving_pids();
  const pid_t first = lbd().pid();
  lbd().signal(SIGUSR2);
  auto handed = lbd().wait_for_log("upgrade: pid ([0-9]+) took over; this lbd \\(pid " + std::to_string(first) + "\\) exits",
                                   after(15s));
  ASSERT_TRUE(handed) << lbd().log();
  EXPECT_TRUE(lbd().wait_for_log("took over 2 processes from lbd pid " + std::to_string(first), after(5s)));
  EXPECT_EQ(lbd().wait_exit(after(5s)), ExitStatus::exited(0)) << "the old lbd exits once the new one is in charge";
  EXPECT_EQ(serving_pids(), workers);

  CommandResult r = lbctl({"upgrade", "--reload"});
  ASSERT_TRUE(r.exited(0)) << r.describe();
  EXPECT_NE(r.out.find("upgraded: lbd pid " + handed->groups[1] + " handed over to pid "), std::string::npos) << r.out;
  EXPECT_TRUE(r.out_lines().back().starts_with("reload done: 2 slot(s)")) << r.out;
  const auto now = serving_pids();
  for (auto [slot, pid] : workers) EXPECT_NE(now.at(slot), pid) << "slot " << slot << " still runs the old worker";
}

// lbctl connects, then sends its request: the old lbd may accept the connection in between and
// then hand over before the request arrives. The successor answers it ("no gap for lbctl",
// docs/ARCHITECTURE.md, section 7); it used to be closed unanswered when the old lbd exited
// ("lbd closed the connection without an answer"), once in ~25 status calls made during upgrades.
TEST_F(Upgrade, AClientTheOldLbdAcceptedIsAnsweredByTheNewOne) {
  ASSERT_NO_FATAL_FAILURE(start_copy());
  const pid_t first = lbd().pid();
  ControlConnection early = ControlConnection::open(socket_path());
  ControlConnection partial = ControlConnection::open(socket_path());
  ASSERT_TRUE(early.valid() && partial.valid());
  // Half a request line from this one: the old lbd reads it, and the new one must have it too.
  ASSERT_EQ(partial.send("{\"verb\":", after(2s)), 0);
  // The listener's queue is accepted in order, and all of it at once: once lbd has answered a
  // later connection, it has accepted both of ours (and holds them, silent, as its clients).
  ASSERT_EQ(status()["lbd"].value("pid", 0), first);

  CommandResult r = lbctl({"upgrade"});
  ASSERT_TRUE(r.exited(0)) << r.describe();
  const pid_t second = handover_of(r).second;
  ASSERT_EQ(handover_of(r).first, first) << r.out;

  ASSERT_EQ(early.send("{\"verb\":\"status\"}\n", after(2s)), 0);
  ASSERT_EQ(partial.send("\"status\"}\n", after(2s)), 0);
  for (ControlConnection* c : {&early, &partial}) {
    const auto answer = c->read_until_close(after(10s));
    ASSERT_TRUE(answer.closed) << "no answer within 10 s";
    ASSERT_EQ(answer.lines().size(), 1u) << "lbd closed the connection without an answer: '" << answer.data << "'";
    const auto j = json::parse(answer.lines()[0], nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(j.is_object()) << answer.data;
    EXPECT_EQ(j.value("ok", false), true) << answer.data;
    EXPECT_EQ(j.value(json::json_pointer("/result/lbd/pid"), 0), second) << answer.data;
  }
}

// The same for the admin endpoint: a probe or scrape the old lbd accepted, with none or part of
// its request, is answered by the new one (a health check that fails over an upgrade can take
// the host out of a balancer).
TEST_F(Upgrade, AnAdminConnectionTheOldLbdHeldIsAnsweredByTheNewOne) {
  copy_executable(LBD_BINARY_PATH, binary());
  ASSERT_NO_FATAL_FAILURE(
      start_controlled(lbd_flags("bpf", 2, {"--shutdown-timeout", "5", "--admin", "127.0.0.1:0"}), binary()));
  auto line = lbd().wait_for_log(R"(\[lbd\] admin: serving http://(.+)$)", after(1s));
  ASSERT_TRUE(line) << lbd().log();
  const net::Address admin = net::Address::parse(line->groups[1]);
  const pid_t first = lbd().pid();

  HttpConnection silent = HttpConnection::open(admin, after(2s));
  HttpConnection partial = HttpConnection::open(admin, after(2s));
  ASSERT_TRUE(silent.valid() && partial.valid());
  ASSERT_EQ(partial.send("GET /readyz HTTP/1.1\r\nHo", after(2s)), Outcome::kOk);
  // lbd accepts its queue in order and all at once: once a later connection is answered, lbd
  // holds both of ours.
  HttpConnection later = HttpConnection::open(admin, after(2s));
  HttpResult answered = later.request("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", after(5s));
  ASSERT_EQ(answered.status(), 200) << answered.describe();

  CommandResult r = lbctl({"upgrade"});
  ASSERT_TRUE(r.exited(0)) << r.describe();
  ASSERT_EQ(handover_of(r).first, first) << r.out;

  ASSERT_EQ(silent.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", after(2s)), Outcome::kOk);
  ASSERT_EQ(partial.send("st: t\r\n\r\n", after(2s)), Outcome::kOk);
  HttpResult health = silent.read_response(after(10s));
  EXPECT_EQ(health.status(), 200) << "the old lbd's connection ended without an answer: " << health.describe();
  HttpResult ready = partial.read_response(after(10s));
  EXPECT_EQ(ready.status(), 200) << "the old lbd's connection ended without an answer: " << ready.describe();
  EXPECT_EQ(ready.response.body, "ready\n") << ready.describe();
}

// HAProxy's agent checks go on through upgrades: the listener passes to the successor, so no check
// is refused or goes unanswered (HAProxy would count it against the host), and each says "up".
TEST_F(Upgrade, TheAgentAnswersEveryCheckThroughUpgradesOnTheSamePort) {
  copy_executable(LBD_BINARY_PATH, binary());
  ASSERT_NO_FATAL_FAILURE(start_controlled(
      lbd_flags("bpf", 2, {"--shutdown-timeout", "5", "--agent", "127.0.0.1:0", "--drain-grace", "0"}), binary()));
  auto line = lbd().wait_for_log(R"(\[lbd\] agent: answering HAProxy agent checks on (.+)$)", after(1s));
  ASSERT_TRUE(line) << lbd().log();
  const net::Address agent = net::Address::parse(line->groups[1]);

  std::atomic<bool> done{false};
  std::atomic<int> checks{0};
  std::vector<std::string> bad;
  std::thread checker([&] {
    while (!done) {
      const std::string answer = ask_agent(agent);
      if (weight_of(answer) < 1 && bad.size() < 5) bad.push_back(answer);
      checks++;
    }
  });
  for (int i = 1; i <= 3; i++) {
    const int before = checks;
    CommandResult r = lbctl({"upgrade"});
    ASSERT_TRUE(r.exited(0)) << "upgrade " << i << ": " << r.describe();
    EXPECT_TRUE(eventually(after(5s), [&] { return checks > before + 20; }, 5ms));
  }
  done = true;
  checker.join();
  EXPECT_TRUE(bad.empty()) << checks << " checks; unanswered or not up: " << ::testing::PrintToString(bad);
  EXPECT_EQ(lbd().count_log("agent: answering HAProxy agent checks on " + agent.to_string()), 4u)
      << "each successor answers on the same address";
}

// systemd follows the new lbd: MAINPID= from it (the unit lbd writes has NotifyAccess=all for
// this), nothing from the old one as it exits, and STOPPING=1 from the new one when it stops.
// Otherwise systemd would take the old lbd's exit for the service's and kill the new one.
TEST_F(Upgrade, TellsItsServiceManagerTheNewMainPid) {
  copy_executable(LBD_BINARY_PATH, binary());
  NotifySocket manager(dir_.path("notify"));
  lbd_.emplace(with_notify_socket(
      manager.path(), lbd_flags("bpf", 2, {"--shutdown-timeout", "5", "--control", socket_path()}), binary()));
  std::optional<NotifySocket::Message> ready = manager.next(after(10s));
  ASSERT_TRUE(ready) << "no READY=1 within 10 s\n" << lbd().log();
  EXPECT_EQ(ready->text, "READY=1");
  const pid_t first = lbd().pid();
  EXPECT_EQ(ready->sender, first);

  CommandResult r = lbctl({"upgrade"});
  ASSERT_TRUE(r.exited(0)) << r.describe();
  const pid_t second = handover_of(r).second;
  ASSERT_EQ(handover_of(r).first, first) << r.out;
  std::vector<NotifySocket::Message> said;
  while (auto m = manager.next(after(2s))) said.push_back(*m);
  ASSERT_FALSE(said.empty()) << "nothing on NOTIFY_SOCKET after the upgrade";
  EXPECT_EQ(said.front().text, "MAINPID=" + std::to_string(second));
  EXPECT_EQ(said.front().sender, second);
  for (const auto& m : said) {
    EXPECT_EQ(m.sender, second) << "'" << m.text << "' from pid " << m.sender << ": the old lbd said something";
    EXPECT_NE(m.text, "STOPPING=1") << "the old lbd's exit is not the service's stop";
  }

  ASSERT_EQ(kill(second, SIGTERM), 0);
  std::optional<NotifySocket::Message> stopping = manager.next(after(5s));
  ASSERT_TRUE(stopping) << "no STOPPING=1 from the new lbd";
  EXPECT_EQ(stopping->text, "STOPPING=1");
  EXPECT_EQ(stopping->sender, second);
}

TEST_F(Upgrade, AHundredUpgradesLeakNoDescriptorAndNoMemory) {
  ASSERT_NO_FATAL_FAILURE(start_copy());
  const auto workers = serving_pids();
  auto measure = [&](pid_t supervisor) {
    return std::tuple{open_fds(supervisor), process_rss_bytes(supervisor), open_fds(workers.at(0)),
                      open_fds(workers.at(1))};
  };
  std::tuple<size_t, size_t, size_t, size_t> at_10{};
  pid_t supervisor = 0;
  for (int i = 1; i <= 100; i++) {
    CommandResult r = lbctl({"upgrade"});
    ASSERT_TRUE(r.exited(0)) << "upgrade " << i << ": " << r.describe();
    supervisor = handover_of(r).second;
    if (i == 10) {
      // Once it answers, the new lbd is in charge (it has let go of what the handover needed).
      ASSERT_EQ(status()["lbd"].value("pid", 0), supervisor);
      ASSERT_TRUE(fetch(address(), http_get("/", true), after(2s)).ok());
      at_10 = measure(supervisor);
    }
  }
  ASSERT_EQ(status()["lbd"].value("pid", 0), supervisor);
  ASSERT_TRUE(fetch(address(), http_get("/", true), after(2s)).ok());
  const auto at_100 = measure(supervisor);
  std::cout << "supervisor fds " << std::get<0>(at_10) << " -> " << std::get<0>(at_100) << ", rss "
            << std::get<1>(at_10) << " -> " << std::get<1>(at_100) << "; worker fds " << std::get<2>(at_10) << " -> "
            << std::get<2>(at_100) << ", " << std::get<3>(at_10) << " -> " << std::get<3>(at_100) << "\n";
  EXPECT_EQ(std::get<0>(at_100), std::get<0>(at_10)) << "the supervisor's descriptors grew";
  EXPECT_LT(std::get<1>(at_100), std::get<1>(at_10) + (1u << 20)) << "the supervisor's memory grew";
  EXPECT_EQ(std::get<2>(at_100), std::get<2>(at_10)) << "worker 0's descriptors grew";
  EXPECT_EQ(std::get<3>(at_100), std::get<3>(at_10)) << "worker 1's descriptors grew";
  EXPECT_EQ(serving_pids(), workers);
}

class ExecUpgrade : public ExecTest {
 protected:
  void SetUp() override { LBD_REQUIRE_ROOT("--mode bpf loads the steering program"); }
};

TEST_F(ExecUpgrade, ProgramsKeepServingAndLoggingThroughAnUpgrade) {
  if (!on_path("gunicorn")) GTEST_SKIP() << "gunicorn is not installed";
  ASSERT_NO_FATAL_FAILURE(start_program({"-i", "2"}, {"gunicorn", "--workers", "1", "--access-logfile", "-", "--chdir",
                                                      FIXTURES_DIR, "wsgi_hello:app"}));
  const auto workers = serving_pids();
  LoadGenerator load(bounded(clients(false), kLoadBound));
  ASSERT_TRUE(wait_for_requests(load, 100, after(10s)));
  for (int i = 0; i < 3; i++) {
    CommandResult r = lbctl({"upgrade"});
    ASSERT_TRUE(r.exited(0)) << r.describe();
    ASSERT_TRUE(wait_for_requests(load, 100, after(10s)));
  }
  EXPECT_EQ(serving_pids(), workers);
  const size_t logged = count_records("GET / HTTP/1.1");
  ASSERT_TRUE(wait_for_requests(load, 100, after(10s)));
  EXPECT_TRUE(eventually(after(10s), [&] { return count_records("GET / HTTP/1.1") >= logged + 100; }))
      << "the programs' output is still logged after the upgrades";
  LoadReport report = load.stop();
  EXPECT_EQ(report.failed(), 0u) << report.summary();
}

// The message pipes (LBD_MESSAGE_FD) are part of what a successor takes: messages reach the same
// programs after an upgrade, into the same pipes they have read from all along.
TEST_F(ExecUpgrade, MessagesStillReachTheProgramsAfterAnUpgrade) {
  ASSERT_NO_FATAL_FAILURE(
      start_program({"-i", "2"}, {"/usr/bin/python3", std::string(FIXTURES_DIR) + "/message_server.py"}));
  const auto workers = serving_pids();
  ASSERT_TRUE(lbctl({"send", "--all", "before the upgrade"}).exited(0));
  CommandResult upgraded = lbctl({"upgrade"});
  ASSERT_TRUE(upgraded.exited(0)) << upgraded.describe();
  EXPECT_EQ(serving_pids(), workers);
  CommandResult sent = lbctl({"send", "--all", "after the upgrade"});
  EXPECT_TRUE(sent.exited(0)) << sent.describe();
  EXPECT_EQ(sent.out, "sent to 2 of 2 worker(s) (slot 0, 1)\n");
  EXPECT_TRUE(eventually(after(10s), [&] { return count_records(" out message: after the upgrade") == 2; }))
      << testing::PrintToString(log_records());
  EXPECT_EQ(count_records(" out message: before the upgrade"), 2u) << "each line once";
}

}  // namespace
}  // namespace lbd::test
