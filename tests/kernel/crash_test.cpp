// A worker that dies is restarted and serves again; one that keeps dying is given up on, and the
// others keep serving.
#include <gtest/gtest.h>
#include <signal.h>

#include "support/lbd_test.h"

namespace lbd::test {
namespace {

class Crash : public LbdTest {};

TEST_F(Crash, KilledWorkerIsRestartedAndServes) {
  ASSERT_NO_FATAL_FAILURE(start(lbd_flags("reuseport", 2)));
  const pid_t old_pid = lbd().worker_pid(0);
  const pid_t other_pid = lbd().worker_pid(1);
  ASSERT_GT(old_pid, 0);

  ASSERT_EQ(kill(old_pid, SIGKILL), 0);
  EXPECT_TRUE(lbd().wait_for_log(
      R"(\[lbd\] worker 0 \(pid )" + std::to_string(old_pid) +
          R"(\) crashed: was killed by signal 9 \(SIGKILL\); restarting in [0-9]+ ms)",
      after(5s)));
  const pid_t new_pid = lbd().wait_for_worker_restart(0, old_pid, after(5s));
  ASSERT_GT(new_pid, 0) << "worker 0 was not restarted within 5 s";
  EXPECT_NE(new_pid, old_pid);

  HttpResult r = fetch_from_worker(address(), 0, after(5s));
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.response.worker(), 0) << "the restarted worker 0 never answered";
  EXPECT_EQ(r.response.status, 200);
  EXPECT_EQ(lbd().worker_pid(1), other_pid) << "worker 1 was restarted too";
}

TEST_F(Crash, WorkerThatKeepsCrashingIsGivenUpAndTheOtherKeepsServing) {
  ASSERT_NO_FATAL_FAILURE(start(lbd_flags("reuseport", 2, {"--max-restarts", "3", "--restart-window", "30"})));
  const pid_t survivor = lbd().worker_pid(1);
  for (int crash = 1; crash <= 3; crash++) {
    SCOPED_TRACE("crash " + std::to_string(crash));
    const pid_t pid = lbd().worker_pid(0);
    ASSERT_GT(pid, 0);
    const size_t mark = lbd().log_lines();
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    if (crash < 3) {
      ASSERT_TRUE(lbd().wait_for_log(R"(worker 0 \(pid [0-9]+\) crashed: .*; restarting in)", after(5s), mark));
      ASSERT_GT(lbd().wait_for_worker_restart(0, pid, after(5s)), 0);
    } else {
      ASSERT_TRUE(lbd().wait_for_log(
          R"(worker 0 \(pid [0-9]+\) crashed: was killed by signal 9 \(SIGKILL\); it crashed 3 times within 30 s, not restarting it)",
          after(5s), mark));
    }
  }
  EXPECT_EQ(lbd().count_log(R"(\[lbd\] worker 0 ready)"), 3u) << "started once, restarted twice";

  // lbd keeps running, and every new connection is served by worker 1.
  for (int i = 0; i < 20; i++) {
    HttpResult r = fetch(address(), http_get("/"), after(2s));
    ASSERT_TRUE(r.ok()) << "request " << i << ": " << r.describe();
    EXPECT_EQ(r.response.status, 200);
    EXPECT_EQ(r.response.worker(), 1);
  }
  EXPECT_EQ(lbd().worker_pid(1), survivor);
  EXPECT_EQ(lbd().wait_exit(after(0s)), ExitStatus::running());
}

TEST_F(Crash, LbdExitsWhenEveryWorkerHasFailed) {
  ASSERT_NO_FATAL_FAILURE(start(lbd_flags("reuseport", 1, {"--max-restarts", "1"})));
  ASSERT_EQ(kill(lbd().worker_pid(0), SIGKILL), 0);
  EXPECT_TRUE(lbd().wait_for_log("not restarting it", after(5s)));
  EXPECT_TRUE(lbd().wait_for_log(R"(error +\[lbd\] every worker has failed; lbd is exiting)", after(5s)));
  EXPECT_EQ(lbd().wait_exit(after(5s)), ExitStatus::exited(1));
}

}  // namespace
}  // namespace lbd::test
