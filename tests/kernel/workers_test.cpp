// Worker processes as an operator sees them: named "lbd: worker N" in ps, pinned one per CPU
// (or not, with --no-pin), and the log says which.
#include <gtest/gtest.h>
#include <sched.h>

#include "support/lbd_test.h"

namespace lbd::test {
namespace {

class Workers : public LbdTest {};

TEST_F(Workers, AreNamedAndPinnedOnePerCpu) {
  const std::vector<int> cpus = process_cpus(0);  // lbd inherits the test's CPUs
  ASSERT_FALSE(cpus.empty());
  ASSERT_NO_FATAL_FAILURE(start(lbd_flags("reuseport", 3)));
  for (unsigned slot = 0; slot < 3; slot++) {
    const pid_t pid = lbd().worker_pid(slot);
    const int cpu = cpus[slot % cpus.size()];
    EXPECT_EQ(process_command_line(pid), "lbd: worker " + std::to_string(slot));
    EXPECT_EQ(process_cpus(pid), std::vector<int>{cpu}) << "worker " << slot;
    EXPECT_EQ(lbd().count_log("worker " + std::to_string(slot) + " ready: pid " + std::to_string(pid) +
                              ", cpu " + std::to_string(cpu) + "$"),
              1u);
  }
}

TEST_F(Workers, NoPinLeavesThemEveryCpu) {
  const std::vector<int> cpus = process_cpus(0);
  ASSERT_NO_FATAL_FAILURE(start(lbd_flags("reuseport", 2, {"--no-pin"})));
  for (unsigned slot = 0; slot < 2; slot++) {
    const pid_t pid = lbd().worker_pid(slot);
    EXPECT_EQ(process_cpus(pid), cpus) << "worker " << slot;
    EXPECT_EQ(lbd().count_log("worker " + std::to_string(slot) + " ready: pid [0-9]+, cpu any$"), 1u);
  }
}

}  // namespace
}  // namespace lbd::test
