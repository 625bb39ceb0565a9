// Hostile and careless clients against a real lbd (one worker, --mode reuseport, no root): the
// deadlines a connection must meet, and what a worker does when its connection table fills.
// docs/ARCHITECTURE.md, section 11.
#include <gtest/gtest.h>

#include <signal.h>

#include <thread>

#include "support/lbd_test.h"

namespace lbd::test {
namespace {

class Pressure : public LbdTest {
 protected:
  void start_with(std::vector<std::string> flags) {
    ASSERT_NO_FATAL_FAILURE(start(lbd_flags("reuseport", 1, std::move(flags))));
  }

  HttpConnection connect() {
    HttpResult failure;
    HttpConnection c = HttpConnection::open(address(), after(2s), &failure);
    EXPECT_TRUE(c.valid()) << failure.describe();
    return c;
  }
};

TEST_F(Pressure, ANewConnectionThatSendsNothingIsClosedAtTheHeaderTimeoutWithoutAnAnswer) {
  ASSERT_NO_FATAL_FAILURE(start_with({"--header-timeout", "1", "--idle-timeout", "60"}));
  HttpConnection silent = connect();
  HttpConnection served = connect();
  ASSERT_TRUE(served.request(http_get("/"), after(2s)).ok());
  const auto started = Clock::now();
  ASSERT_EQ(silent.wait_for_close(after(5s)), PeerEnd::kClosed)
      << "a connection that never sends a byte holds a slot until --idle-timeout (60 s) otherwise";
  const auto closed_after = Clock::now() - started;
  EXPECT_GE(closed_after, 800ms);
  EXPECT_LE(closed_after, 3s);
  // A connection that has had its answer is between requests: the idle timeout applies to it.
  EXPECT_TRUE(served.nothing_received());
  EXPECT_TRUE(served.request(http_get("/"), after(2s)).ok());
}

// A worker that did not run (SIGSTOP here; a VM that froze, a machine out of CPU) must not count
// its own pause against its clients: a request that arrived meanwhile is answered when it runs
// again, not closed because --header-timeout passed while nobody could read it.
TEST_F(Pressure, ARequestThatArrivedWhileTheWorkerWasPausedIsAnsweredNotTimedOut) {
  ASSERT_NO_FATAL_FAILURE(start_with({"--header-timeout", "1"}));
  HttpConnection waiting = connect();
  HttpConnection silent = connect();
  // The worker accepts its queue in order: once a later connection is answered, it holds both.
  HttpConnection later = connect();
  ASSERT_TRUE(later.request(http_get("/"), after(2s)).ok());
  const pid_t worker = lbd().worker_pid(0);
  ASSERT_TRUE(stop_process(worker, after(2s)));
  ASSERT_EQ(waiting.send(http_get("/"), after(1s)), Outcome::kOk);
  // Past the header timeout, while the worker cannot run: the pause is what this test is about.
  const Deadline paused_until = after(1500ms);
  eventually(paused_until + 1s, [&] { return Clock::now() >= paused_until; }, 50ms);
  ASSERT_EQ(kill(worker, SIGCONT), 0);
  HttpResult r = waiting.read_response(after(3s));
  ASSERT_TRUE(r.ok()) << "closed for the worker's own pause: " << r.describe();
  EXPECT_EQ(r.response.status, 200);
  // A connection that really sent nothing is still closed, a moment after the worker runs again.
  EXPECT_EQ(silent.wait_for_close(after(3s)), PeerEnd::kClosed);
  EXPECT_TRUE(lbd().wait_for_log("the loop did not run for [0-9]+ ms", after(1s))) << lbd().log();
}

TEST_F(Pressure, ABodySlowerThanTheMinimumRateGets408AndAFastOneIsServed) {
  ASSERT_NO_FATAL_FAILURE(start_with({"--header-timeout", "1", "--min-body-rate", "1K"}));
  // 100 bytes a second: past the 1 s grace, the body needs 1 KiB/s on average.
  HttpConnection slow = connect();
  const auto started = Clock::now();
  ASSERT_EQ(slow.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", after(1s)), Outcome::kOk);
  HttpResult r = slow.trickle_until_answered(std::string(10, 'b'), 100ms, started + 6s);
  const auto answered_after = Clock::now() - started;
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.response.status, 408);
  EXPECT_GE(answered_after, 1s);
  EXPECT_LE(answered_after, 3s) << "1 s of grace, then 1 s for each KiB received (about 0.1 KiB/s here)";

  // 20 KiB a second for 3 s: over the rate, however long it takes.
  HttpConnection steady = connect();
  const std::string body(60 * 1024, 's');
  ASSERT_EQ(steady.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 61440\r\n\r\n", after(1s)), Outcome::kOk);
  for (size_t at = 0; at < body.size(); at += 2048) {
    ASSERT_EQ(steady.send(body.substr(at, 2048), after(1s)), Outcome::kOk);
    std::this_thread::sleep_for(100ms);
  }
  HttpResult echoed = steady.read_response(after(2s));
  ASSERT_TRUE(echoed.ok()) << echoed.describe();
  EXPECT_EQ(echoed.response.status, 200);
  EXPECT_EQ(echoed.response.body, body);
}

TEST_F(Pressure, BodiesPastTheWorkersBodyMemoryGet503AndTheMemoryComesBack) {
  ASSERT_NO_FATAL_FAILURE(start_with({"--body-memory", "100K"}));
  // Two clients each halfway through a 60 KiB body: the second passes the budget.
  HttpConnection first = connect();
  HttpConnection second = connect();
  const std::string head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 61440\r\n\r\n";
  ASSERT_EQ(first.send(head + std::string(50 * 1024, 'a'), after(1s)), Outcome::kOk);
  // The first body is in the worker before the second arrives: its answer to a request on a third
  // connection comes after it has read what the first sent (one loop, in order).
  ASSERT_TRUE(fetch(address(), http_get("/"), after(2s)).ok());
  ASSERT_EQ(second.send(head + std::string(60 * 1024, 'b'), after(1s)), Outcome::kOk);
  HttpResult refused = second.read_response(after(2s));
  ASSERT_TRUE(refused.ok()) << refused.describe();
  EXPECT_EQ(refused.response.status, 503);
  // The first completes, and once answered its body leaves the budget: a full one fits again.
  ASSERT_EQ(first.send(std::string(10 * 1024, 'a'), after(1s)), Outcome::kOk);
  HttpResult done = first.read_response(after(2s));
  ASSERT_TRUE(done.ok()) << done.describe();
  EXPECT_EQ(done.response.status, 200);
  HttpResult again = fetch(address(), head + std::string(60 * 1024, 'c'), after(2s));
  ASSERT_TRUE(again.ok()) << again.describe();
  EXPECT_EQ(again.status(), 200);
}

// The kernel fills the worker's 1024 receive buffers in turn, so a thousand reads leave all 4 MiB
// of them resident, however light the traffic. A second after the last read their pages go back
// (Worker::return_buffer_pages): a quiet worker is as small as one that never served.
TEST_F(Pressure, AQuietWorkerGivesItsReceiveBuffersBack) {
  ASSERT_NO_FATAL_FAILURE(start_with({}));
  if (!lbd().wait_for_log("serving with io_uring \\(single-issuer\\+defer-taskrun\\)", after(0s))) {
    GTEST_SKIP() << "needs IORING_SETUP_DEFER_TASKRUN (Linux 6.1), under which alone the buffers are given back";
  }
  const pid_t worker = lbd().worker_pid(0);
  const size_t idle = process_rss_bytes(worker);
  HttpConnection c = connect();
  for (int i = 0; i < 1100; i++) {
    HttpResult r = c.request(http_get("/"), after(2s));
    ASSERT_TRUE(r.ok()) << "request " << i << ": " << r.describe();
  }
  const size_t busy = process_rss_bytes(worker);
  ASSERT_GE(busy, idle + 2 * 1024 * 1024) << "the reads did not make the receive buffers resident: nothing to give back";
  EXPECT_TRUE(eventually(after(5s), [&] { return process_rss_bytes(worker) < idle + 1024 * 1024; }, 50ms))
      << "idle " << idle / 1024 << " KiB, after 1100 requests " << busy / 1024 << " KiB, now "
      << process_rss_bytes(worker) / 1024 << " KiB";
  // The buffers still work: the kernel fills them again.
  EXPECT_TRUE(c.request(http_get("/"), after(2s)).ok());
  EXPECT_TRUE(fetch(address(), http_get("/"), after(2s)).ok());
}

TEST_F(Pressure, NearAFullTableTheOldestIdleConnectionsMakeRoomForNewClients) {
  // 64 slots: shedding starts at 57 open, a batch of 16 at a time.
  ASSERT_NO_FATAL_FAILURE(start_with({"--max-connections", "64"}));
  std::vector<HttpConnection> older, newer;
  for (int i = 0; i < 20; i++) {
    older.push_back(connect());
    ASSERT_TRUE(older.back().request(http_get("/"), after(2s)).ok());
  }
  // Idle for over a second: the age at which the worker may shed a connection.
  std::this_thread::sleep_for(1100ms);
  for (int i = 0; i < 30; i++) {
    newer.push_back(connect());
    ASSERT_TRUE(newer.back().request(http_get("/"), after(2s)).ok());
  }
  // 50 idle connections; 20 new clients each want an answer and stay. None may be refused: at
  // 57 open, the worker closes 16 connections idle for over a second, oldest first.
  std::vector<HttpConnection> arriving;
  for (int i = 0; i < 20; i++) {
    arriving.push_back(connect());
    HttpResult r = arriving.back().request(http_get("/"), after(2s));
    ASSERT_TRUE(r.ok()) << "new client " << i << ": " << r.describe();
    EXPECT_EQ(r.response.status, 200);
  }
  int closed = 0;
  for (auto& c : older) {
    if (c.wait_for_close(after(100ms)) == PeerEnd::kClosed) closed++;
  }
  EXPECT_EQ(closed, 16) << "one batch of the oldest idle connections";
  EXPECT_TRUE(lbd().wait_for_log("connection table 8[0-9]% full \\(5[0-9] of 64\\): closed 16 connections", after(2s)))
      << "the operator is told why connections closed before their idle timeout";
  for (auto& c : newer) {
    HttpResult r = c.request(http_get("/"), after(2s));
    EXPECT_TRUE(r.ok()) << "a connection idle for less than a second was closed: " << r.describe();
  }
}

TEST_F(Pressure, AFullTableOfBusyConnectionsQueuesTheNextClientInsteadOfDroppingIt) {
  ASSERT_NO_FATAL_FAILURE(start_with({"--max-connections", "16", "--demo-routes"}));
  // 16 requests being answered: nothing to shed.
  std::vector<HttpConnection> busy;
  for (int i = 0; i < 16; i++) {
    busy.push_back(connect());
    ASSERT_EQ(busy.back().send(http_get("/sleep?ms=2000"), after(1s)), Outcome::kOk);
  }
  ASSERT_TRUE(lbd().wait_for_log("connection table full: 16 of 16", after(5s)))
      << "the log names the real cause, not 'Too many open files'";
  // The next client waits in the accept queue, and is answered once a slot is free.
  const auto started = Clock::now();
  HttpResult r = fetch(address(), http_get("/", /*close=*/true), after(6s));
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.status(), 200);
  EXPECT_GE(Clock::now() - started, 500ms) << "answered before a slot was free: the table was not full";
  for (auto& c : busy) {
    HttpResult slept = c.read_response(after(5s));
    EXPECT_TRUE(slept.ok()) << slept.describe();
  }
  EXPECT_EQ(lbd().count_log("Too many open files"), 0u);
}

}  // namespace
}  // namespace lbd::test
