// Every way lbd can hand connections to workers without BPF (--mode reuseport, shared, handoff)
// starts, serves GET / and stops cleanly on SIGTERM; and lbd serves IPv6 and several addresses.
// --mode bpf needs root: tests/root/bpf_mode_test.cpp.
#include <gtest/gtest.h>
#include <signal.h>

#include <map>
#include <string>
#include <vector>

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

  // Both workers answer, shown in the way each mode hands out connections:
  // - handoff: the supervisor deals accepted connections to the workers in turn, so ten
  //   connections one after another are five each.
  // - reuseport: the kernel hashes each connection's addresses and ports over the two listeners.
  //   Every new connection has a new source port, so the chance that 64 of them all land on one
  //   worker is 2^-63: a worker that never gets one does not accept.
  // - shared: one listener both workers accept on, and the kernel wakes the worker that waits
  //   first, so one worker may legitimately take every connection (the README's benchmark: 100% /
  //   0%). What lbd promises there is that a worker whose connection table is full stops
  //   accepting: with --max-connections 16, 16 requests held open on one worker (each being
  //   answered, so none can be shed) leave the 17th connection to the other.
  void expect_both_workers_serve(const std::string& mode) {
    std::map<int, int> per_worker;
    if (mode == "handoff") {
      for (int i = 0; i < 10; i++) {
        HttpResult r = fetch(address(), http_get("/", /*close=*/true), after(2s));
        ASSERT_TRUE(r.ok()) << r.describe();
        per_worker[r.worker()]++;
      }
      EXPECT_EQ(per_worker, (std::map<int, int>{{0, 5}, {1, 5}})) << "handoff deals connections in turn";
    } else if (mode == "reuseport") {
      for (int i = 0; i < 64 && per_worker.size() < 2; i++) {
        HttpResult r = fetch(address(), http_get("/", /*close=*/true), after(2s));
        ASSERT_TRUE(r.ok()) << r.describe();
        per_worker[r.worker()]++;
      }
      EXPECT_EQ(per_worker.size(), 2u) << "64 new connections, all hashed to worker " << per_worker.begin()->first;
    } else {
      ASSERT_EQ(mode, "shared");
      std::vector<HttpConnection> held;
      for (int i = 0; i < 17 && per_worker.size() < 2; i++) {
        HttpResult failure;
        held.push_back(HttpConnection::open(address(), after(2s), &failure));
        ASSERT_TRUE(held.back().valid()) << failure.describe();
        HttpResult r = held.back().request(http_get("/"), after(5s));
        ASSERT_TRUE(r.ok()) << "connection " << i << ": " << r.describe();
        per_worker[r.worker()]++;
        // Busy until the test lets go: a connection being answered is never shed.
        ASSERT_EQ(held.back().send(http_get("/sleep?ms=3000"), after(2s)), Outcome::kOk);
      }
      EXPECT_EQ(per_worker.size(), 2u) << "worker " << per_worker.begin()->first << " took all "
                                       << per_worker.begin()->second << " connections, past a full table";
    }
  }
};

// What expect_both_workers_serve needs in shared mode: a small table, and /sleep to hold requests.
std::vector<std::string> both_workers_flags(const std::string& mode) {
  if (mode == "shared") return {"--max-connections", "16", "--demo-routes"};
  return {};
}

TEST_P(Modes, StartsServesAndStopsOnSigterm) {
  ASSERT_NO_FATAL_FAILURE(start(lbd_flags(GetParam(), 2, both_workers_flags(GetParam()))));
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
  ASSERT_NO_FATAL_FAILURE(expect_both_workers_serve(GetParam()));
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
