// Least privilege, as an operator checks it: lbd started as root, then `ps` and /proc/PID/status.
// lbd's own workers and every exec-mode program run as an unprivileged user with no capabilities
// at all (effective, permitted, bounding), NoNewPrivs set, and under the steering guard (a seccomp
// filter); a program that tries to change the steering of its reuseport group gets EPERM and the
// steering holds. Only the supervisor keeps what it needs. (docs/ARCHITECTURE.md, "Privileges")
#include <gtest/gtest.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>

#include <fstream>
#include <future>
#include <map>
#include <sstream>

#include "support/exec_test.h"
#include "support/lbctl.h"

namespace lbd::test {
namespace {

// /proc/PID/status as name -> value ("Uid" -> "65534\t65534\t65534\t65534").
std::map<std::string, std::string> proc_status(pid_t pid) {
  std::map<std::string, std::string> fields;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    fields[line.substr(0, colon)] = value;
  }
  return fields;
}

std::string all_four(unsigned id) {
  const std::string n = std::to_string(id);
  return n + "\t" + n + "\t" + n + "\t" + n;
}

// What every worker and program of lbd must look like: the user and group asked for (real,
// effective, saved and filesystem ids), no capability in any set, no way to gain one, and a filter.
void expect_confined(pid_t pid, uid_t uid, gid_t gid) {
  SCOPED_TRACE("pid " + std::to_string(pid));
  auto status = proc_status(pid);
  ASSERT_FALSE(status.empty()) << "no /proc/" << pid << "/status";
  EXPECT_EQ(status["Uid"], all_four(uid));
  EXPECT_EQ(status["Gid"], all_four(gid));
  for (const char* set : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
    EXPECT_EQ(status[set], "0000000000000000") << set;
  }
  EXPECT_EQ(status["NoNewPrivs"], "1");
  EXPECT_EQ(status["Seccomp"], "2");  // SECCOMP_MODE_FILTER
}

struct Account {
  uid_t uid;
  gid_t gid;
};

Account account(const char* user) {
  const passwd* pw = getpwnam(user);
  return pw ? Account{pw->pw_uid, pw->pw_gid} : Account{0, 0};
}

gid_t group_id(const char* name) {
  const group* gr = getgrnam(name);
  return gr ? gr->gr_gid : 0;
}

class Privileges : public ExecTest {
 protected:
  void SetUp() override { LBD_REQUIRE_ROOT("starts lbd as root and checks what its children run as"); }
};

TEST_F(Privileges, WorkersRunAsNobodyWithNothingByDefault) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("bpf", 2)));
  const gid_t nogroup = group_id("nogroup") ? group_id("nogroup") : account("nobody").gid;
  const auto pids = serving_pids();
  ASSERT_EQ(pids.size(), 2u);
  for (const auto& [slot, pid] : pids) expect_confined(pid, account("nobody").uid, nogroup);
  EXPECT_EQ(lbd().count_log("workers run as nobody:nogroup \\(uid 65534, gid 65534\\), with no capabilities"), 1u)
      << lbd().log();
  // The supervisor keeps what it needs (it loaded the steering program; it can reload).
  EXPECT_NE(proc_status(lbd().pid())["CapEff"], "0000000000000000");
  EXPECT_EQ(fetch(address(), http_get("/", true), after(2s)).status(), 200);
  CommandResult reload = lbctl({"reload"});
  ASSERT_TRUE(reload.exited(0)) << reload.describe();
  for (const auto& [slot, pid] : serving_pids()) expect_confined(pid, account("nobody").uid, nogroup);
}

TEST_F(Privileges, WorkersRunAsTheUserNamed) {
  const Account daemon = account("daemon");
  ASSERT_NE(daemon.uid, 0u) << "Debian has a 'daemon' user";
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 2, {"--user", "daemon"})));
  for (const auto& [slot, pid] : serving_pids()) expect_confined(pid, daemon.uid, daemon.gid);
  EXPECT_EQ(fetch(address(), http_get("/", true), after(2s)).status(), 200);
}

TEST_F(Privileges, AProgramRunsAsItsUserAndItsLogIsForItsGroupOnly) {
  ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "bpf", "-i", "2", "--wait-ready"}, {SOCKET_ACTIVATED_SERVER_PATH}));
  const gid_t nogroup = group_id("nogroup") ? group_id("nogroup") : account("nobody").gid;
  const auto pids = serving_pids();
  ASSERT_EQ(pids.size(), 2u);
  for (const auto& [slot, pid] : pids) expect_confined(pid, account("nobody").uid, nogroup);
  EXPECT_EQ(fetch(address(), http_get("/", true), after(2s)).status(), 200);
  struct stat dir{}, file{};
  ASSERT_EQ(stat(log_dir().c_str(), &dir), 0);
  ASSERT_EQ(stat(log_file().c_str(), &file), 0);
  EXPECT_EQ(dir.st_mode & 07777, 0750u);
  EXPECT_EQ(dir.st_gid, nogroup);
  EXPECT_EQ(file.st_mode & 07777, 0640u);
  EXPECT_EQ(file.st_gid, nogroup);
}

TEST_F(Privileges, AsRootAProgramNeedsAUserOrAllowRoot) {
  CommandResult refused = run_command({LBD_BINARY_PATH, "run", "--listen", "127.0.0.1:0", "--control", socket_path(),
                                       "--log-dir", log_dir(), "--", "/bin/true"},
                                      after(10s));
  EXPECT_TRUE(refused.exited(2)) << refused.describe();
  EXPECT_EQ(refused.err,
            "lbd: refusing to run /bin/true as root: name a user with --user USER (or pass --allow-root) (see lbd "
            "--help)\n");
  EXPECT_TRUE(refused.out.empty()) << refused.out;

  // --allow-root: the operator's choice, said in the log; the program keeps root's capabilities
  // but not the power to change the steering.
  ASSERT_NO_FATAL_FAILURE(
      start_program({"--mode", "bpf", "-i", "1", "--wait-ready", "--allow-root"}, {SOCKET_ACTIVATED_SERVER_PATH}));
  const auto pids = serving_pids();
  ASSERT_EQ(pids.size(), 1u);
  auto status = proc_status(pids.begin()->second);
  EXPECT_EQ(status["Uid"], all_four(0));
  EXPECT_EQ(status["Seccomp"], "2");
  EXPECT_EQ(lbd().count_log("the program runs as root \\(--allow-root\\)"), 1u) << lbd().log();
}

// A program its user cannot reach is one line at start and at a reload, not a worker that exits
// 127 until lbd gives up on it: root may open the file, the program's user may not.
TEST_F(Privileges, AProgramItsUserCannotExecuteIsRefusedAtStartAndAtAReload) {
  const std::string folder = dir_.path("private");
  ASSERT_EQ(mkdir(folder.c_str(), 0755), 0);
  const std::string program = folder + "/server";
  copy_executable(SOCKET_ACTIVATED_SERVER_PATH, program);

  ASSERT_EQ(chmod(folder.c_str(), 0700), 0);  // root's only
  CommandResult refused = run_command({LBD_BINARY_PATH, "run", "--listen", "127.0.0.1:0", "--control", socket_path(),
                                       "--log-dir", log_dir(), "--user", "nobody", "--", program},
                                      after(10s));
  EXPECT_TRUE(refused.exited(1)) << refused.describe();
  EXPECT_NE(refused.err.find("cannot execute " + program + " as nobody (the file, or a folder on its path, does "
                             "not let that user in): Permission denied\n"),
            std::string::npos)
      << refused.describe();
  EXPECT_EQ(refused.err.find("status 127"), std::string::npos) << "it was started anyway: " << refused.describe();
  // --cwd, too: the program starts there.
  refused = run_command({LBD_BINARY_PATH, "run", "--listen", "127.0.0.1:0", "--control", socket_path(), "--log-dir",
                         log_dir(), "--user", "nobody", "--cwd", folder, "--", SOCKET_ACTIVATED_SERVER_PATH},
                        after(10s));
  EXPECT_TRUE(refused.exited(1)) << refused.describe();
  EXPECT_NE(refused.err.find("--cwd " + folder + ": nobody cannot enter it: Permission denied"), std::string::npos)
      << refused.describe();

  // Made unreachable while it runs: the reload fails with the reason, the old program serves on.
  ASSERT_EQ(chmod(folder.c_str(), 0755), 0);
  ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "reuseport", "-i", "1"}, {program}));
  const auto before = serving_pids();
  ASSERT_EQ(before.size(), 1u);
  ASSERT_EQ(chmod(program.c_str(), 0700), 0);
  CommandResult reload = lbctl({"reload"}, after(20s));
  EXPECT_TRUE(reload.exited(1)) << reload.describe();
  EXPECT_NE(reload.err.find("cannot execute " + program + " as nobody"), std::string::npos) << reload.describe();
  EXPECT_EQ(serving_pids(), before) << "the old program keeps serving";
  EXPECT_EQ(fetch(address(), http_get("/", true), after(5s)).status(), 200);
}

TEST_F(Privileges, AProgramCannotChangeTheSteeringOfItsGroup) {
  // Round-robin is exact while lbd's program steers: 50 and 50 of 100. A detach (the kernel's
  // hash), or the classic BPF program the tamperer attaches (everything to one socket), would
  // break that.
  ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "bpf", "--policy", "rr", "-i", "2", "--wait-ready"},
                                        {STEERING_TAMPERER_PATH, SOCKET_ACTIVATED_SERVER_PATH}));
  const std::string refused =
      "tamper: detach=EPERM attach_cbpf=EPERM attach_ebpf=EPERM detach_high_bits=EPERM io_uring_setup=EPERM "
      "rcvbuf=OK";
  ASSERT_TRUE(eventually(after(10s), [&] { return count_records(refused) == 2; }))
      << "each program's attempts, as it printed them:\n" << [&] {
           std::string text;
           for (const auto& line : log_records()) text += line + "\n";
           return text;
         }();
  std::map<int, int> per_worker;
  for (int i = 0; i < 100; i++) per_worker[fetch(address(), http_get("/", true), after(5s)).worker()]++;
  EXPECT_EQ(per_worker, (std::map<int, int>{{0, 50}, {1, 50}}));
}

TEST_F(Privileges, AReloadRunsOnlyABuildRootOwnsAndARestartTheOneItTrusted) {
  // lbd from a copy, so the test can replace the file at its path.
  const std::string binary = dir_.path("lbd");
  copy_executable(LBD_BINARY_PATH, binary);
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("bpf", 2, {"--shutdown-timeout", "5"}), binary));
  const auto before = serving_pids();
  ASSERT_EQ(before.size(), 2u);

  // Another user's file at lbd's path (anyone who may write the folder could put one there).
  replace_executable_with_file(binary, LBD_BINARY_PATH);
  ASSERT_EQ(chown(binary.c_str(), account("nobody").uid, account("nobody").gid), 0);
  CommandResult refused = lbctl({"reload"});
  EXPECT_TRUE(refused.exited(1)) << "lbctl exits 1 when lbd refuses: " << refused.describe();
  EXPECT_NE(refused.err.find("reload refused: " + binary + " is owned by uid " +
                             std::to_string(account("nobody").uid) + ", not root"),
            std::string::npos)
      << refused.describe();
  EXPECT_EQ(std::count(refused.err.begin(), refused.err.end(), '\n'), 1) << refused.err;
  EXPECT_EQ(serving_pids(), before) << "the old workers keep serving";

  // Root's, but writable by every user: refused too.
  ASSERT_EQ(chown(binary.c_str(), 0, 0), 0);
  ASSERT_EQ(chmod(binary.c_str(), 0757), 0);
  refused = lbctl({"reload"});
  EXPECT_TRUE(refused.exited(1)) << refused.describe();
  EXPECT_NE(refused.err.find("is writable by every user"), std::string::npos) << refused.describe();
  EXPECT_EQ(serving_pids(), before);

  // A crash restart runs the build lbd trusted at start (its file is gone from the path now:
  // the kernel names it "(deleted)"), not what is at the path.
  replace_executable_with_text(binary, "#!/bin/sh\nexit 1\n");
  const pid_t victim = before.at(0);
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  const pid_t restarted = lbd().wait_for_worker_restart(0, victim, after(10s));
  ASSERT_GT(restarted, 0) << lbd().log();
  char exe[4096] = {};
  ASSERT_GT(readlink(("/proc/" + std::to_string(restarted) + "/exe").c_str(), exe, sizeof(exe) - 1), 0);
  EXPECT_EQ(std::string(exe), binary + " (deleted)");
  EXPECT_TRUE(eventually(after(5s), [&] { return serving_pids().size() == 2; }));
  for (int i = 0; i < 20; i++) EXPECT_EQ(fetch(address(), http_get("/", true), after(2s)).status(), 200);
}

TEST_F(Privileges, ANotificationFromOutsideTheProgramChangesNothing) {
  // The program's flags come from a file, so that its reload can start a build that never says
  // READY=1: only a forged notification could then make the reload go through.
  const std::string flags = dir_.path("flags");
  std::ofstream(flags) << "";
  const std::string script = dir_.path("server.sh");
  std::ofstream(script) << "#!/bin/sh\nexec " << SOCKET_ACTIVATED_SERVER_PATH << " $(cat " << flags << ")\n";
  ASSERT_EQ(chmod(script.c_str(), 0755), 0);
  ASSERT_NO_FATAL_FAILURE(
      start_program({"--mode", "reuseport", "-i", "1", "--wait-ready", "--ready-timeout", "4"}, {script}));
  const auto before = serving_pids();
  std::ofstream(flags) << "--no-notify";

  auto reload = std::async(std::launch::async, [&] { return lbctl({"reload"}, after(20s)); });
  pid_t starting = 0;
  ASSERT_TRUE(eventually(after(10s), [&] {
    for (const auto& w : status().value("workers", nlohmann::json::array())) {
      if (w.value("state", "") == "starting" && w.contains("pid") && w["pid"].is_number()) starting = w["pid"];
    }
    return starting > 0;
  }));
  std::string notify_socket;
  ASSERT_TRUE(eventually(after(5s), [&] {
    std::ifstream in("/proc/" + std::to_string(starting) + "/environ");
    for (std::string entry; std::getline(in, entry, '\0');) {
      if (entry.rfind("NOTIFY_SOCKET=", 0) == 0) notify_socket = entry.substr(14);
    }
    return !notify_socket.empty();
  }));
  EXPECT_EQ(notify_socket.rfind("/run/lbd/", 0), 0u) << notify_socket;
  auto send_ready_as = [&](const std::string& user, const std::string& group) {
    return run_command({"/usr/bin/setpriv", "--reuid=" + user, "--regid=" + group, "--clear-groups", "/usr/bin/python3", "-c",
                        "import socket, sys\n"
                        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
                        "s.sendto(b'READY=1', sys.argv[1])",
                        notify_socket},
                       after(10s));
  };
  // Another local user cannot even reach the socket.
  CommandResult other_user = send_ready_as("daemon", "daemon");
  EXPECT_FALSE(other_user.exited(0)) << other_user.describe();
  EXPECT_NE(other_user.err.find("PermissionError"), std::string::npos) << other_user.describe();
  // The program's own user, from outside its process tree: delivered, and not believed.
  const std::string nogroup = group_id("nogroup") ? "nogroup" : "nobody";
  CommandResult same_user = send_ready_as("nobody", nogroup);
  EXPECT_TRUE(same_user.exited(0)) << same_user.describe();

  CommandResult reloaded = reload.get();
  // lbctl's documented failure: exit 1 (a forged READY=1 would have made it 0).
  EXPECT_TRUE(reloaded.exited(1)) << "a forged READY=1 made a never-ready build serve: " << reloaded.describe();
  EXPECT_EQ(serving_pids(), before) << "the old program keeps serving";
  EXPECT_EQ(fetch(address(), http_get("/", true), after(2s)).status(), 200);
  EXPECT_EQ(lbd().count_log("ignored a notification from pid [0-9]+ \\(uid 65534\\): only the program's own processes count"),
            1u)
      << lbd().log();
}

}  // namespace
}  // namespace lbd::test
