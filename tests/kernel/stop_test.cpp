// Stopping lbd: SIGTERM and SIGINT let requests in flight finish, SIGQUIT does not wait. In every mode that
// runs without root.
#include <gtest/gtest.h>
#include <signal.h>

#include "support/lbd_test.h"

namespace lbd::test {
namespace {

class Stop : public LbdTest, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(start(lbd_flags(GetParam(), 1, {"--demo-routes"}))); }

  // Puts `target` in flight on `c`: it is pipelined behind a GET /, so once the GET's answer is
  // back the worker has read (and started) the slow request too.
  void start_in_flight(HttpConnection& c, const std::string& target) {
    ASSERT_EQ(c.send(http_get("/") + http_get(target), after(2s)), Outcome::kOk);
    HttpResult first = c.read_response(after(2s));
    ASSERT_TRUE(first.ok()) << first.describe();
    ASSERT_EQ(first.response.status, 200);
  }

  // `sig` while a 500 ms request is in flight: it is answered, then lbd stops with status 0.
  void expect_graceful_stop(int sig) {
    HttpConnection c = HttpConnection::open(address(), after(2s));
    ASSERT_TRUE(c.valid());
    const auto sent = Clock::now();
    ASSERT_NO_FATAL_FAILURE(start_in_flight(c, "/sleep?ms=500"));

    lbd().signal(sig);
    HttpResult r = c.read_response(after(5s));
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.response.status, 200);
    EXPECT_EQ(r.response.body, "slept 500 ms\n");
    EXPECT_TRUE(r.response.closes()) << "a draining worker should close the connection after it";
    EXPECT_GE(Clock::now() - sent, 500ms);

    EXPECT_EQ(lbd().wait_exit(after(10s)), ExitStatus::exited(0));
    EXPECT_TRUE(lbd().wait_for_log(R"(\[lbd\] stopped$)", after(1s)));
  }
};

TEST_P(Stop, SigtermLetsARequestInFlightFinish) { expect_graceful_stop(SIGTERM); }

TEST_P(Stop, SigintLetsARequestInFlightFinish) { expect_graceful_stop(SIGINT); }

TEST_P(Stop, SigquitStopsAtOnce) {
  HttpConnection c = HttpConnection::open(address(), after(2s));
  ASSERT_TRUE(c.valid());
  // Ten seconds of work in flight: a graceful stop would wait for it.
  ASSERT_NO_FATAL_FAILURE(start_in_flight(c, "/sleep?ms=10000"));

  const auto signalled = Clock::now();
  lbd().signal(SIGQUIT);
  EXPECT_EQ(lbd().wait_exit(after(1s)), ExitStatus::exited(0)) << "lbd did not stop within 1 s";
  EXPECT_LT(Clock::now() - signalled, 1s);
  HttpResult r = c.read_response(after(1s));
  EXPECT_FALSE(r.ok()) << "the request in flight was answered: " << r.describe();
}

INSTANTIATE_TEST_SUITE_P(NonBpf, Stop, ::testing::Values("reuseport", "shared", "handoff"),
                         [](const auto& test) { return test.param; });

}  // namespace
}  // namespace lbd::test
