// Flags whose effect is only seen from outside lbd, checked the way an operator would: --cpus
// (Cpus_allowed_list of each worker in /proc), --backlog (each listener's accept queue limit, the
// Send-Q `ss -lt` shows), and `lbd run`'s --env and --cwd (what the program itself reports). In
// --mode reuseport (no root). Pinning with the default CPUs and --no-pin: workers_test.cpp.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "support/exec_test.h"

namespace lbd::test {
namespace {

// "Cpus_allowed_list:\t1" in /proc/PID/status: "1", "0-1" ...; empty if the process is gone.
std::string cpus_allowed_list(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("Cpus_allowed_list:", 0) == 0) {
      std::istringstream value(line.substr(18));
      std::string list;
      value >> list;
      return list;
    }
  }
  return {};
}

// The Send-Q of every TCP socket listening on `port`, as `ss -ltn` prints it: for a listener,
// its backlog (the accept queue's limit).
std::vector<int> listen_backlogs(uint16_t port, std::string& output) {
  CommandResult r = run_command({"/bin/ss", "-Hltn", "sport = :" + std::to_string(port)}, after(10s));
  output = r.describe();
  std::vector<int> backlogs;
  if (!r.exited(0)) return backlogs;
  for (const auto& line : r.out_lines()) {
    std::istringstream fields(line);  // State Recv-Q Send-Q Local-Address:Port Peer-Address:Port
    std::string state;
    int recv_q = 0, send_q = 0;
    if (fields >> state >> recv_q >> send_q && state == "LISTEN") backlogs.push_back(send_q);
  }
  return backlogs;
}

class ServingFlags : public ExecTest {
 protected:
  // The last CPU this test may use, when it may use two or more: pinning every worker there
  // differs from the default (worker i on the i-th allowed CPU).
  static int last_of_two_or_more_cpus() {
    const std::vector<int> allowed = process_cpus(0);
    return allowed.size() >= 2 ? allowed.back() : -1;
  }
};

TEST_F(ServingFlags, CpusPinsEveryWorkerToTheCpusGiven) {
  const int cpu = last_of_two_or_more_cpus();
  if (cpu < 0) GTEST_SKIP() << "needs 2 CPUs: on one, every worker runs there whatever --cpus says";
  ASSERT_NO_FATAL_FAILURE(start(lbd_flags("reuseport", 3, {"--cpus", std::to_string(cpu)})));
  for (unsigned slot = 0; slot < 3; slot++) {
    const pid_t pid = lbd().worker_pid(slot);
    ASSERT_GT(pid, 0) << "worker " << slot;
    EXPECT_EQ(cpus_allowed_list(pid), std::to_string(cpu)) << "worker " << slot;
    EXPECT_EQ(lbd().count_log("worker " + std::to_string(slot) + " ready: pid " + std::to_string(pid) + ", cpu " +
                              std::to_string(cpu) + "$"),
              1u)
        << lbd().log();
  }
  for (int i = 0; i < 10; i++) EXPECT_EQ(fetch(address(), http_get("/", true), after(2s)).status(), 200);
}

TEST_F(ServingFlags, WorkersAutoIsOnePerCpuGiven) {
  const int cpu = last_of_two_or_more_cpus();
  if (cpu < 0) GTEST_SKIP() << "needs 2 CPUs: on one, auto is one worker whatever --cpus says";
  ASSERT_NO_FATAL_FAILURE(
      start({"--mode", "reuseport", "--workers", "auto", "--cpus", std::to_string(cpu), "--listen", "127.0.0.1:0"}));
  EXPECT_EQ(ready_.workers, 1u);
  EXPECT_EQ(cpus_allowed_list(lbd().worker_pid(0)), std::to_string(cpu));
}

TEST_F(ServingFlags, CpusPinsAnLbdRunProgramToo) {
  const int cpu = last_of_two_or_more_cpus();
  if (cpu < 0) GTEST_SKIP() << "needs 2 CPUs: on one, every program runs there whatever --cpus says";
  ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "reuseport", "-i", "2", "--wait-ready", "--cpus", std::to_string(cpu)},
                                        {SOCKET_ACTIVATED_SERVER_PATH}));
  const auto pids = serving_pids();
  ASSERT_EQ(pids.size(), 2u);
  for (const auto& [slot, pid] : pids) EXPECT_EQ(cpus_allowed_list(pid), std::to_string(cpu)) << "worker " << slot;
}

TEST_F(ServingFlags, BacklogIsEveryListenersAcceptQueueLimit) {
  // Not the default (4096), and below net.core.somaxconn, which would cap it.
  ASSERT_NO_FATAL_FAILURE(start(lbd_flags("reuseport", 2, {"--backlog", "37"})));
  std::string output;
  EXPECT_EQ(listen_backlogs(address().port(), output), std::vector<int>(2, 37))
      << "one listener per worker, each with a backlog of 37; ss said: " << output;
  for (int i = 0; i < 10; i++) EXPECT_EQ(fetch(address(), http_get("/", true), after(2s)).status(), 200);
}

TEST_F(ServingFlags, BacklogIsTheSharedListenersToo) {
  ASSERT_NO_FATAL_FAILURE(start(lbd_flags("shared", 2, {"--backlog", "37"})));
  std::string output;
  EXPECT_EQ(listen_backlogs(address().port(), output), std::vector<int>{37}) << "ss said: " << output;
}

TEST_F(ServingFlags, RunGivesTheProgramItsEnvAndItsWorkingDirectory) {
  // The program's directory, reachable by the user it runs as (nobody, as root), with a script
  // that reports what it sees and a file it reads by a relative path.
  const std::string cwd = dir_.path("app");
  ASSERT_EQ(mkdir(cwd.c_str(), 0755), 0);
  std::ofstream(cwd + "/marker") << "in the app directory\n";
  const std::string script = cwd + "/report.sh";
  std::ofstream(script) << "#!/bin/sh\n"
                           "echo \"greeting=$GREETING\"\n"
                           "echo \"with-equals=$WITH_EQUALS\"\n"
                           "echo \"overridden=$LBD_TEST_OVERRIDDEN\"\n"
                           "echo \"inherited=$LBD_TEST_INHERITED\"\n"
                           "echo \"cwd=$(pwd -P)\"\n"
                           "echo \"marker=$(cat marker)\"\n"
                           "exec sleep 600\n";
  ASSERT_EQ(chmod(script.c_str(), 0755), 0);
  // lbd's own environment reaches the program, and --env wins over it.
  std::vector<std::string> args = {"LBD_TEST_OVERRIDDEN=from lbd's environment", "LBD_TEST_INHERITED=from lbd's environment",
                                   LBD_BINARY_PATH};
  for (const auto& arg : run_args({"--mode", "reuseport", "-i", "2", "--ready-delay", "0.1", "--cwd", cwd, "--env",
                                   "GREETING=hello there", "--env", "WITH_EQUALS=a=b c", "--env",
                                   "LBD_TEST_OVERRIDDEN=from --env"},
                                  {"./report.sh"}, socket_path(), log_dir())) {
    args.push_back(arg);
  }
  lbd_.emplace(LbdProcess::Options{"/usr/bin/env", args, {}});
  auto ready = lbd().wait_ready(after(10s));
  ASSERT_TRUE(ready) << lbd().log();
  ready_ = *ready;

  for (unsigned slot = 0; slot < 2; slot++) {
    const std::string out = " app " + std::to_string(slot) + " out ";
    for (const std::string& expected :
         {out + "greeting=hello there", out + "with-equals=a=b c", out + "overridden=from --env",
          out + "inherited=from lbd's environment", out + "cwd=" + cwd, out + "marker=in the app directory"}) {
      EXPECT_TRUE(eventually(after(5s), [&] {
        for (const auto& record : log_records()) {
          if (record.ends_with(expected)) return true;
        }
        return false;
      })) << "no record ending '" << expected << "':\n" << testing::PrintToString(log_records());
    }
  }
}

}  // namespace
}  // namespace lbd::test
