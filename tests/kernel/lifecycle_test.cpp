// lbd's life as a service manager sees it: READY=1 and STOPPING=1 on NOTIFY_SOCKET (Type=notify),
// and the bounds on a stop: --shutdown-timeout for lbd's own workers, --kill-timeout (SIGKILL) for
// an `lbd run` program that ignores SIGTERM, and a second SIGTERM that stops at once. In
// --mode reuseport (no root). A plain graceful stop and SIGQUIT: stop_test.cpp.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "support/exec_test.h"
#include "support/notify_socket.h"

namespace lbd::test {
namespace {

// A process that is gone, or killed and not yet reaped (an orphaned grandchild is reaped by the
// test, which is a child subreaper).
bool gone(pid_t pid) {
  const char state = process_state(pid);
  return state == 0 || state == 'Z';
}

class Lifecycle : public ExecTest {
 protected:
  // Puts `target` in flight on `c`: it is pipelined behind a GET /, so once the GET's answer is
  // back the worker has read (and started) the slow request too.
  static void start_in_flight(HttpConnection& c, const std::string& target) {
    ASSERT_EQ(c.send(http_get("/") + http_get(target), after(2s)), Outcome::kOk);
    HttpResult first = c.read_response(after(5s));
    ASSERT_TRUE(first.ok()) << first.describe();
    ASSERT_EQ(first.response.status, 200);
  }

  // lbd's own workers, --demo-routes (for /sleep), with a control socket of the test's.
  std::vector<std::string> own_flags(unsigned workers, std::vector<std::string> extra) {
    extra.insert(extra.end(), {"--demo-routes", "--control", socket_path()});
    return lbd_flags("reuseport", workers, std::move(extra));
  }

  // A program that ignores SIGTERM (so only SIGKILL ends it), with a child in its process group
  // that ignores it too; it logs the child's pid. Ready 0.1 s after it starts.
  static std::vector<std::string> stubborn_program() {
    return {"/bin/sh", "-c", R"sh(trap '' TERM; sleep 600 & echo "child $!"; exec sleep 600)sh"};
  }

  // SIGTERM, which something holds open (`held`: why it should), then a second one, after which
  // lbd must exit 0 at once, saying so. `tag` is lbd's log tag: "lbd", or "lbd app" in exec mode.
  void expect_second_sigterm_stops_at_once(const std::string& tag, const std::string& held) {
    lbd().signal(SIGTERM);
    // Two SIGTERMs pending at once are one: the second goes only once lbd has taken the first.
    ASSERT_TRUE(lbd().wait_for_log(R"(\[)" + tag + R"(\] SIGTERM: stopping gracefully \(at most 60 s\))", after(5s)))
        << lbd().log();
    EXPECT_EQ(lbd().wait_exit(Clock::now()), ExitStatus::running()) << held;
    const auto signalled = Clock::now();
    lbd().signal(SIGTERM);
    EXPECT_EQ(lbd().wait_exit(after(3s)), ExitStatus::exited(0)) << "lbd did not stop within 3 s of the second SIGTERM";
    EXPECT_LT(Clock::now() - signalled, 3s);
    EXPECT_EQ(lbd().count_log(R"(\[)" + tag + R"(\] second SIGTERM: stopping at once)"), 1u) << lbd().log();
  }

  // The pid of the stubborn program's child, from the app's log.
  pid_t stubborn_child(unsigned slot) {
    pid_t child = 0;
    const std::string prefix = " app " + std::to_string(slot) + " out child ";
    eventually(after(5s), [&] {
      for (const auto& record : log_records()) {
        if (auto at = record.find(prefix); at != std::string::npos) child = std::stoi(record.substr(at + prefix.size()));
      }
      return child > 0;
    });
    return child;
  }
};

TEST_F(Lifecycle, TellsItsServiceManagerReadyOnceServingAndStoppingAsAStopBegins) {
  NotifySocket manager(dir_.path("notify"));
  lbd_.emplace(with_notify_socket(manager.path(), own_flags(2, {})));
  std::optional<NotifySocket::Message> ready = manager.next(after(10s));
  ASSERT_TRUE(ready) << "no READY=1 within 10 s\n" << lbd().log();
  EXPECT_EQ(ready->text, "READY=1");
  EXPECT_EQ(ready->sender, lbd().pid()) << "systemd's default NotifyAccess=main believes only lbd itself";
  // READY=1 was sent after the ready line was written: it is in the log, and lbd serves.
  auto ready_line = lbd().wait_ready(after(5s));
  ASSERT_TRUE(ready_line);
  ready_ = *ready_line;
  EXPECT_EQ(ready_.workers, 2u);
  for (int i = 0; i < 10; i++) EXPECT_EQ(fetch(address(), http_get("/", true), after(2s)).status(), 200);

  // STOPPING=1 comes when the stop begins, while a request in flight holds it open; not when lbd
  // exits. systemd then knows the unit is deactivating, not that the service died.
  HttpConnection c = HttpConnection::open(address(), after(2s));
  ASSERT_TRUE(c.valid());
  ASSERT_NO_FATAL_FAILURE(start_in_flight(c, "/sleep?ms=3000"));
  lbd().signal(SIGTERM);
  std::optional<NotifySocket::Message> stopping = manager.next(after(2s));
  ASSERT_TRUE(stopping) << "no STOPPING=1 within 2 s of SIGTERM\n" << lbd().log();
  EXPECT_EQ(stopping->text, "STOPPING=1") << "READY=1 is said once";
  EXPECT_EQ(stopping->sender, lbd().pid());
  EXPECT_TRUE(c.nothing_received()) << "STOPPING=1 came only after the request in flight was answered";
  EXPECT_EQ(lbd().wait_exit(Clock::now()), ExitStatus::running()) << "STOPPING=1 came only as lbd exited";

  HttpResult r = c.read_response(after(10s));
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.response.status, 200);
  EXPECT_EQ(lbd().wait_exit(after(10s)), ExitStatus::exited(0));
  EXPECT_TRUE(manager.empty()) << "more after STOPPING=1: " << manager.next(Clock::now())->text;
}

TEST_F(Lifecycle, SaysReadyOnlyOnceEveryWorkerIsReady) {
  NotifySocket manager(dir_.path("notify"));
  // Worker 0 says READY=1 at once, worker 1 only once the test creates the gate file. (The
  // program never accepts: --mode reuseport needs nothing more for readiness under --wait-ready.)
  const std::string gate = dir_.path("gate");
  const std::string program =
      "import os, socket, sys, time\n"
      "if os.environ['LB_WORKER_ID'] == '1':\n"
      "    while not os.path.exists(sys.argv[1]): time.sleep(0.01)\n"
      "to = os.environ['NOTIFY_SOCKET']\n"
      "socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'READY=1', '\\0' + to[1:] if to[0] == '@' else to)\n"
      "time.sleep(600)\n";
  lbd_.emplace(with_notify_socket(
      manager.path(),
      run_args({"--mode", "reuseport", "-i", "2", "--wait-ready"}, {"/usr/bin/python3", "-c", program, gate}, socket_path(),
               log_dir())));
  ASSERT_TRUE(lbd().wait_for_log(R"(worker 0 ready: pid [0-9]+)", after(10s))) << lbd().log();
  // A status answer comes from lbd's loop: whatever it did on worker 0's readiness is done.
  nlohmann::json s = status();
  EXPECT_EQ(states_of(s, 1), "starting") << s.dump();
  EXPECT_TRUE(manager.empty()) << "said " << manager.next(Clock::now())->text << " while worker 1 was still starting";

  std::ofstream(gate) << "";
  std::optional<NotifySocket::Message> ready = manager.next(after(10s));
  ASSERT_TRUE(ready) << "no READY=1 within 10 s of the last worker's\n" << lbd().log();
  EXPECT_EQ(ready->text, "READY=1");
  EXPECT_EQ(ready->sender, lbd().pid()) << "lbd itself, not a program";
  auto ready_line = lbd().wait_ready(after(5s));
  ASSERT_TRUE(ready_line) << lbd().log();
  EXPECT_EQ(ready_line->workers, 2u);
}

TEST_F(Lifecycle, ASecondSigtermStopsAtOnceWhileARequestHoldsTheGracefulStop) {
  ASSERT_NO_FATAL_FAILURE(start(own_flags(1, {"--shutdown-timeout", "60"})));
  HttpConnection c = HttpConnection::open(address(), after(2s));
  ASSERT_TRUE(c.valid());
  ASSERT_NO_FATAL_FAILURE(start_in_flight(c, "/sleep?ms=30000"));

  ASSERT_NO_FATAL_FAILURE(expect_second_sigterm_stops_at_once("lbd", "the request in flight should hold the stop"));
  HttpResult r = c.read_response(after(2s));
  EXPECT_FALSE(r.ok()) << "the request in flight was answered: " << r.describe();
}

TEST_F(Lifecycle, ASecondSigtermKillsAProgramThatIgnoresTheFirst) {
  ASSERT_NO_FATAL_FAILURE(
      start_program({"--mode", "reuseport", "-i", "1", "--ready-delay", "0.1", "--kill-timeout", "60"}, stubborn_program()));
  const pid_t program = serving_pids().at(0);
  const pid_t child = stubborn_child(0);
  ASSERT_GT(child, 0) << testing::PrintToString(log_records());

  ASSERT_NO_FATAL_FAILURE(
      expect_second_sigterm_stops_at_once("lbd app", "the program ignores SIGTERM: it should hold the stop"));
  EXPECT_TRUE(gone(program)) << "program pid " << program << " state " << process_state(program);
  EXPECT_TRUE(eventually(after(2s), [&] { return gone(child); })) << "its child pid " << child << " is still running";
}

TEST_F(Lifecycle, ShutdownTimeoutEndsARequestStillInFlight) {
  ASSERT_NO_FATAL_FAILURE(start(own_flags(1, {"--shutdown-timeout", "1"})));
  HttpConnection c = HttpConnection::open(address(), after(2s));
  ASSERT_TRUE(c.valid());
  // 30 s of work: far past the 1 s lbd gives it.
  ASSERT_NO_FATAL_FAILURE(start_in_flight(c, "/sleep?ms=30000"));

  const auto signalled = Clock::now();
  lbd().signal(SIGTERM);
  EXPECT_EQ(lbd().wait_exit(after(10s)), ExitStatus::exited(0)) << "lbd did not stop within 10 s";
  const auto stopped_after = Clock::now() - signalled;
  EXPECT_GE(stopped_after, 900ms) << "the request in flight was not given its second";
  EXPECT_LT(stopped_after, 4s) << "--shutdown-timeout 1, and lbd was still there";
  // The log says why the request got no answer: the timeout passed and its worker was killed,
  // not that it crashed.
  EXPECT_EQ(lbd().count_log(R"(shutdown timeout \(1\.0 s\) passed with 1 worker process\(es\) still running; killing them$)"),
            1u)
      << lbd().log();
  EXPECT_EQ(lbd().count_log(R"(\[lbd\] worker 0 \(pid )" + std::to_string(lbd().worker_pid(0)) +
                            R"(\) was killed by signal 9 \(SIGKILL\)$)"),
            1u)
      << lbd().log();
  EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u) << lbd().log();
  EXPECT_TRUE(lbd().wait_for_log(R"(\[lbd\] stopped$)", after(1s))) << lbd().log();
  HttpResult r = c.read_response(after(2s));
  EXPECT_FALSE(r.ok()) << "the request in flight was answered: " << r.describe();
}

TEST_F(Lifecycle, KillTimeoutEndsAProgramThatIgnoresSigtermWithSigkill) {
  ASSERT_NO_FATAL_FAILURE(
      start_program({"--mode", "reuseport", "-i", "1", "--ready-delay", "0.1", "--kill-timeout", "1"}, stubborn_program()));
  const pid_t program = serving_pids().at(0);
  const pid_t child = stubborn_child(0);
  ASSERT_GT(child, 0) << testing::PrintToString(log_records());

  const auto signalled = Clock::now();
  lbd().signal(SIGTERM);
  EXPECT_EQ(lbd().wait_exit(after(10s)), ExitStatus::exited(0)) << "lbd did not stop within 10 s";
  const auto stopped_after = Clock::now() - signalled;
  EXPECT_GE(stopped_after, 900ms) << "the program was not given its second after SIGTERM";
  EXPECT_LT(stopped_after, 4s) << "--kill-timeout 1, and the program was still there";
  EXPECT_EQ(lbd().count_log("worker 0 \\(pid " + std::to_string(program) + "\\) was killed by signal 9 \\(SIGKILL\\)"),
            1u)
      << lbd().log();
  // Its whole process group: the child that ignored SIGTERM too.
  EXPECT_TRUE(gone(program));
  EXPECT_TRUE(eventually(after(2s), [&] { return gone(child); })) << "its child pid " << child << " is still running";
}

// The same bound on a drain (and so on a reload's old program): SIGKILL at --kill-timeout, not
// later. (It once came 2 s after it, the grace lbd's own workers get to exit after closing.)
TEST_F(Lifecycle, KillTimeoutEndsTheDrainOfAProgramThatIgnoresSigterm) {
  ASSERT_NO_FATAL_FAILURE(
      start_program({"--mode", "reuseport", "-i", "1", "--ready-delay", "0.1", "--kill-timeout", "1"}, stubborn_program()));
  const pid_t program = serving_pids().at(0);
  const pid_t child = stubborn_child(0);
  ASSERT_GT(child, 0) << testing::PrintToString(log_records());

  const auto asked = Clock::now();
  CommandResult drained = lbctl({"drain", "0", "--wait"}, after(15s));
  const auto took = Clock::now() - asked;
  ASSERT_TRUE(drained.exited(0)) << drained.describe();
  EXPECT_GE(took, 900ms) << "the program was not given its second after SIGTERM";
  EXPECT_LT(took, 2500ms) << "--kill-timeout 1, and the drain took " << std::chrono::duration<double>(took).count()
                          << " s";
  EXPECT_TRUE(lbd().wait_for_log("worker 0 \\(pid " + std::to_string(program) + "\\) was killed by signal 9", after(2s)))
      << lbd().log();
  EXPECT_TRUE(eventually(after(2s), [&] { return gone(child); })) << "its child pid " << child << " is still running";
  EXPECT_EQ(lbd().wait_exit(Clock::now()), ExitStatus::running()) << "a drain does not stop lbd";
}

}  // namespace
}  // namespace lbd::test
