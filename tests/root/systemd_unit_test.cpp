// lbd under systemd: `lbd startup ARGS` prints a unit that systemd accepts (systemd-analyze
// verify), the unit shipped in examples/systemd/ is exactly what it prints for the README's
// command, and the capabilities the unit leaves lbd (CapabilityBoundingSet) are enough: lbd run
// with only those serves, reloads, upgrades itself and takes its workers over after a kill -9.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <sstream>

#include "support/control_test.h"

namespace lbd::test {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

std::string directory_of(const std::string& path) { return path.substr(0, path.rfind('/')); }

// systemd-analyze verify, which checks a unit as systemd would load it (and that its commands exist).
CommandResult verify_unit(const std::string& path) {
  return run_command({"/bin/sh", "-c", "exec systemd-analyze verify '" + path + "'"}, after(30s));
}

// `lbd startup ARGS...`, run from `/` as an operator installing a system service would.
CommandResult startup(const std::vector<std::string>& args) {
  std::string command = "cd / && exec " + std::string(LBD_BINARY_PATH) + " startup";
  for (const auto& arg : args) command += " '" + arg + "'";
  return run_command({"/bin/sh", "-c", command}, after(10s));
}

class SystemdUnit : public ControlTest {};

TEST_F(SystemdUnit, StartupPrintsAUnitSystemdAccepts) {
  CommandResult r = startup({"--listen", "127.0.0.1:8080", "--workers", "2"});
  ASSERT_TRUE(r.exited(0)) << r.describe();
  EXPECT_NE(r.out.find("ExecStart=" + std::string(LBD_BINARY_PATH) + " --listen 127.0.0.1:8080 --workers 2\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("Type=notify\n"), std::string::npos);
  EXPECT_NE(r.out.find("Restart=always\n"), std::string::npos);
  EXPECT_NE(r.err.find("save this as /etc/systemd/system/lbd.service"), std::string::npos) << r.err;
  write_file(dir_.path("lbd.service"), r.out);
  CommandResult verified = verify_unit(dir_.path("lbd.service"));
  EXPECT_TRUE(verified.exited(0)) << verified.describe();

  // An app of `lbd run`: its own unit name, reloaded by name, its words quoted for systemd.
  CommandResult app = startup({"run", "-i", "2", "--name", "web", "--user", "nobody", "--", "/bin/sh", "-c", "echo 100% $HOME"});
  ASSERT_TRUE(app.exited(0)) << app.describe();
  EXPECT_NE(app.out.find(" reload web\n"), std::string::npos) << app.out;
  EXPECT_NE(app.out.find(" -- /bin/sh -c \"echo 100%% $$HOME\"\n"), std::string::npos) << app.out;
  // Its programs run as nobody: counting their connections reads their /proc/PID/fd, which only
  // CAP_DAC_READ_SEARCH lets root do; lbd's own workers need no such look.
  EXPECT_NE(app.out.find(" CAP_SYS_PTRACE CAP_DAC_READ_SEARCH\n"), std::string::npos) << app.out;
  EXPECT_EQ(r.out.find("CAP_DAC_READ_SEARCH"), std::string::npos) << r.out;
  write_file(dir_.path("lbd-web.service"), app.out);
  verified = verify_unit(dir_.path("lbd-web.service"));
  EXPECT_TRUE(verified.exited(0)) << verified.describe();

  // systemd waits for a stop as long as lbd may take: the grace for balancers, then the drain.
  EXPECT_NE(r.out.find("TimeoutStopSec=30\n"), std::string::npos) << r.out;
  CommandResult behind = startup({"--agent", "0.0.0.0:9181", "--drain-grace", "15", "--shutdown-timeout", "5"});
  ASSERT_TRUE(behind.exited(0)) << behind.describe();
  EXPECT_NE(behind.out.find("TimeoutStopSec=40\n"), std::string::npos) << behind.out;

  CommandResult bad = startup({"--workers", "zero"});
  EXPECT_TRUE(bad.exited(2)) << bad.describe();
  EXPECT_TRUE(bad.out.empty()) << "no unit for a command line lbd would refuse";
}

TEST_F(SystemdUnit, TheShippedUnitIsWhatStartupPrints) {
  const std::string shipped = read_file(std::string(LBD_SOURCE_DIR) + "/examples/systemd/lbd.service");
  ASSERT_FALSE(shipped.empty());
  CommandResult r = startup({"--listen", "0.0.0.0:8080"});
  ASSERT_TRUE(r.exited(0)) << r.describe();
  // Installed (cmake --install), lbd and lbctl live in /usr/local/bin.
  const std::string installed = replace_all(r.out, directory_of(LBD_BINARY_PATH) + "/", "/usr/local/bin/");
  EXPECT_EQ(installed, shipped) << "regenerate it: lbd startup --listen 0.0.0.0:8080, paths in /usr/local/bin";
  // And it passes systemd's checks (with the binaries where this build has them).
  write_file(dir_.path("lbd.service"), replace_all(shipped, "/usr/local/bin/", directory_of(LBD_BINARY_PATH) + "/"));
  CommandResult verified = verify_unit(dir_.path("lbd.service"));
  EXPECT_TRUE(verified.exited(0)) << verified.describe();
}

// setpriv's spelling of the unit's CapabilityBoundingSet: "-all,+bpf,+perfmon,...".
std::string bounding_set_of(const std::string& unit) {
  std::smatch line;
  if (!std::regex_search(unit, line, std::regex("\nCapabilityBoundingSet=([^\n]*)\n"))) return {};
  std::string set = "-all";
  std::istringstream caps(line[1].str());
  for (std::string cap; caps >> cap;) {
    std::string name = cap.substr(4);  // CAP_
    for (char& c : name) c = static_cast<char>(tolower(c));
    set += ",+" + name;
  }
  return set;
}

TEST_F(SystemdUnit, TheUnitsCapabilitiesAreEnoughForEverythingLbdDoes) {
  LBD_REQUIRE_ROOT("runs lbd with the unit's capability bounding set");
  CommandResult r = startup({"--listen", "127.0.0.1:0"});
  ASSERT_TRUE(r.exited(0)) << r.describe();
  const std::string bounding = bounding_set_of(r.out);
  ASSERT_NE(bounding, "") << r.out;
  // A wrapper that runs lbd the way systemd would: no capability beyond the bounding set.
  const std::string wrapper = dir_.path("lbd-with-unit-caps");
  write_file(wrapper, "#!/bin/sh\nexec setpriv --bounding-set " + bounding + " --inh-caps -all " +
                          std::string(LBD_BINARY_PATH) + " \"$@\"\n");
  chmod(wrapper.c_str(), 0755);
  const std::vector<std::string> args = {"--mode", "bpf", "--workers", "2", "--listen", "127.0.0.1:0",
                                         "--control", socket_path()};
  ASSERT_NO_FATAL_FAILURE(start(args, wrapper));
  const pid_t supervisor = lbd().pid();
  EXPECT_EQ(read_file("/proc/" + std::to_string(supervisor) + "/status").find("CapBnd:\t000001ffffffffff"),
            std::string::npos)
      << "lbd runs with all capabilities: the wrapper did not limit it";
  EXPECT_EQ(fetch(address(), http_get("/", true), after(2s)).status(), 200);
  CommandResult reload = lbctl({"reload"});
  EXPECT_TRUE(reload.exited(0)) << reload.describe();
  CommandResult upgrade = lbctl({"upgrade"});
  EXPECT_TRUE(upgrade.exited(0)) << upgrade.describe();
  const auto workers = serving_pids();
  const pid_t upgraded = status()["lbd"].value("pid", 0);
  ASSERT_GT(upgraded, 0);
  kill(upgraded, SIGKILL);
  EXPECT_EQ(fetch(address(), http_get("/", true), after(2s)).status(), 200);
  LbdProcess successor(LbdProcess::Options{wrapper, args, {}});
  ASSERT_TRUE(successor.wait_for_log("took over 2 processes", after(15s))) << successor.log();
  EXPECT_EQ(serving_pids(), workers);
  EXPECT_EQ(lbd().count_log(kTroubleInLog) + successor.count_log(kTroubleInLog), 0u) << lbd().log() << successor.log();
}

}  // namespace
}  // namespace lbd::test
