// examples/hello_service: a service that embeds lbd answers its own routes through lbd's
// workers, with lbd's flags, and takes operators' messages (`lbctl send`) in its on_message.
#include <gtest/gtest.h>
#include <signal.h>

#include "support/control_test.h"

namespace lbd::test {
namespace {

class HelloService : public LbdTest {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(start(lbd_flags("reuseport", 2), HELLO_SERVICE_PATH)); }
};

TEST_F(HelloService, GreetsByName) {
  HttpResult r = fetch(address(), http_get("/hello?name=ops"), after(2s));
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.response.status, 200);
  EXPECT_EQ(r.response.body, "hello, ops\n");
}

TEST_F(HelloService, AnswersLaterAfter100ms) {
  const auto sent = Clock::now();
  HttpResult r = fetch(address(), http_get("/later"), after(2s));
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.response.status, 200);
  EXPECT_EQ(r.response.body, "later\n");
  EXPECT_GE(Clock::now() - sent, 100ms);
}

TEST_F(HelloService, WhoamiNamesTheWorkerThatAnswered) {
  HttpResult r = fetch(address(), http_get("/whoami"), after(2s));
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.response.header("Content-Type"), "application/json");
  EXPECT_EQ(r.response.body, "{\"worker\":" + std::to_string(r.response.worker()) + "}\n");
  EXPECT_EQ(fetch(address(), http_get("/nope"), after(2s)).status(), 404);
}

TEST_F(HelloService, StopsCleanlyOnSigterm) {
  lbd().signal(SIGTERM);
  EXPECT_EQ(lbd().wait_exit(after(10s)), ExitStatus::exited(0));
  EXPECT_TRUE(lbd().wait_for_log(R"(\[lbd\] stopped$)", after(1s)));
}

class HelloServiceMessages : public ControlTest {
 protected:
  // Worker `slot`'s answer to /hello?name=ops, from new connections until that worker answers.
  std::string greeting_of(int slot) {
    std::string body = "no answer from worker " + std::to_string(slot);
    eventually(after(10s), [&] {
      HttpResult r = fetch(address(), http_get("/hello?name=ops", true), after(2s));
      if (r.worker() != slot) return false;
      body = r.response.body;
      return true;
    }, 1ms);
    return body;
  }
};

TEST_F(HelloServiceMessages, OnMessageRunsInTheWorkersItWasSentTo) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 2), HELLO_SERVICE_PATH));
  ASSERT_TRUE(lbctl({"send", "0", "howdy"}).exited(0));
  EXPECT_TRUE(eventually(after(10s), [&] { return greeting_of(0) == "howdy, ops\n"; })) << greeting_of(0);
  EXPECT_EQ(greeting_of(1), "hello, ops\n");
  EXPECT_TRUE(lbd().wait_for_log(R"(\[worker 0\] message: howdy$)", after(5s))) << lbd().log();
  ASSERT_TRUE(lbctl({"send", "--all", "g'day"}).exited(0));
  for (int slot : {0, 1}) {
    EXPECT_TRUE(eventually(after(10s), [&] { return greeting_of(slot) == "g'day, ops\n"; })) << greeting_of(slot);
  }
}

}  // namespace
}  // namespace lbd::test
