// --mode bpf (the default): lbd loads its steering program, serves and stops cleanly as root;
// without the privilege it refuses to start and says what it needs.
#include <gtest/gtest.h>
#include <pwd.h>
#include <signal.h>

#include <map>

#include "support/lbd_test.h"

namespace lbd::test {
namespace {

class BpfMode : public LbdTest {
 protected:
  void SetUp() override { LBD_REQUIRE_ROOT("loads a BPF program and drops privileges"); }
};

TEST_F(BpfMode, StartsServesAndStopsCleanly) {
  ASSERT_NO_FATAL_FAILURE(start(lbd_flags("bpf", 2)));
  EXPECT_EQ(ready_.mode, "bpf");
  EXPECT_EQ(ready_.policy, "least");
  std::map<int, int> workers;
  for (int i = 0; i < 20; i++) {
    HttpResult r = fetch(address(), http_get("/"), after(2s));
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.response.status, 200);
    workers[r.response.worker()]++;
  }
  EXPECT_EQ(workers.size(), 2u) << "least spreads sequential connections over both workers";

  lbd().signal(SIGTERM);
  EXPECT_EQ(lbd().wait_exit(after(10s)), ExitStatus::exited(0));
  EXPECT_TRUE(lbd().wait_for_log(R"(\[lbd\] stopped$)", after(1s)));
  EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u);
  // Every connection was placed by the program, none by the kernel's fallback hash.
  EXPECT_TRUE(lbd().wait_for_log(R"(\[lbd\] steering: .*; 0 left to the kernel's hash$)", after(1s)));
}

// One reuseport group per address, IPv4 and IPv6 apart: the program must find the group of each
// (a miss falls back to the kernel's hash, and round-robin would no longer be exact).
TEST_F(BpfMode, SteersIpv4AndIpv6Addresses) {
  if (!has_ipv6_loopback()) GTEST_SKIP() << "no IPv6 loopback ([::1]) on this machine";
  ASSERT_NO_FATAL_FAILURE(start({"--mode", "bpf", "--policy", "rr", "--workers", "2", "--listen",
                                 "127.0.0.1:0", "--listen", "[::1]:0"}));
  ASSERT_EQ(ready_.addresses.size(), 2u);
  for (const auto& address : ready_.addresses) {
    std::map<int, int> workers;
    for (int i = 0; i < 40; i++) {
      HttpResult r = fetch(address, http_get("/", /*close=*/true), after(2s));
      ASSERT_TRUE(r.ok()) << address.to_string() << ": " << r.describe();
      workers[r.response.worker()]++;
    }
    const std::map<int, int> expected = {{0, 20}, {1, 20}};
    EXPECT_EQ(workers, expected) << address.to_string();
  }
  lbd().signal(SIGTERM);
  EXPECT_EQ(lbd().wait_exit(after(10s)), ExitStatus::exited(0));
  EXPECT_TRUE(lbd().wait_for_log(R"(\[lbd\] steering: .*; 0 left to the kernel's hash$)", after(1s)));
}

TEST_F(BpfMode, WithoutPrivilegeRefusesToStartAndSaysWhatItNeeds) {
  const passwd* nobody = getpwnam("nobody");
  if (!nobody) GTEST_SKIP() << "no user 'nobody' to run lbd as";
  LbdProcess lbd(LbdProcess::Options{LBD_BINARY_PATH, lbd_flags("bpf", 2),
                                     std::make_pair(nobody->pw_uid, nobody->pw_gid)});
  // README: a start-up failure such as this one is one line and exit status 1 (2 is a bad flag).
  EXPECT_EQ(lbd.wait_exit(after(10s)), ExitStatus::exited(1));
  auto message = lbd.wait_for_log("cannot load the BPF steering program", after(1s));
  ASSERT_TRUE(message) << "no message about the BPF program";
  const std::string line = lbd.lines().at(message->line);
  EXPECT_NE(line.find("root"), std::string::npos) << line;
  EXPECT_NE(line.find("CAP_BPF"), std::string::npos) << line;
  EXPECT_EQ(lbd.count_log("ready"), 0u) << "no worker may start without the steering program";
}

}  // namespace
}  // namespace lbd::test
