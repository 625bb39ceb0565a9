// Every way lbd can hand connections to workers without BPF (--mode reuseport, shared, handoff)
// starts, serves GET / and stops cleanly on SIGTERM; and lbd serves IPv6 and several addresses.
// --mode bpf needs root: tests/root/bpf_mode_test.cpp.
#include <gtest/gtest.h>
#include <signal.h>

#include "support/lbd_test.h"

namespace lbd::test {
namespace {

class Modes : public LbdTest, public ::testing::WithParamInterface<std::string> {
 protected:
  // SIGTERM: lbd logs "stopped" and exits 0.
  void expect_clean_stop() {
    lbd().signal(SIGTERM);
    EXPECT_EQ(lbd().wait_exit(after(10s)), ExitStatus::exited(0));
    EXPECT_TRUE(lbd().wait_for_log(R"(\[lbd\] stopped$)", after(1s)));
    EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u);
  }
};

TEST_P(Modes, StartsServesAndStopsOnSigterm) {
  ASSERT_NO_FATAL_FAILURE(start(lbd_flags(GetParam(), 2)));
  EXPECT_EQ(ready_.mode, GetParam());
  EXPECT_EQ(ready_.workers, 2u);
  ASSERT_EQ(ready_.addresses.size(), 1u);
  EXPECT_NE(address().port(), 0) << "the ready line must give the real port";
  for (int i = 0; i < 10; i++) {
    HttpResult r = fetch(address(), http_get("/"), after(2s));
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.response.status, 200);
    EXPECT_EQ(r.response.body, "hello, world\n");
    EXPECT_TRUE(r.response.worker() == 0 || r.response.worker() == 1) << r.response.worker();
  }
  expect_clean_stop();
}

TEST_P(Modes, ServesTwoListenAddresses) {
  ASSERT_NO_FATAL_FAILURE(
      start({"--mode", GetParam(), "--workers", "2", "--listen", "127.0.0.1:0", "--listen", "127.0.0.2:0"}));
  ASSERT_EQ(ready_.addresses.size(), 2u);
  EXPECT_EQ(ready_.addresses[0].to_string().rfind("127.0.0.1:", 0), 0u) << ready_.addresses[0].to_string();
  EXPECT_EQ(ready_.addresses[1].to_string().rfind("127.0.0.2:", 0), 0u) << ready_.addresses[1].to_string();
  for (const auto& address : ready_.addresses) {
    HttpResult r = fetch(address, http_get("/"), after(2s));
    ASSERT_TRUE(r.ok()) << address.to_string() << ": " << r.describe();
    EXPECT_EQ(r.response.status, 200) << address.to_string();
  }
  expect_clean_stop();
}

TEST_P(Modes, ServesIpv6Loopback) {
  if (!has_ipv6_loopback()) GTEST_SKIP() << "no IPv6 loopback ([::1]) on this machine";
  ASSERT_NO_FATAL_FAILURE(start({"--mode", GetParam(), "--workers", "2", "--listen", "[::1]:0"}));
  EXPECT_TRUE(address().is_v6());
  EXPECT_EQ(address().to_string().rfind("[::1]:", 0), 0u) << address().to_string();
  HttpResult r = fetch(address(), http_get("/"), after(2s));
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.response.status, 200);
  expect_clean_stop();
}

INSTANTIATE_TEST_SUITE_P(NonBpf, Modes, ::testing::Values("reuseport", "shared", "handoff"),
                         [](const auto& test) { return test.param; });

}  // namespace
}  // namespace lbd::test
