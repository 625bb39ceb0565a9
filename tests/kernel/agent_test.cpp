// Behind a balancer: HAProxy's agent-check (--agent) and leaving the balancer before draining
// (--drain-grace), against lbd in --mode reuseport (no root needed), asked over real sockets the
// way HAProxy asks. What an operator relies on:
// - the agent says "up ready N%" while serving, "drain" from the first moment of a drain --all or
//   a graceful stop, "maint" once nothing serves, and its weight falls when the workers are busy;
// - through the grace, the workers keep answering every request; the drain follows once the
//   balancer has been told and then sent nothing new for a second, or when the grace runs out;
// - an agent client that sends a line, never reads, or comes 40 at once harms nobody.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <iostream>

#include "support/agent.h"

namespace lbd::test {
namespace {

TEST_F(Agent, SaysUpReadyWithAWeightWhileServingWhateverTheCheckSends) {
  ASSERT_NO_FATAL_FAILURE(start_with_agent({}));
  const std::string answer = ask();
  const int weight = weight_of(answer);
  EXPECT_GE(weight, 50) << "two idle workers: most of the host is free; got " << answer;
  EXPECT_LE(weight, 100);
  // HAProxy's agent-send: a line lbd reads and ignores, and the answer is the same kind.
  EXPECT_GE(weight_of(ask("hello from haproxy\n")), 1);
  EXPECT_GE(weight_of(ask(std::string(100'000, 'x'))), 1) << "a flood of input changes nothing";
  EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u);
}

TEST_F(Agent, DrainAllSaysDrainAtOnceServesThroughTheGraceAndDrainsOnceNothingNewArrives) {
  ASSERT_NO_FATAL_FAILURE(start_with_agent({"--drain-grace", "30"}));
  auto load = steady_load();
  ASSERT_TRUE(wait_for_requests(*load, 50, after(10s)));

  auto drained = std::async(std::launch::async, [&] { return lbctl({"drain", "--all"}, after(60s)); });
  // From the first moment: the agent says drain, /readyz says 503.
  ASSERT_TRUE(eventually(after(5s), [&] { return ask() == "drain\n"; }, 10ms)) << lbd().log();
  HttpResult ready = admin_get("/readyz");
  EXPECT_EQ(ready.status(), 503) << ready.describe();
  EXPECT_EQ(ready.response.body, "not ready: draining (balancers are told first; the workers still serve)\n");

  // Connections keep coming (a balancer that has not caught up): the workers keep answering, and
  // the drain waits. 1.5 s is past the quiet second the drain would otherwise need.
  const Deadline watched_until = after(1500ms);
  const uint64_t before = load->completed();
  ASSERT_TRUE(eventually(watched_until + 5s, [&] { return Clock::now() >= watched_until; }, 50ms));
  EXPECT_GT(load->completed(), before + 20) << "the workers served through the grace";
  EXPECT_EQ(lbd().count_log("draining pid"), 0u) << "drained while connections still arrived";
  EXPECT_EQ(drained.wait_for(0s), std::future_status::timeout) << "drain --all answered before draining";

  // The balancer stops sending: a quiet second later the workers drain and lbctl answers.
  const LoadReport report = load->stop();
  const Deadline stopped = Clock::now();
  CommandResult r = drained.get();
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - stopped);
  ASSERT_TRUE(r.exited(0)) << r.describe();
  EXPECT_NE(r.out.find("draining"), std::string::npos) << r.out;
  EXPECT_GE(took, 900ms) << "the drain came before a quiet second";
  EXPECT_LT(took, 10s);
  EXPECT_TRUE(lbd().wait_for_log("drain: balancers stopped sending after", after(1s))) << lbd().log();
  std::cout << report.summary() << "; drained " << took.count() << " ms after the last request\n";
  EXPECT_EQ(report.failed(), 0u) << report.summary();
  EXPECT_TRUE(eventually(after(10s), [&] { return ask() == "maint\n"; }, 20ms)) << "nothing serves: " << ask();
}

TEST_F(Agent, UndrainDuringTheGraceCallsTheDrainOffAndTheAgentSaysUpAgain) {
  ASSERT_NO_FATAL_FAILURE(start_with_agent({"--drain-grace", "30"}));
  const auto pids = serving_pids();
  auto drained = std::async(std::launch::async, [&] { return lbctl({"drain", "--all"}, after(60s)); });
  ASSERT_TRUE(eventually(after(5s), [&] { return ask() == "drain\n"; }, 10ms));
  CommandResult undrained = lbctl({"undrain", "--all"});
  EXPECT_TRUE(undrained.exited(0)) << undrained.describe();
  CommandResult r = drained.get();
  EXPECT_TRUE(r.exited(1)) << r.describe();
  EXPECT_NE(r.err.find("called off by undrain"), std::string::npos) << r.describe();
  EXPECT_GE(weight_of(ask()), 1);
  EXPECT_EQ(admin_get("/readyz").status(), 200);
  EXPECT_EQ(serving_pids(), pids) << "nothing was drained";
}

TEST_F(Agent, WithNobodyAskingTheGraceRunsOutAndTheDrainFollows) {
  // No agent check and no /readyz probe during the grace: nothing says a balancer knows.
  ASSERT_NO_FATAL_FAILURE(start_with_agent({"--drain-grace", "1.5"}));
  const Deadline asked = Clock::now();
  CommandResult r = lbctl({"drain", "--all", "--wait"}, after(30s));
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - asked);
  ASSERT_TRUE(r.exited(0)) << r.describe();
  EXPECT_GE(took, 1500ms);
  EXPECT_TRUE(lbd().wait_for_log("drain: the grace passed and no balancer asked", after(1s))) << lbd().log();
  EXPECT_EQ(ask(), "maint\n");
}

TEST_F(Agent, AGracefulStopSaysDrainKeepsServingAndExitsOnceQuiet) {
  ASSERT_NO_FATAL_FAILURE(start_with_agent({"--drain-grace", "30"}));
  auto load = steady_load();
  ASSERT_TRUE(wait_for_requests(*load, 50, after(10s)));
  lbd().signal(SIGTERM);
  ASSERT_TRUE(eventually(after(5s), [&] { return ask() == "drain\n"; }, 10ms)) << lbd().log();
  EXPECT_EQ(admin_get("/readyz").status(), 503);
  ASSERT_TRUE(wait_for_requests(*load, 50, after(10s))) << "the workers serve through the grace";
  EXPECT_EQ(lbd().wait_exit(after(0s)), ExitStatus::running());
  const LoadReport report = load->stop();
  EXPECT_EQ(lbd().wait_exit(after(15s)), ExitStatus::exited(0)) << lbd().log();
  EXPECT_EQ(report.failed(), 0u) << report.summary();
  EXPECT_EQ(lbd().count_log("stop: balancers stopped sending"), 1u) << lbd().log();
}

TEST_F(Agent, DrainGraceZeroDrainsAtOnceEvenWithAnAgent) {
  ASSERT_NO_FATAL_FAILURE(start_with_agent({"--drain-grace", "0"}));
  CommandResult r = lbctl({"drain", "--all"}, after(10s));
  ASSERT_TRUE(r.exited(0)) << r.describe();
  EXPECT_TRUE(eventually(after(5s), [&] { return ask() == "maint\n"; }, 10ms)) << ask();
  EXPECT_EQ(lbd().count_log("balancers"), 0u) << "no grace: " << lbd().log();
}

TEST_F(Agent, ClientsThatNeverReadOrComeByTheDozenHarmNobody) {
  ASSERT_NO_FATAL_FAILURE(start_with_agent({}));
  // 40 connections that never read nor close: lbd holds at most 32 of them for a second; the
  // others are answered and closed at once. A real check still gets its answer meanwhile.
  std::vector<UniqueFd> idle;
  for (int i = 0; i < 40; i++) {
    UniqueFd fd(socket(agent_->family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(connect(fd.get(), agent_->sockaddr_ptr(), agent_->length()), 0);
    idle.push_back(std::move(fd));
  }
  EXPECT_GE(weight_of(ask()), 1);
  HttpResult r = fetch(address(), http_get("/"), after(2s));
  EXPECT_EQ(r.status(), 200) << r.describe();
  // lbd closes every one of them within its linger of 1 s: each reads its answer, then EOF.
  for (auto& fd : idle) {
    timeval tv{.tv_sec = 5, .tv_usec = 0};
    setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char buffer[64];
    ssize_t n = recv(fd.get(), buffer, sizeof(buffer), 0);
    EXPECT_GT(n, 0) << "every connection got its answer";
    EXPECT_EQ(recv(fd.get(), buffer, sizeof(buffer), 0), 0) << "and was closed";
  }
  EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u);
}

}  // namespace
}  // namespace lbd::test
