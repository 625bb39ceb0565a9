// Exec mode as root keeps its programs' NOTIFY_SOCKETs in /run/lbd/<app>.notify-XXXXXX. An lbd
// that takes over (after kill -9, or an upgrade) uses the directory its predecessor made, and the
// last lbd to stop removes it: however often the supervisor is replaced, none is left behind.
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "support/exec_test.h"

namespace lbd::test {
namespace {

class NotifyDirectoryTakeover : public ExecTest {
 protected:
  void SetUp() override { LBD_REQUIRE_ROOT("only root's exec mode keeps its notify sockets in /run/lbd"); }

  // The app's name is this test process's own: tests running side by side have their own.
  const std::string app_ = "notifytest" + std::to_string(getpid());

  std::vector<std::string> run_args() {
    return {"run",     "--name",    app_,   "--mode",         "bpf",  "-i", "1",
            "--listen", "127.0.0.1:0", "--control", socket_path(), "--log-dir", log_dir(),
            "--user",  "nobody",    "--",   SOCKET_ACTIVATED_SERVER_PATH};
  }

  // The app's notify directories in /run/lbd.
  std::vector<std::string> notify_dirs() const {
    std::vector<std::string> found;
    DIR* dir = opendir("/run/lbd");
    if (!dir) return found;
    const std::string prefix = app_ + ".notify-";
    while (dirent* entry = readdir(dir)) {
      if (std::string(entry->d_name).starts_with(prefix)) found.push_back(entry->d_name);
    }
    closedir(dir);
    return found;
  }
};

TEST_F(NotifyDirectoryTakeover, ASuccessorAfterKill9AndAnUpgradeUseTheSameDirectoryAndTheLastStopRemovesIt) {
  ASSERT_NO_FATAL_FAILURE(start(run_args()));
  const std::vector<std::string> first = notify_dirs();
  ASSERT_EQ(first.size(), 1u) << "the program's NOTIFY_SOCKET is in one directory";

  // kill -9: the successor adopts the program and its directory.
  const pid_t killed = lbd().pid();
  lbd().signal(SIGKILL);
  ASSERT_EQ(lbd().wait_exit(after(5s)), ExitStatus::signaled(SIGKILL));
  std::optional<LbdProcess> successor(std::in_place, run_args());
  ASSERT_TRUE(successor->wait_for_log("took over 1 processes from lbd pid " + std::to_string(killed), after(30s)))
      << successor->log();

  // A reload starts a program that says READY=1 on a socket in the adopted directory.
  CommandResult reload = lbctl({"reload"});
  ASSERT_TRUE(reload.exited(0)) << reload.describe() << successor->log();
  EXPECT_EQ(notify_dirs(), first) << "the successor made a directory of its own";

  // An upgrade hands the directory on rather than removing it under the new lbd.
  CommandResult upgrade = lbctl({"upgrade"});
  ASSERT_TRUE(upgrade.exited(0)) << upgrade.describe() << successor->log();
  reload = lbctl({"reload"});
  ASSERT_TRUE(reload.exited(0)) << reload.describe() << successor->log();
  EXPECT_EQ(notify_dirs(), first);

  successor.reset();  // SIGTERM to whichever lbd is in charge now, and wait for it to stop
  EXPECT_TRUE(notify_dirs().empty()) << "left behind in /run/lbd: " << testing::PrintToString(notify_dirs());
}

}  // namespace
}  // namespace lbd::test
