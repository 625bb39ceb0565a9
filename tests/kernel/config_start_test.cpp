// `lbd start FILE.toml`: one lbd runs the apps a config file declares, each its own
// `lbd run` with its own port, control socket and log; lbctl names them. All or nothing: a bad
// file names the file, line and key and starts nothing; an app that cannot start (a port in use)
// stops the others. --mode reuseport here (no root).
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "net/listener.h"
#include "support/free_port.h"
#include "support/lbctl.h"
#include "support/http_client.h"
#include "support/lbd_process.h"
#include "support/temp_dir.h"

namespace lbd::test {
namespace {

using nlohmann::json;

class ConfigStart : public ::testing::Test {
 protected:
  // A port for an app of the config file, which names its ports (support/free_port.h).
  uint16_t free_port() { return ports_.pick(); }

  std::string write_config(const std::string& text) {
    const std::string path = dir_.path("lbd.toml");
    std::ofstream(path) << text;
    return path;
  }

  std::string app_block(const std::string& name, uint16_t port) {
    return "[[app]]\nname = \"" + name + "\"\ncommand = [\"" + SOCKET_ACTIVATED_SERVER_PATH +
           "\"]\nlisten = \"127.0.0.1:" + std::to_string(port) + "\"\nworkers = 2\nmode = \"reuseport\"\n"
           "wait_ready = true\n" + std::string(geteuid() == 0 ? "user = \"nobody\"\n" : "");
  }

  std::string lbd_table() {
    return "[lbd]\ncontrol_dir = \"" + dir_.path("run") + "\"\nlog_dir = \"" + dir_.path("logs") + "\"\n";
  }

  CommandResult lbctl(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {LBCTL_PATH, "--control-dir", dir_.path("run")};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv, after(30s));
  }

  // The app's worker pids by slot, from lbctl status.
  std::vector<pid_t> worker_pids(const std::string& app) {
    std::vector<pid_t> pids;
    CommandResult r = lbctl({"status", app, "--json"});
    if (!r.exited(0)) return pids;
    const json status = json::parse(r.out);  // kept: the loop walks into it
    for (const auto& w : status["workers"]) {
      if (w.value("state", "") == "active") pids.push_back(w.value("pid", 0));
    }
    return pids;
  }

  TempDir dir_;
  FreePorts ports_;
};

TEST_F(ConfigStart, TwoAppsServeOnTheirPortsAndLbctlNamesThem) {
  const uint16_t web_port = free_port(), api_port = free_port();
  const std::string file = write_config(lbd_table() + app_block("web", web_port) + app_block("api", api_port));
  LbdProcess lbd({"start", file});
  ASSERT_TRUE(lbd.wait_for_log("\\[lbd\\] ready: 2 apps$", after(20s))) << lbd.log();

  for (uint16_t port : {web_port, api_port}) {
    HttpResult r = fetch(net::Address::parse("127.0.0.1:" + std::to_string(port)), http_get("/", true), after(5s));
    EXPECT_TRUE(r.ok() && r.response.body.starts_with("hello from worker ")) << r.describe();
  }
  // Verbs take the app's name.
  CommandResult web = lbctl({"status", "web", "--json"});
  ASSERT_TRUE(web.exited(0)) << web.describe();
  json s = json::parse(web.out);
  EXPECT_EQ(s["lbd"]["app"], "web");
  EXPECT_EQ(s["lbd"]["listen"], json::array({"127.0.0.1:" + std::to_string(web_port)}));
  EXPECT_EQ(s["workers"].size(), 2u);
  CommandResult reload = lbctl({"reload", "api"});
  EXPECT_TRUE(reload.exited(0)) << reload.describe();
  CommandResult drain = lbctl({"drain", "api", "1", "--wait"});
  EXPECT_TRUE(drain.exited(0)) << drain.describe();
  // Two apps and none named: lbctl asks which.
  CommandResult unnamed = lbctl({"status"});
  EXPECT_TRUE(unnamed.exited(1)) << unnamed.describe();
  EXPECT_EQ(unnamed.err, "lbctl: several apps run here (api, web): name one, e.g. lbctl status api\n");
  // Each app's log is its own file.
  EXPECT_TRUE(eventually(after(5s), [&] {
    std::ifstream web_log(dir_.path("logs") + "/web.log"), api_log(dir_.path("logs") + "/api.log");
    return web_log.good() && api_log.good();
  }));

  lbd.signal(SIGTERM);
  EXPECT_EQ(lbd.wait_exit(after(20s)), ExitStatus::exited(0)) << lbd.log();
  EXPECT_EQ(lbd.count_log("app (web|api) \\(pid [0-9]+\\) exited with status 0"), 2u) << lbd.log();
}

TEST_F(ConfigStart, AnAppWhoseSupervisorDiesIsStartedAgainAndTheOthersStay) {
  const uint16_t web_port = free_port(), api_port = free_port();
  const std::string file = write_config(lbd_table() + app_block("web", web_port) + app_block("api", api_port));
  LbdProcess lbd({"start", file});
  ASSERT_TRUE(lbd.wait_for_log("\\[lbd\\] ready: 2 apps$", after(20s))) << lbd.log();
  auto supervisor_pid = [&](const std::string& app) -> pid_t {
    CommandResult r = lbctl({"status", app, "--json"});
    if (!r.exited(0)) return 0;
    return json::parse(r.out)["lbd"].value("pid", 0);
  };
  const pid_t web_before = supervisor_pid("web"), api_before = supervisor_pid("api");
  ASSERT_GT(web_before, 0);
  ASSERT_GT(api_before, 0);
  const std::vector<pid_t> web_workers = worker_pids("web");
  ASSERT_EQ(web_workers.size(), 2u);

  // Killed outright (the OOM killer, an operator's kill -9): lbd start runs it again, and the new
  // supervisor takes the app's workers over (they served on meanwhile).
  ASSERT_EQ(kill(web_before, SIGKILL), 0);
  ASSERT_TRUE(lbd.wait_for_log("app web \\(pid " + std::to_string(web_before) + "\\) was killed by signal 9", after(10s)))
      << lbd.log();
  ASSERT_TRUE(lbd.wait_for_log("app web: restarting it in [0-9]+ ms", after(10s))) << lbd.log();
  ASSERT_TRUE(lbd.wait_for_log("app web ready again", after(30s))) << lbd.log();
  const pid_t web_after = supervisor_pid("web");
  EXPECT_GT(web_after, 0);
  EXPECT_NE(web_after, web_before);
  EXPECT_EQ(supervisor_pid("api"), api_before) << "the other app was left alone";
  EXPECT_EQ(worker_pids("web"), web_workers) << "the app's workers were taken over, not restarted";
  HttpResult r = fetch(net::Address::parse("127.0.0.1:" + std::to_string(web_port)), http_get("/", true), after(5s));
  EXPECT_TRUE(r.ok() && r.response.body.starts_with("hello from worker ")) << r.describe();

  lbd.signal(SIGTERM);
  EXPECT_EQ(lbd.wait_exit(after(20s)), ExitStatus::exited(0)) << lbd.log();
}

TEST_F(ConfigStart, KillingLbdStartLeavesTheAppsServingAndTheNextOneTakesThemOver) {
  const uint16_t web_port = free_port(), api_port = free_port();
  const std::string file = write_config(lbd_table() + app_block("web", web_port) + app_block("api", api_port));
  auto first = std::make_unique<LbdProcess>(std::vector<std::string>{"start", file});
  ASSERT_TRUE(first->wait_for_log("\\[lbd\\] ready: 2 apps$", after(20s))) << first->log();
  const auto web_workers = worker_pids("web"), api_workers = worker_pids("api");
  ASSERT_EQ(web_workers.size(), 2u);
  ASSERT_EQ(api_workers.size(), 2u);

  // lbd start dies; its apps' supervisors go with it (at once), their workers stay.
  first->signal(SIGKILL);
  EXPECT_EQ(first->wait_exit(after(5s)), ExitStatus::signaled(SIGKILL));
  for (uint16_t port : {web_port, api_port}) {
    HttpResult r = fetch(net::Address::parse("127.0.0.1:" + std::to_string(port)), http_get("/", true), after(5s));
    EXPECT_TRUE(r.ok()) << "port " << port << " stopped serving with lbd start gone: " << r.describe();
  }
  LbdProcess second({"start", file});
  ASSERT_TRUE(second.wait_for_log("\\[lbd\\] ready: 2 apps$", after(60s))) << second.log();
  EXPECT_EQ(worker_pids("web"), web_workers);
  EXPECT_EQ(worker_pids("api"), api_workers);
  second.signal(SIGTERM);
  EXPECT_EQ(second.wait_exit(after(20s)), ExitStatus::exited(0)) << second.log();
}

// This process's children, running or not yet reaped.
std::set<pid_t> children() {
  std::set<pid_t> pids;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    std::getline(stat, line);
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so read after the last ')'.
    const size_t end = line.rfind(')');
    char state = 0;
    int parent = 0;
    if (end != std::string::npos && sscanf(line.c_str() + end + 1, " %c %d", &state, &parent) == 2 &&
        parent == getpid()) {
      pids.insert(std::stoi(name));
    }
  }
  return pids;
}

// No process of lbd's is left: lbd start and everything it started has exited and been reaped.
// The test is a child subreaper (LbdProcess makes it one), so a process that outlived its parent
// would be a child of ours that was not one `before` lbd start ran.
void expect_nothing_left_running(const std::set<pid_t>& before) {
  for (pid_t pid : children()) {
    EXPECT_TRUE(before.contains(pid)) << "left behind: pid " << pid << ", " << process_command_line(pid);
  }
}

TEST_F(ConfigStart, AnAppThatCannotStartStopsTheOthers) {
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  const std::set<pid_t> before = children();
  // A port in use: api cannot listen; web, started beside it, is stopped and lbd exits 1.
  {
    auto held = net::listen_tcp(net::Address::parse("127.0.0.1:0"), {.backlog = 1, .reuseport = false});
    ASSERT_TRUE(held.ok());
    const uint16_t taken = net::local_address(held->get())->port();
    const std::string file = write_config(lbd_table() + app_block("web", free_port()) + app_block("api", taken));
    LbdProcess lbd({"start", file});
    EXPECT_EQ(lbd.wait_exit(after(30s)), ExitStatus::exited(1)) << lbd.log();
    EXPECT_EQ(lbd.count_log("cannot listen on 127.0.0.1:" + std::to_string(taken) + ": Address already in use"), 1u)
        << lbd.log();
    EXPECT_EQ(lbd.count_log("app api \\(pid [0-9]+\\) exited with status 1; stopping the other apps"), 1u)
        << lbd.log();
    // Whether web got as far as listening before it was stopped is a race; that nothing of it
    // is left is not.
    expect_nothing_left_running(before);
  }

  // A program that will not run, once web is serving: web's port answers, then api's program
  // exits 1 before it was ever ready (max_restarts = 1: given up at once, not retried), and lbd
  // start stops web: the port it really served is closed.
  const uint16_t web_port = free_port(), api_port = free_port();
  const std::string fail_now = dir_.path("api-fails-now");
  const std::string api_block = "[[app]]\nname = \"api\"\ncommand = [\"/bin/sh\", \"-c\", \"while [ ! -e " + fail_now +
                                " ]; do sleep 0.01; done; exit 1\"]\nlisten = \"127.0.0.1:" + std::to_string(api_port) +
                                "\"\nworkers = 1\nmode = \"reuseport\"\nwait_ready = true\nmax_restarts = 1\n" +
                                std::string(geteuid() == 0 ? "user = \"nobody\"\n" : "");
  const std::string file = write_config(lbd_table() + app_block("web", web_port) + api_block);
  LbdProcess lbd({"start", file});
  const net::Address web = net::Address::parse("127.0.0.1:" + std::to_string(web_port));
  HttpResult served;
  ASSERT_TRUE(eventually(after(20s), [&] {
    served = fetch(web, http_get("/", true), after(2s));
    return served.ok();
  }, 10ms)) << "web never served: " << served.describe() << "\n" << lbd.log();
  EXPECT_TRUE(served.response.body.starts_with("hello from worker ")) << served.describe();
  EXPECT_EQ(lbd.count_log("ready: 2 apps"), 0u) << "api is never ready: lbd start is still starting";
  std::ofstream(fail_now) << "";
  EXPECT_EQ(lbd.wait_exit(after(30s)), ExitStatus::exited(1)) << lbd.log();
  EXPECT_EQ(lbd.count_log("app api \\(pid [0-9]+\\) exited with status 1; stopping the other apps"), 1u)
      << lbd.log();
  // Nothing is left serving: the port web really served is closed now.
  HttpResult r = fetch(web, http_get("/", true), after(2s));
  EXPECT_EQ(r.outcome, Outcome::kRefused) << r.describe();
  expect_nothing_left_running(before);
}

TEST_F(ConfigStart, ABadFileNamesTheFileLineAndKeyAndStartsNothing) {
  // Whatever lbd start spawns and leaves behind becomes our child (see below).
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  const std::set<pid_t> before = children();
  const uint16_t port = free_port();
  const std::string good = lbd_table() + app_block("web", port);
  const std::string next_line = std::to_string(std::count(good.begin(), good.end(), '\n') + 1);
  struct Case {
    std::string what, text, expected;
  };
  std::vector<Case> cases = {
      {"syntax error", good + "workers = = 3\n", "lbd.toml:" + next_line + ":11: syntax error"},
      {"unknown key", good + "workrs = 3\n", "lbd.toml:" + next_line + ": app 'web': key 'workrs' is not known"},
      {"wrong type", lbd_table() + "[[app]]\nname = \"web\"\ncommand = [\"x\"]\nlisten = \"127.0.0.1:1\"\nworkers = true\n",
       "lbd.toml:8: app 'web': key 'workers' must be"},
      {"missing command", lbd_table() + "[[app]]\nname = \"web\"\nlisten = \"127.0.0.1:1\"\n",
       "lbd.toml:4: app 'web': key 'command' is missing"},
      {"unknown user", lbd_table() + "[[app]]\nname = \"web\"\ncommand = [\"x\"]\nlisten = \"127.0.0.1:1\"\nuser = \"no-such-user\"\n",
       "lbd.toml:8: app 'web': key 'user'"},
  };
  if (geteuid() == 0) {  // started as root, an app runs as root only when the file says so
    cases.push_back({"root by default", lbd_table() + "[[app]]\nname = \"web\"\ncommand = [\"x\"]\nlisten = \"127.0.0.1:1\"\n",
                     "lbd.toml:4: app 'web': refusing to run x as root: set user = \"NAME\" (or allow_root = true)"});
  }
  for (const auto& c : cases) {
    const std::string file = write_config(c.text);
    CommandResult r = run_command({LBD_BINARY_PATH, "start", file}, after(10s));
    EXPECT_TRUE(r.exited(2)) << c.what << ": " << r.describe();
    EXPECT_NE(r.err.find(c.expected), std::string::npos) << c.what << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << c.what << ": one line: " << r.err;
    // `lbd start --check` (nginx -t) says the same without starting anything.
    CommandResult check = run_command({LBD_BINARY_PATH, "start", "--check", file}, after(10s));
    EXPECT_TRUE(check.exited(2)) << c.what << ": " << check.describe();
    EXPECT_EQ(check.err, r.err);
  }
  const std::string file = write_config(good);
  CommandResult check = run_command({LBD_BINARY_PATH, "start", "--check", file}, after(10s));
  EXPECT_TRUE(check.exited(0)) << check.describe();
  EXPECT_EQ(check.out, file + ": good: 1 app (web)\n");
  // Nothing started, for any of them. Each run printed its one line and no more, so it stopped
  // nothing it had started; and an app it had started and left would have outlived it and become
  // ours (the test is a subreaper). Nor did an app create its control socket or its log.
  expect_nothing_left_running(before);
  EXPECT_FALSE(std::filesystem::exists(dir_.path("run"))) << "no app's control socket";
  EXPECT_FALSE(std::filesystem::exists(dir_.path("logs"))) << "no app's log";
}

}  // namespace
}  // namespace lbd::test
