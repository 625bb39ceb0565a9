// The supervisor is no single point of failure (docs/ARCHITECTURE.md, section 9): when lbd dies
// (kill -9 stands in for the OOM killer or a bug), its workers keep serving with the steering in
// force, and an lbd started with the same arguments takes them over: the same pids serve, and
// status, reload, drain and scale work on them, with counters carried on. Under load, no request
// fails at any point. A record that is not this lbd's to take over is ignored with one line.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <set>

#include "support/control_test.h"
#include "support/admin.h"
#include "support/agent.h"
#include "support/exec_test.h"
#include "supervisor/state_record.h"

namespace lbd::test {
namespace {

using nlohmann::json;

constexpr auto kLoadBound = 40s;

// A second lbd, started the way systemd's Restart=always would: the same arguments.
struct Successor {
  explicit Successor(std::vector<std::string> args) : process(std::move(args)) {}
  LbdProcess process;
};

class Takeover : public ControlTest {
 protected:
  void SetUp() override { LBD_REQUIRE_ROOT("--mode bpf loads the steering program"); }

  std::vector<std::string> args(unsigned workers = 2) {
    std::vector<std::string> a = lbd_flags("bpf", workers, {"--shutdown-timeout", "5"});
    a.push_back("--control");
    a.push_back(socket_path());
    return a;
  }

  // Kills the supervisor (SIGKILL), checks that the workers serve on without it, then starts
  // an lbd with the same arguments and waits until it has taken them over.
  std::unique_ptr<Successor> kill_and_take_over(LoadGenerator* load) {
    const pid_t first = lbd().pid();
    lbd().signal(SIGKILL);
    EXPECT_EQ(lbd().wait_exit(after(5s)), ExitStatus::signaled(SIGKILL));
    // A second without a supervisor, as systemd's RestartSec=1 would leave, with requests answered
    // throughout it: in each half second, some.
    if (load) {
      for (int half = 0; half < 2; half++) {
        const auto until = Clock::now() + 500ms;
        const uint64_t before = load->completed();
        EXPECT_TRUE(eventually(after(10s), [&] { return Clock::now() >= until && load->completed() > before + 100; }))
            << "the workers stopped serving without their supervisor";
      }
    } else {
      EXPECT_EQ(fetch(address(), http_get("/", true), after(5s)).status(), 200) << "the workers stopped serving";
    }
    std::vector<std::string> same = args();
    auto successor = std::make_unique<Successor>(same);
    auto taken = successor->process.wait_for_log("took over ([0-9]+) processes from lbd pid " + std::to_string(first),
                                                 after(60s));
    EXPECT_TRUE(taken) << successor->process.log();
    auto ready = successor->process.wait_ready(after(60s));
    EXPECT_TRUE(ready) << successor->process.log();
    return successor;
  }
};

// What the kill and the takeover must not disturb, with each kind of client.
class TakeoverUnderLoad : public Takeover, public ::testing::WithParamInterface<bool> {};

TEST_P(TakeoverUnderLoad, AfterKill9ANewLbdAdoptsTheWorkersAndNoRequestFails) {
  const bool keep_alive = GetParam();
  ASSERT_NO_FATAL_FAILURE(start(args()));
  const auto before = serving_pids();
  ASSERT_EQ(before.size(), 2u);

  const LoadOptions options = bounded(clients(keep_alive), kLoadBound);
  auto load = std::make_unique<LoadGenerator>(options);
  ASSERT_TRUE(wait_for_requests(*load, 200, after(5s)));
  const json status_before = status();

  auto successor = kill_and_take_over(load.get());
  ASSERT_TRUE(successor);
  EXPECT_EQ(serving_pids(), before) << "the same workers serve";
  const json status_after = status();
  EXPECT_EQ(status_after["lbd"].value("pid", 0), successor->process.pid());
  for (unsigned slot = 0; slot < 2; slot++) {
    // The slot table is the one the workers have written all along: counters go on.
    EXPECT_GE(rows_of(status_after, slot).at(0).value("requests", 0u), rows_of(status_before, slot).at(0).value("requests", 0u));
  }
  EXPECT_TRUE(wait_for_requests(*load, 500, after(10s)));
  LoadReport through_takeover = load->stop();
  std::cout << (keep_alive ? "64 keep-alive connections" : "new connection per request")
            << ": kill -9 and takeover: " << through_takeover.summary() << "\n";
  EXPECT_EQ(through_takeover.failed(), 0u) << through_takeover.summary();
  if (keep_alive) {
    EXPECT_EQ(through_takeover.connections, 64u) << "a keep-alive connection was lost: " << through_takeover.summary();
  }

  // The adopted workers answer to lbctl: a rolling reload replaces them, under the same load.
  load = std::make_unique<LoadGenerator>(options);
  ASSERT_TRUE(wait_for_requests(*load, 200, after(5s)));
  CommandResult reload = lbctl({"reload"});
  ASSERT_TRUE(reload.exited(0)) << reload.describe();
  const auto after_reload = serving_pids();
  for (auto [slot, pid] : before) EXPECT_NE(after_reload.at(slot), pid) << "slot " << slot << " was not replaced";
  EXPECT_TRUE(wait_for_requests(*load, 500, after(10s)));
  LoadReport through_reload = load->stop();
  std::cout << "  then a reload of the adopted workers: " << through_reload.summary() << "\n";
  EXPECT_EQ(through_reload.failed(), 0u) << through_reload.summary();
  EXPECT_EQ(successor->process.count_log(kTroubleInLog), 0u) << successor->process.log();
}

INSTANTIATE_TEST_SUITE_P(Loads, TakeoverUnderLoad, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& load) {
                           return load.param ? "KeepAlive" : "NewConnections";
                         });

TEST_F(Takeover, MetricsDrainScaleAndPolicyWorkOnAdoptedWorkersAndAStopCleansUp) {
  std::vector<std::string> with_admin = args();
  with_admin.insert(with_admin.end(), {"--admin", "127.0.0.1:0"});
  ASSERT_NO_FATAL_FAILURE(start(with_admin));
  auto admin_line = lbd().wait_for_log(R"(\[lbd\] admin: serving http://(.+)$)", after(1s));
  ASSERT_TRUE(admin_line);
  const net::Address admin = net::Address::parse(admin_line->groups[1]);
  auto requests_total = [&] {
    HttpResult r = fetch(admin, http_get("/metrics", true), after(5s));
    return r.ok() ? MetricSamples::parse(r.response.body).sum("lbd_requests_total", {}) : -1.0;
  };
  for (int i = 0; i < 50; i++) ASSERT_EQ(fetch(address(), http_get("/", true), after(2s)).status(), 200);
  const double counted = requests_total();
  EXPECT_GE(counted, 50);
  ASSERT_TRUE(lbctl({"policy", "rr"}).exited(0));
  const auto before = serving_pids();

  const pid_t first = lbd().pid();
  lbd().signal(SIGKILL);
  EXPECT_EQ(lbd().wait_exit(after(5s)), ExitStatus::signaled(SIGKILL));
  auto successor = std::make_unique<Successor>(with_admin);
  ASSERT_TRUE(successor->process.wait_for_log("took over 2 processes from lbd pid " + std::to_string(first), after(60s)))
      << successor->process.log();
  EXPECT_TRUE(successor->process.wait_for_log("admin: serving http://" + admin.to_string() + "$", after(1s)))
      << "the admin endpoint is back where it was: " << successor->process.log();
  EXPECT_GE(requests_total(), counted) << "a slot's counters carry on across the takeover";
  EXPECT_EQ(status()["lbd"].value("policy", ""), "rr") << "the policy in force carries over";

  CommandResult drained = lbctl({"drain", "1", "--wait"});
  EXPECT_TRUE(drained.exited(0)) << drained.describe();
  EXPECT_TRUE(successor->process.wait_for_log("worker 1 \\(pid " + std::to_string(before.at(1)) + "\\) exited", after(5s)))
      << successor->process.log();
  EXPECT_EQ(states_of(status(), 1), "drained");
  CommandResult scaled = lbctl({"scale", "3"});
  EXPECT_TRUE(scaled.exited(0)) << scaled.describe();
  CommandResult undrained = lbctl({"undrain", "1"});
  EXPECT_TRUE(undrained.exited(0)) << undrained.describe();
  const auto now = serving_pids();
  EXPECT_EQ(now.size(), 3u);
  EXPECT_EQ(now.at(0), before.at(0)) << "the adopted worker in slot 0 still serves";
  for (int i = 0; i < 30; i++) EXPECT_EQ(fetch(address(), http_get("/", true), after(2s)).status(), 200);

  // A clean stop leaves no record and no pinned maps behind.
  const std::string record = dir_.path("lbd.state");
  EXPECT_TRUE(std::filesystem::exists(record));
  successor->process.signal(SIGTERM);
  EXPECT_EQ(successor->process.wait_exit(after(10s)), ExitStatus::exited(0));
  EXPECT_FALSE(std::filesystem::exists(record));
  EXPECT_FALSE(std::filesystem::exists(steering_pin_dir(record)));
}

// HAProxy knows the agent by its address: after a crash the next lbd answers there again (port 0
// asked for a free one, so "there" is the port the dead lbd had), with the adopted workers' weight.
TEST_F(Takeover, TheAgentAnswersAgainWhereItWas) {
  std::vector<std::string> with_agent = args();
  with_agent.insert(with_agent.end(), {"--agent", "127.0.0.1:0", "--drain-grace", "0"});
  ASSERT_NO_FATAL_FAILURE(start(with_agent));
  auto line = lbd().wait_for_log(R"(\[lbd\] agent: answering HAProxy agent checks on (.+)$)", after(1s));
  ASSERT_TRUE(line);
  const net::Address agent = net::Address::parse(line->groups[1]);
  ASSERT_GE(weight_of(ask_agent(agent)), 1);

  const pid_t first = lbd().pid();
  lbd().signal(SIGKILL);
  EXPECT_EQ(lbd().wait_exit(after(5s)), ExitStatus::signaled(SIGKILL));
  auto successor = std::make_unique<Successor>(with_agent);
  ASSERT_TRUE(successor->process.wait_for_log("took over 2 processes from lbd pid " + std::to_string(first), after(60s)))
      << successor->process.log();
  EXPECT_TRUE(successor->process.wait_for_log("agent: answering HAProxy agent checks on " + agent.to_string() + "$",
                                              after(1s)))
      << successor->process.log();
  ASSERT_TRUE(successor->process.wait_ready(after(30s)));
  EXPECT_GE(weight_of(ask_agent(agent)), 1) << "the adopted workers serve: up";
}

// lbd's own workers after a crash: the next lbd sends them messages too. A worker an lbd from
// before `lbctl send` started would drop one (its channel knows no kMessage); its record, from
// that lbd, does not say it takes messages, so the message is reported as not delivered instead of
// sent. Here slot 1's entry is made to look like such a record.
TEST_F(Takeover, MessagesReachAdoptedWorkersButNotAWorkerFromBeforeLbctlSend) {
  std::vector<std::string> with_routes = args();
  with_routes.push_back("--demo-routes");
  ASSERT_NO_FATAL_FAILURE(start(with_routes));
  // The record on disk has caught up with both workers' readiness (it is rewritten just after the
  // ready line; a worker the record still calls starting would be started again).
  const std::string record_path = dir_.path("lbd.state");
  json record;
  ASSERT_TRUE(eventually(after(5s), [&] {
    std::ifstream file(record_path);
    record = json::parse(file, nullptr, /*allow_exceptions=*/false);
    int taking = 0;
    for (const auto& child : record.value("children", json::array())) taking += child.value("takes_messages", false);
    return taking == 2;
  })) << record.dump();
  const pid_t first = lbd().pid();
  lbd().signal(SIGKILL);
  EXPECT_EQ(lbd().wait_exit(after(5s)), ExitStatus::signaled(SIGKILL));

  record = json::parse(std::ifstream(record_path));
  int edited = 0;
  for (auto& child : record["children"]) {
    if (child.value("slot", -1) == 1 && child.erase("takes_messages") == 1) edited++;
  }
  ASSERT_EQ(edited, 1) << record["children"].dump();
  std::ofstream(record_path) << record.dump();

  Successor successor(with_routes);
  ASSERT_TRUE(successor.process.wait_for_log("took over 2 processes from lbd pid " + std::to_string(first), after(60s)))
      << successor.process.log();
  CommandResult sent = lbctl({"send", "--all", "after the crash"});
  EXPECT_TRUE(sent.exited(1)) << sent.describe();
  EXPECT_EQ(sent.out, "sent to 1 of 2 worker(s) (slot 0)\n");
  EXPECT_NE(sent.err.find("from before `lbctl send`"), std::string::npos) << sent.err;
  // Worker 0 got it: it serves it on /last-message.
  std::string last;
  EXPECT_TRUE(eventually(after(10s), [&] {
    HttpResult r = fetch(address(), http_get("/last-message", true), after(2s));
    if (r.ok() && r.worker() == 0) last = r.response.body;
    return last == "after the crash\n";
  }, 1ms)) << "worker 0's last message: " << last;
}

TEST_F(Takeover, AWorkerThatDiedMeanwhileIsReplaced) {
  ASSERT_NO_FATAL_FAILURE(start(args()));
  const auto before = serving_pids();
  const pid_t first = lbd().pid();
  lbd().signal(SIGKILL);
  EXPECT_EQ(lbd().wait_exit(after(5s)), ExitStatus::signaled(SIGKILL));
  kill(before.at(1), SIGKILL);  // dies while nobody supervises it
  Successor successor(args());
  ASSERT_TRUE(successor.process.wait_for_log("took over 1 processes from lbd pid " + std::to_string(first), after(60s)))
      << successor.process.log();
  ASSERT_TRUE(successor.process.wait_ready(after(60s))) << successor.process.log();
  const auto now = serving_pids();
  EXPECT_EQ(now.at(0), before.at(0));
  EXPECT_NE(now.at(1), before.at(1));
  EXPECT_TRUE(successor.process.wait_for_log("process [0-9]+ of the lbd before could not be taken over", after(1s)));
}

TEST_F(Takeover, ARecordOfOtherArgumentsIsLeftAloneWithOneLine) {
  ASSERT_NO_FATAL_FAILURE(start(args()));
  const auto before = serving_pids();
  lbd().signal(SIGKILL);
  EXPECT_EQ(lbd().wait_exit(after(5s)), ExitStatus::signaled(SIGKILL));
  // Another worker count: not the lbd that died.
  LbdProcess other(args(1));
  ASSERT_TRUE(other.wait_ready(after(10s))) << other.log();
  EXPECT_TRUE(other.wait_for_log("not taking over from the lbd before this one .*: it was started with other "
                                 "arguments; its processes \\(pids [0-9 ]+\\) are left as they are",
                                 after(1s)))
      << other.log();
  for (auto [slot, pid] : before) EXPECT_EQ(process_state(pid) != 0, true) << "pid " << pid << " was left alone";
}

TEST_F(Takeover, ARecordFromAnEarlierBootOrDamagedStartsAfresh) {
  const std::string record = dir_.path("lbd.state");
  {
    std::ofstream out(record);
    out << json{{"version", 1}, {"boot_id", "not-this-boot"}, {"children", json::array()}}.dump();
  }
  ASSERT_NO_FATAL_FAILURE(start(args()));
  EXPECT_TRUE(lbd().wait_for_log("is from an earlier boot; starting afresh", after(1s))) << lbd().log();
  lbd_.reset();

  {
    std::ofstream out(record);
    out << "{ this is not json";
  }
  LbdProcess again(args());
  ASSERT_TRUE(again.wait_ready(after(10s))) << again.log();
  EXPECT_TRUE(again.wait_for_log("the state record .* is not JSON; starting afresh", after(1s))) << again.log();
}

// --- exec mode: programs lbd did not write ---------------------------------------------------------

class ExecTakeover : public ExecTest {
 protected:
  void SetUp() override { LBD_REQUIRE_ROOT("--mode bpf loads the steering program"); }
};

TEST_F(ExecTakeover, GunicornIsAdoptedWithItsLogAndNoRequestFails) {
  if (!on_path("gunicorn")) GTEST_SKIP() << "gunicorn is not installed";
  const std::vector<std::string> command = {"gunicorn", "--workers", "1", "--access-logfile", "-",
                                            "--chdir", FIXTURES_DIR, "wsgi_hello:app"};
  const auto run = run_args({"-i", "2"}, command, socket_path(), log_dir());
  ASSERT_NO_FATAL_FAILURE(start(run));
  const auto before = serving_pids();
  ASSERT_EQ(before.size(), 2u);
  LoadGenerator load(bounded(clients(false), kLoadBound));
  ASSERT_TRUE(wait_for_requests(load, 100, after(10s)));

  const pid_t first = lbd().pid();
  lbd().signal(SIGKILL);
  EXPECT_EQ(lbd().wait_exit(after(5s)), ExitStatus::signaled(SIGKILL));
  EXPECT_TRUE(wait_for_requests(load, 200, after(10s))) << "the programs stopped serving without lbd";
  LbdProcess successor(run);
  ASSERT_TRUE(successor.wait_for_log("took over 2 processes from lbd pid " + std::to_string(first), after(60s)))
      << successor.log();
  EXPECT_EQ(serving_pids(), before);
  // Their access log lines, written while no lbd read them and after, reach the app's log.
  const size_t logged_before = count_records("GET / HTTP/1.1");
  EXPECT_TRUE(wait_for_requests(load, 200, after(10s)));
  EXPECT_TRUE(eventually(after(10s), [&] { return count_records("GET / HTTP/1.1") > logged_before + 100; }))
      << "the adopted programs' output is logged";
  CommandResult reload = lbctl({"reload"});
  EXPECT_TRUE(reload.exited(0)) << reload.describe();
  LoadReport report = load.stop();
  std::cout << "gunicorn: kill -9, takeover, reload: " << report.summary() << "\n";
  EXPECT_EQ(report.failed(), 0u) << report.summary();
}

TEST_F(ExecTakeover, NodeIsAdoptedAndKeepsServing) {
  if (!on_path("node")) GTEST_SKIP() << "node is not installed";
  const auto run = run_args({"-i", "2"}, {"node", std::string(FIXTURES_DIR) + "/node_hello.js"}, socket_path(), log_dir());
  ASSERT_NO_FATAL_FAILURE(start(run));
  const auto before = serving_pids();
  const pid_t first = lbd().pid();
  lbd().signal(SIGKILL);
  EXPECT_EQ(lbd().wait_exit(after(5s)), ExitStatus::signaled(SIGKILL));
  for (int i = 0; i < 20; i++) EXPECT_EQ(fetch(address(), http_get("/", true), after(2s)).status(), 200);
  LbdProcess successor(run);
  ASSERT_TRUE(successor.wait_for_log("took over 2 processes from lbd pid " + std::to_string(first), after(60s)))
      << successor.log();
  EXPECT_EQ(serving_pids(), before);
  CommandResult drained = lbctl({"drain", "0", "--wait"});
  EXPECT_TRUE(drained.exited(0)) << drained.describe();
  for (int i = 0; i < 20; i++) EXPECT_EQ(fetch(address(), http_get("/", true), after(2s)).status(), 200);
}

// After kill -9 the programs keep the write ends of their message pipes (as they keep their
// output pipes' read ends): the next lbd takes them back, and messages reach the same programs.
TEST_F(ExecTakeover, MessagesReachTheAdoptedPrograms) {
  const auto run = run_args({"-i", "2"}, {"/usr/bin/python3", std::string(FIXTURES_DIR) + "/message_server.py"},
                            socket_path(), log_dir());
  ASSERT_NO_FATAL_FAILURE(start(run));
  const auto before = serving_pids();
  ASSERT_TRUE(lbctl({"send", "--all", "before the crash"}).exited(0));
  // Both programs' lines are in the log before the crash: a line lbd has read from a program's
  // output but not yet written when it is killed dies with it, and that is not what this checks.
  ASSERT_TRUE(eventually(after(10s), [&] { return count_records(" out message: before the crash") == 2; }))
      << testing::PrintToString(log_records());
  const pid_t first = lbd().pid();
  lbd().signal(SIGKILL);
  EXPECT_EQ(lbd().wait_exit(after(5s)), ExitStatus::signaled(SIGKILL));
  LbdProcess successor(run);
  ASSERT_TRUE(successor.wait_for_log("took over 2 processes from lbd pid " + std::to_string(first), after(60s)))
      << successor.log();
  EXPECT_EQ(serving_pids(), before);
  CommandResult sent = lbctl({"send", "--all", "after the takeover"});
  EXPECT_TRUE(sent.exited(0)) << sent.describe();
  EXPECT_EQ(sent.out, "sent to 2 of 2 worker(s) (slot 0, 1)\n");
  EXPECT_TRUE(eventually(after(10s), [&] { return count_records(" out message: after the takeover") == 2; }))
      << testing::PrintToString(log_records());
  EXPECT_EQ(count_records(" out message: before the crash"), 2u) << "each line once";
}

}  // namespace
}  // namespace lbd::test
