// Who may control lbd: only root or the uid lbd runs as. Two layers: the socket file is
// mode 0600, so others cannot even connect; and lbd checks the peer's credentials (SO_PEERCRED),
// so a socket opened up by mistake still refuses them. Either way lbctl exits 1 with
// "permission denied" and lbd goes on serving. Needs root to switch uids.
#include <gtest/gtest.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <cstring>

#include "support/control_test.h"

namespace lbd::test {
namespace {

// connect() to `socket` as `who`, in a child process; returns the errno (0: connected).
int connect_as(const Credentials& who, const std::string& socket) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket.c_str(), sizeof(addr.sun_path) - 1);
  const pid_t pid = fork();
  if (pid == 0) {
    if (setgroups(0, nullptr) != 0 || setgid(who.second) != 0 || setuid(who.first) != 0) _exit(255);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) _exit(254);
    _exit(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 ? 0 : errno);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class ControlPermissions : public ControlTest {
 protected:
  void SetUp() override {
    LBD_REQUIRE_ROOT("runs clients (and lbd) as another user");
    auto user = nobody();
    if (!user) GTEST_SKIP() << "no 'nobody' user on this system";
    nobody_ = *user;
    // The directory must let others reach the socket: then the socket's own mode is what
    // refuses them.
    ASSERT_EQ(chmod(dir_.path().c_str(), 0755), 0);
  }

  void expect_still_serving(const std::map<unsigned, pid_t>& pids) {
    CommandResult s = lbctl({"status"}, after(10s));
    EXPECT_TRUE(s.exited(0)) << s.describe();
    EXPECT_EQ(serving_pids(), pids);
    EXPECT_EQ(fetch(address(), http_get("/"), after(2s)).status(), 200);
  }

  Credentials nobody_;
};

TEST_F(ControlPermissions, SocketIsOwnerOnlySoOtherUsersCannotConnect) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 2)));
  const auto pids = serving_pids();
  struct stat st{};
  ASSERT_EQ(stat(socket_path().c_str(), &st), 0) << strerror(errno);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, 0u);

  EXPECT_EQ(connect_as(nobody_, socket_path()), EACCES);
  CommandResult r = run_lbctl(socket_path(), {"drain", "0"}, after(10s), nobody_);
  EXPECT_TRUE(r.exited(1)) << r.describe();
  EXPECT_TRUE(r.err.starts_with("lbctl: permission denied")) << r.describe();
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.describe();
  expect_still_serving(pids);
}

TEST_F(ControlPermissions, PeerCredentialsAreCheckedEvenOnAnOpenSocket) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 2)));
  const auto pids = serving_pids();
  ASSERT_EQ(chmod(socket_path().c_str(), 0666), 0);  // an operator's mistake

  // Several tries: lbd refuses the moment it accepts, so lbctl's request may meet a closed
  // socket; it must still report lbd's reason, every time.
  constexpr int kAttempts = 30;
  int wrong = 0;
  for (int attempt = 0; attempt < kAttempts; attempt++) {
    CommandResult r = run_lbctl(socket_path(), {attempt % 2 ? "stop" : "status"}, after(10s), nobody_);
    const bool right = r.exited(1) && r.err == "lbctl: permission denied: only root or uid 0 may control this lbd\n";
    if (!right && wrong++ == 0) ADD_FAILURE() << "attempt " << attempt << ": " << r.describe();
  }
  EXPECT_EQ(wrong, 0) << "of " << kAttempts << " refused lbctl runs, " << wrong << " did not say 'permission denied'";
  EXPECT_TRUE(lbd().wait_for_log("refused a client with uid " + std::to_string(nobody_.first), after(2s)));
  expect_still_serving(pids);
}

TEST_F(ControlPermissions, LbdsOwnUserMayControlIt) {
  ASSERT_EQ(chown(dir_.path().c_str(), nobody_.first, nobody_.second), 0);
  auto args = lbd_flags("reuseport", 1, {"--control", socket_path()});
  lbd_.emplace(LbdProcess::Options{LBD_BINARY_PATH, args, nobody_});
  auto ready = lbd_->wait_ready(after(10s));
  ASSERT_TRUE(ready) << "lbd as nobody did not start";
  ready_ = *ready;

  struct stat st{};
  ASSERT_EQ(stat(socket_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, nobody_.first);
  CommandResult as_owner = run_lbctl(socket_path(), {"status"}, after(10s), nobody_);
  EXPECT_TRUE(as_owner.exited(0)) << as_owner.describe();
  CommandResult as_root = lbctl({"status"}, after(10s));
  EXPECT_TRUE(as_root.exited(0)) << as_root.describe();
  EXPECT_EQ(fetch(address(), http_get("/"), after(2s)).status(), 200);
}

}  // namespace
}  // namespace lbd::test
