// The steering guard and the capability drop in a real process (sandbox/confine.h): a forked
// child confines itself the way a worker does, then makes the calls the guard must refuse and
// some it must not, and reports each outcome through its exit status. No root needed: without
// it there is simply no user to switch to and nothing in the bounding set to drop.
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox/confine.h"
#include "worker/ring.h"

namespace lbd {
namespace {

// One bit per expectation that failed in the child; 0: all held. 255: could not confine.
int run_confined_child(const SeccompProgram& guard) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (confine(nullptr, false, &guard)) _exit(255);
    int failed = 0;
    auto expect = [&](int bit, long result, int err) {
      const bool ok = err == 0 ? result >= 0 : (result < 0 && errno == err);
      if (!ok) failed |= 1 << bit;
    };
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1, zero = 0;
    expect(0, setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)), 0);
    expect(1, setsockopt(fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &zero, sizeof(zero)), EPERM);
    sock_filter code[] = {{BPF_RET | BPF_K, 0, 0, 0}};
    sock_fprog program{1, code};
    expect(2, setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &program, sizeof(program)), EPERM);
    int prog_fd = 1000;
    expect(3, setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &prog_fd, sizeof(prog_fd)), EPERM);
    expect(4, syscall(SYS_setsockopt, fd, (1ul << 32) | SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &zero, sizeof(zero)),
           EPERM);
    io_uring_params params{};
    expect(5, syscall(SYS_io_uring_setup, 4, &params), EPERM);
    // A plain (non-reuseport) socket option of the same numbers at another level is not refused.
    expect(6, setsockopt(fd, IPPROTO_TCP, SO_DETACH_REUSEPORT_BPF, &zero, sizeof(zero)) < 0 && errno == EPERM ? -1 : 0,
           0);
    // Nothing can be gained back.
    expect(7, prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1 ? 0 : -1, 0);
    expect(8, prctl(PR_CAPBSET_READ, 0 /* CAP_CHOWN */, 0, 0, 0) == 0 || geteuid() != 0 ? 0 : -1, 0);
    _exit(failed);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 254;
}

TEST(Confine, TheGuardRefusesExactlyTheCallsThatChangeTheSteering) {
  auto guard = SeccompProgram::steering_guard();
  ASSERT_TRUE(guard) << guard.error().message();
  EXPECT_GT(guard->instructions().size(), 4u);
  EXPECT_EQ(run_confined_child(*guard), 0)
      << "bits: 0 SO_REUSEPORT refused, 1-4 a steering change allowed, 5 io_uring_setup allowed, "
         "6 another level refused, 7 no NO_NEW_PRIVS, 8 bounding set kept";
}

// The result of one operation on `ring`: the completion's res.
int complete(Ring& ring, uint8_t opcode, int fd) {
  io_uring_sqe* sqe = ring.next_sqe();
  io_uring_prep_rw(opcode, sqe, fd, nullptr, 0, 0);
  io_uring_submit(ring.get());
  io_uring_cqe* cqe = nullptr;
  if (io_uring_wait_cqe(ring.get(), &cqe) != 0) return -9999;
  const int res = cqe->res;
  io_uring_cqe_seen(ring.get(), cqe);
  return res;
}

TEST(Confine, TheWorkersRingCannotIssueSetsockopt) {
  // The guard cannot see what a ring does; the worker's own ring is locked to the operations a
  // worker uses, so IORING_OP_URING_CMD (which can setsockopt since Linux 6.7) is refused.
  auto ring = Ring::create({.sq_entries = 8, .cq_entries = 16, .fixed_files = 16});
  ASSERT_TRUE(ring) << ring.error().message();
  ASSERT_TRUE(ring->lock_down());
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(complete(*ring, IORING_OP_NOP, -1), 0);
  EXPECT_EQ(complete(*ring, 46 /* IORING_OP_URING_CMD */, fd), -EACCES);
  EXPECT_EQ(complete(*ring, IORING_OP_CONNECT, fd), -EACCES);
  close(fd);
}

TEST(Confine, AnUnknownUserIsOneClearError) {
  auto as = resolve_user("no-such-user-here");
  ASSERT_FALSE(as);
  EXPECT_EQ(as.error().message(), "no user 'no-such-user-here'");
  auto group = resolve_user("nobody:no-such-group-here");
  ASSERT_FALSE(group);
  EXPECT_EQ(group.error().message(), "no group 'no-such-group-here'");
  EXPECT_FALSE(resolve_user(""));
  EXPECT_FALSE(resolve_user("nobody:"));
  auto nobody = resolve_user("nobody");
  ASSERT_TRUE(nobody) << nobody.error().message();
  EXPECT_EQ(nobody->user, "nobody");
  auto numeric = resolve_user("65534:65534");
  ASSERT_TRUE(numeric);
  EXPECT_EQ(numeric->uid, 65534u);
  EXPECT_EQ(numeric->gid, 65534u);
}

}  // namespace
}  // namespace lbd
