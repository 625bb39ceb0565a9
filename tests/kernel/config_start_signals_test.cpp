// `lbd start FILE.toml` after it is up (README, "Any program"): SIGHUP reloads every app (each
// app's workers are replaced by fresh ones, its supervisor stays), and an app whose own lbd keeps
// dying is started again only until its 5th death within a minute: then it is left down, the other
// apps keep serving, and lbd start exits 1 when it stops. --mode reuseport here (no root).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "net/listener.h"
#include "support/free_port.h"
#include "support/http_client.h"
#include "support/lbctl.h"
#include "support/lbd_process.h"
#include "support/temp_dir.h"

namespace lbd::test {
namespace {

using nlohmann::json;

class ConfigStartSignals : public ::testing::Test {
 protected:
  // A port for an app of the config file, which names its ports (support/free_port.h).
  uint16_t free_port() { return ports_.pick(); }

  // Two apps, web and api, of two socket-activated workers each.
  std::string two_apps(uint16_t web_port, uint16_t api_port) {
    std::string text = "[lbd]\ncontrol_dir = \"" + dir_.path("run") + "\"\nlog_dir = \"" + dir_.path("logs") + "\"\n";
    for (auto [name, port] : {std::pair{"web", web_port}, {"api", api_port}}) {
      text += "[[app]]\nname = \"" + std::string(name) + "\"\ncommand = [\"" + SOCKET_ACTIVATED_SERVER_PATH +
              "\"]\nlisten = \"127.0.0.1:" + std::to_string(port) + "\"\nworkers = 2\nmode = \"reuseport\"\n" +
              "wait_ready = true\n" + std::string(geteuid() == 0 ? "user = \"nobody\"\n" : "");
    }
    const std::string path = dir_.path("lbd.toml");
    std::ofstream(path) << text;
    return path;
  }

  CommandResult lbctl(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {LBCTL_PATH, "--control-dir", dir_.path("run")};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv, after(30s));
  }

  // `lbctl status APP --json`, or null if lbctl fails (the app's lbd is not running).
  json status_of(const std::string& app) {
    CommandResult r = lbctl({"status", app, "--json"});
    if (!r.exited(0)) return nullptr;
    return json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  }

  // The app's supervisor pid, and its active workers' pids in slot order.
  pid_t supervisor_of(const std::string& app) {
    const json s = status_of(app);
    return s.is_object() ? s["lbd"].value("pid", 0) : 0;
  }
  std::vector<pid_t> workers_of(const std::string& app) {
    std::vector<pid_t> pids;
    const json s = status_of(app);
    if (!s.is_object()) return pids;
    for (const auto& w : s["workers"]) {
      if (w.value("state", "") == "active") pids.push_back(w.value("pid", 0));
    }
    return pids;
  }

  bool serves(uint16_t port) {
    HttpResult r = fetch(net::Address::parse("127.0.0.1:" + std::to_string(port)), http_get("/", true), after(5s));
    return r.ok() && r.response.body.starts_with("hello from worker ");
  }

  TempDir dir_;
  FreePorts ports_;
};

TEST_F(ConfigStartSignals, SighupReloadsEveryApp) {
  const uint16_t web_port = free_port(), api_port = free_port();
  LbdProcess lbd({"start", two_apps(web_port, api_port)});
  ASSERT_TRUE(lbd.wait_for_log("\\[lbd\\] ready: 2 apps$", after(20s))) << lbd.log();
  struct Before {
    pid_t supervisor;
    std::vector<pid_t> workers;
  };
  std::map<std::string, Before> before;
  for (const std::string app : {"web", "api"}) {
    before[app] = {supervisor_of(app), workers_of(app)};
    ASSERT_GT(before[app].supervisor, 0) << app;
    ASSERT_EQ(before[app].workers.size(), 2u) << app;
  }

  lbd.signal(SIGHUP);
  for (const std::string app : {"web", "api"}) {
    json s;
    ASSERT_TRUE(eventually(after(30s), [&] {
      s = status_of(app);
      return s.is_object() && s["lbd"].value("reloads", -1) == 1 && s["lbd"]["operation"].is_null();
    }, 50ms)) << "app " << app << " did not complete a reload: " << s.dump(2) << "\n" << lbd.log();
    // Every worker was replaced by a fresh one; the app's own lbd stayed (a reload, not a restart).
    const auto now = workers_of(app);
    ASSERT_EQ(now.size(), 2u) << app << ": " << s.dump(2);
    for (size_t slot = 0; slot < 2; slot++) {
      EXPECT_NE(now[slot], before[app].workers[slot]) << "app " << app << " slot " << slot << " was not replaced";
    }
    EXPECT_EQ(supervisor_of(app), before[app].supervisor) << "app " << app;
  }
  EXPECT_TRUE(serves(web_port));
  EXPECT_TRUE(serves(api_port));
  EXPECT_EQ(lbd.count_log("app (web|api) \\(pid [0-9]+\\)"), 0u) << "no app's lbd ended: " << lbd.log();

  lbd.signal(SIGTERM);
  EXPECT_EQ(lbd.wait_exit(after(20s)), ExitStatus::exited(0)) << lbd.log();
}

TEST_F(ConfigStartSignals, AnAppWhoseLbdDiesFiveTimesInAMinuteIsLeftDownAndTheOthersServe) {
  const uint16_t web_port = free_port(), api_port = free_port();
  LbdProcess lbd({"start", two_apps(web_port, api_port)});
  ASSERT_TRUE(lbd.wait_for_log("\\[lbd\\] ready: 2 apps$", after(20s))) << lbd.log();
  const pid_t api = supervisor_of("api");
  ASSERT_GT(api, 0);
  const std::vector<pid_t> web_workers = workers_of("web");
  ASSERT_EQ(web_workers.size(), 2u);
  // The web workers outlive their lbd each time (a successor takes them over); once web is
  // left down nothing will stop them, so the test does.
  struct KillAtEnd {
    std::vector<pid_t> pids;
    ~KillAtEnd() {
      for (pid_t pid : pids) {
        if (kill(pid, SIGKILL) == 0) waitpid(pid, nullptr, 0);  // ours to reap: the test is a subreaper
      }
    }
  } web_workers_at_end{web_workers};

  // Web's lbd is killed (the OOM killer, say) as soon as each successor has taken over. The first
  // four deaths are each followed by a restart, sooner than the 60 s window closes (500 ms, then
  // doubling).
  for (int death = 1; death <= 5; death++) {
    pid_t web = 0;
    ASSERT_TRUE(eventually(after(30s), [&] {
      web = supervisor_of("web");
      return web > 0 && workers_of("web") == web_workers;
    }, 50ms)) << "web's lbd before death " << death << " never served\n" << lbd.log();
    const size_t from = lbd.log_lines();
    ASSERT_EQ(kill(web, SIGKILL), 0);
    ASSERT_TRUE(lbd.wait_for_log("app web \\(pid " + std::to_string(web) + "\\) was killed by signal 9", after(10s),
                                 from))
        << lbd.log();
    if (death < 5) {
      ASSERT_TRUE(lbd.wait_for_log("app web: restarting it in [0-9]+ ms", after(10s), from)) << lbd.log();
      ASSERT_TRUE(lbd.wait_for_log("app web ready again", after(30s), from)) << lbd.log();
    }
  }
  // The fifth: given up, said once, and nothing starts it again.
  const std::string given_up = "app web: died 5 times within a minute; not restarting it; the other apps keep running";
  ASSERT_TRUE(lbd.wait_for_log(given_up, after(10s))) << lbd.log();
  // The other app was left alone and serves on; lbd start keeps running for it.
  EXPECT_EQ(supervisor_of("api"), api);
  EXPECT_TRUE(serves(api_port));
  EXPECT_EQ(lbd.wait_exit(after(1s)), ExitStatus::running()) << lbd.log();
  EXPECT_TRUE(status_of("web").is_null()) << "an lbd of web answers: " << status_of("web").dump(2);

  // An app was lost: lbd start says so with its exit status when it stops.
  lbd.signal(SIGTERM);
  EXPECT_EQ(lbd.wait_exit(after(20s)), ExitStatus::exited(1)) << lbd.log();
  EXPECT_EQ(lbd.count_log("app api \\(pid " + std::to_string(api) + "\\) exited with status 0"), 1u) << lbd.log();
  EXPECT_EQ(lbd.count_log("app web: restarting it in"), 4u) << "web was started again after it was given up:\n"
                                                            << lbd.log();
  EXPECT_EQ(lbd.count_log(given_up), 1u) << lbd.log();
}

}  // namespace
}  // namespace lbd::test
