// lbload, the load generator (tools/lbload), run as the real binary against a real lbd
// (--mode reuseport, two workers, no root) on loopback: what it reports with --json is what
// happened. Each run is bounded by its own --duration and by the test's deadline.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "support/lbctl.h"
#include "support/lbd_test.h"

namespace lbd::test {
namespace {

using nlohmann::json;

struct LoadRun {
  CommandResult command;
  json report;  // the parsed --json output (null if there was none)
};

// lbload ARGS --json URL, parsed; a failure if it does not exit 0 with one JSON object.
LoadRun run_lbload(std::vector<std::string> args, const std::string& url, Deadline deadline = after(30s)) {
  std::vector<std::string> argv = {LBLOAD_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("--json");
  argv.push_back(url);
  LoadRun run;
  run.command = run_command(argv, deadline);
  EXPECT_TRUE(run.command.exited(0)) << run.command.describe();
  run.report = json::parse(run.command.out, nullptr, /*allow_exceptions=*/false);
  EXPECT_TRUE(run.report.is_object()) << "not one JSON object: " << run.command.out;
  if (!run.report.is_object()) run.report = json::object();
  return run;
}

std::string url_of(const net::Address& address, const std::string& path = "/") {
  return "http://" + address.to_string() + path;
}

uint64_t count_at(const json& j, const std::string& key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<uint64_t>() : 0;
}

class Lbload : public LbdTest {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(start(lbd_flags("reuseport", 2, {"--demo-routes"}))); }
  std::string url(const std::string& path = "/") const { return url_of(address(), path); }

  // Every request answered, by both workers.
  static void expect_clean_run(const json& r) {
    EXPECT_GT(count_at(r, "requests"), 0u) << r.dump();
    EXPECT_EQ(count_at(r, "errors_total"), 0u) << r.dump();
    EXPECT_GT(count_at(r["workers"], "0"), 0u) << "worker 0 answered nothing: " << r.dump();
    EXPECT_GT(count_at(r["workers"], "1"), 0u) << "worker 1 answered nothing: " << r.dump();
  }
};

TEST_F(Lbload, KeepAliveLoadIsAnsweredWithoutErrors) {
  LoadRun run = run_lbload({"-c", "16", "-d", "1"}, url());
  const json& r = run.report;
  expect_clean_run(r);
  EXPECT_EQ(r["mode"], "closed");
  EXPECT_EQ(r["connection"], "keep-alive");
  EXPECT_EQ(r["connections"], 16);
  EXPECT_NEAR(r.value("duration_s", 0.0), 1.0, 0.2);
  EXPECT_GT(r["latency_us"].value("p50", 0.0), 0.0);
  EXPECT_EQ(r["paths"]["/"]["requests"], r["requests"]);
  EXPECT_GT(r.value("client_cpu_us_per_request", 0.0), 0.0);
}

TEST_F(Lbload, NewConnectionLoadIsAnsweredWithoutErrors) {
  LoadRun run = run_lbload({"--new-connection", "-c", "8", "-d", "1"}, url());
  expect_clean_run(run.report);
  EXPECT_EQ(run.report["connection"], "new");
}

TEST_F(Lbload, TwoThreadsShareTheLoad) {
  LoadRun run = run_lbload({"-t", "2", "-c", "8", "-d", "1"}, url());
  expect_clean_run(run.report);
  EXPECT_EQ(run.report["threads"], 2);
}

TEST_F(Lbload, RequestCountEndsTheRunAtExactlyThatCount) {
  LoadRun run = run_lbload({"-n", "500", "-c", "8", "-d", "30"}, url());
  const json& r = run.report;
  EXPECT_EQ(count_at(r, "requests"), 500u) << r.dump();
  EXPECT_EQ(count_at(r, "errors_total"), 0u) << r.dump();
  EXPECT_LT(r.value("duration_s", 99.0), 20.0) << "the count, not the duration, ended the run";
}

TEST_F(Lbload, RequestCountWithNewConnectionsAndThreads) {
  LoadRun run = run_lbload({"-n", "300", "-c", "6", "-t", "2", "--new-connection", "-d", "30"}, url());
  EXPECT_EQ(count_at(run.report, "requests"), 300u) << run.report.dump();
  EXPECT_EQ(count_at(run.report, "errors_total"), 0u) << run.report.dump();
}

TEST_F(Lbload, OpenLoopSendsAtTheRate) {
  LoadRun run = run_lbload({"--rate", "500", "-d", "2", "-c", "16"}, url());
  const json& r = run.report;
  EXPECT_EQ(r["mode"], "open");
  EXPECT_EQ(r["rate"], 500.0);
  EXPECT_NEAR(static_cast<double>(count_at(r, "requests")), 1000.0, 100.0) << r.dump();
  EXPECT_EQ(count_at(r, "errors_total"), 0u) << r.dump();
  // A light load still goes over all 16 connections, so over both workers.
  EXPECT_GT(count_at(r["workers"], "0"), 0u) << r.dump();
  EXPECT_GT(count_at(r["workers"], "1"), 0u) << r.dump();
}

TEST_F(Lbload, OpenLoopWithNewConnections) {
  LoadRun run = run_lbload({"--rate", "400", "-d", "1", "--new-connection"}, url());
  EXPECT_NEAR(static_cast<double>(count_at(run.report, "requests")), 400.0, 40.0) << run.report.dump();
  EXPECT_EQ(count_at(run.report, "errors_total"), 0u) << run.report.dump();
}

TEST_F(Lbload, OpenLoopCountsWaitingInTheLatency) {
  // One connection, requests due every 2 ms, each taking 5 ms: they queue, and the queueing is
  // the latency (no coordinated omission) -- far above the 5 ms service time.
  LoadRun run = run_lbload({"--rate", "500", "-d", "1", "-c", "1", "--timeout", "5000"}, url("/work?us=5000"));
  const json& r = run.report;
  EXPECT_GT(count_at(r, "requests"), 0u) << r.dump();
  EXPECT_GT(r["latency_us"].value("p90", 0.0), 50'000.0) << r.dump();
}

TEST_F(Lbload, MixReportsLatencyPerPath) {
  LoadRun run = run_lbload({"-c", "4", "-d", "1", "--mix", "1:/,1:/work?us=2000"}, url());
  const json& r = run.report;
  ASSERT_TRUE(r.contains("paths")) << r.dump();
  const json& fast = r["paths"]["/"];
  const json& slow = r["paths"]["/work?us=2000"];
  EXPECT_GT(count_at(fast, "requests"), 0u) << r.dump();
  EXPECT_GT(count_at(slow, "requests"), 0u) << r.dump();
  EXPECT_GE(slow["latency_us"].value("p50", 0.0), 2000.0) << r.dump();
  EXPECT_EQ(count_at(fast, "requests") + count_at(slow, "requests"), count_at(r, "requests"));
  EXPECT_EQ(count_at(r, "errors_total"), 0u) << r.dump();
}

TEST_F(Lbload, HeldConnectionsAreCountedApart) {
  LoadRun run = run_lbload({"-c", "2", "-d", "1", "--hold", "4", "--hold-interval", "50"}, url());
  const json& held = run.report["held"];
  EXPECT_EQ(count_at(held, "connections"), 4u) << run.report.dump();
  // 4 connections x 20 ticks a second; the first tick of each is at the start.
  EXPECT_NEAR(static_cast<double>(count_at(held, "requests")), 80.0, 12.0) << run.report.dump();
  EXPECT_EQ(count_at(held, "errors_total"), 0u) << run.report.dump();
  EXPECT_EQ(count_at(run.report, "errors_total"), 0u) << run.report.dump();
}

TEST_F(Lbload, SlowAnswersAreTimeouts) {
  LoadRun run = run_lbload({"-c", "2", "-d", "1", "--timeout", "100"}, url("/sleep?ms=1000"));
  const json& r = run.report;
  EXPECT_EQ(count_at(r, "requests"), 0u) << r.dump();
  EXPECT_GE(count_at(r["errors"], "timeout"), 2u) << r.dump();
  EXPECT_EQ(count_at(r["errors"], "timeout"), count_at(r, "errors_total")) << r.dump();
}

TEST_F(Lbload, ErrorStatusesAreCounted) {
  LoadRun run = run_lbload({"-c", "2", "-n", "20"}, url("/no-such-page"));
  const json& r = run.report;
  EXPECT_EQ(count_at(r, "requests"), 0u) << r.dump();
  EXPECT_EQ(count_at(r["errors"], "bad_status"), 20u) << r.dump();
}

TEST_F(Lbload, Ipv6Loopback) {
  if (!has_ipv6_loopback()) GTEST_SKIP() << "no IPv6 loopback on this machine";
  LbdProcess v6({"--mode", "reuseport", "--workers", "1", "--listen", "[::1]:0"});
  auto ready = v6.wait_ready(after(10s));
  ASSERT_TRUE(ready) << v6.log();
  LoadRun run = run_lbload({"-c", "2", "-n", "50"}, url_of(ready->address()));
  EXPECT_EQ(count_at(run.report, "requests"), 50u) << run.report.dump();
}

// --- without lbd ------------------------------------------------------------------------------

// A port that is bound but not listening: every connect is refused, and nobody else can take it
// while the socket is open.
struct ClosedPort {
  ClosedPort() : fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    socklen_t len = sizeof(addr);
    EXPECT_EQ(getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
    port = ntohs(addr.sin_port);
  }
  UniqueFd fd;
  uint16_t port = 0;
};

TEST(LbloadWithoutServer, RefusedConnectionsAreCountedWithoutSpinning) {
  ClosedPort closed;
  LoadRun run = run_lbload({"-c", "16", "-d", "0.5"}, "http://127.0.0.1:" + std::to_string(closed.port) + "/");
  const json& r = run.report;
  const uint64_t refused = count_at(r["errors"], "refused");
  EXPECT_GT(refused, 16u) << "each connection tried more than once: " << r.dump();
  EXPECT_EQ(refused, count_at(r, "errors_total")) << r.dump();
  EXPECT_EQ(count_at(r, "requests"), 0u);
  // Backing off, 16 connections make a few hundred attempts in 0.5 s; spinning, tens of thousands.
  EXPECT_LT(refused, 2000u) << "lbload hammers a closed port: " << r.dump();
}

TEST(LbloadWithoutServer, OpenLoopCountsEachRefusedRequest) {
  ClosedPort closed;
  LoadRun run = run_lbload({"--rate", "200", "-d", "0.5"}, "http://127.0.0.1:" + std::to_string(closed.port) + "/");
  EXPECT_NEAR(static_cast<double>(count_at(run.report["errors"], "refused")), 100.0, 10.0) << run.report.dump();
}

TEST(LbloadWithoutServer, BadArgumentsExitTwoWithOneLine) {
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"http://example.com/"},
      {"--mix", "x:/", "http://127.0.0.1:1/"},
      {"--rate", "0", "http://127.0.0.1:1/"},
      {"-c", "0", "http://127.0.0.1:1/"},
      {"--no-such-flag", "http://127.0.0.1:1/"},
  };
  for (const auto& args : cases) {
    std::vector<std::string> argv = {LBLOAD_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    CommandResult r = run_command(argv, after(10s));
    EXPECT_TRUE(r.exited(2)) << r.describe();
    EXPECT_EQ(r.out, "") << r.describe();
    EXPECT_EQ(r.err.rfind("lbload: ", 0), 0u) << r.describe();
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "one line: " << r.describe();
  }
}

// A listener on 127.0.0.1 and a free port (written to `port`); `flags` go to socket() with
// SOCK_STREAM | SOCK_CLOEXEC.
UniqueFd listen_on_loopback(int flags, uint16_t* port) {
  UniqueFd listener(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | flags, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(listen(listener.get(), 1024), 0);
  socklen_t len = sizeof(addr);
  EXPECT_EQ(getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  *port = ntohs(addr.sin_port);
  return listener;
}

// A "null server": accepts every connection and closes it at once, on its own thread, until the
// test ends.
class NullServer {
 public:
  NullServer() : listener_(listen_on_loopback(0, &port_)) { thread_ = std::thread([this] { serve(); }); }
  ~NullServer() {
    stop_.store(true);
    thread_.join();
  }
  uint16_t port() const { return port_; }
  uint64_t accepted() const { return accepted_.load(); }

 private:
  void serve() {
    while (!stop_.load()) {
      pollfd p{listener_.get(), POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;  // the timeout only bounds how late stop_ is seen
      UniqueFd connection(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (connection) accepted_++;
    }
  }

  uint16_t port_ = 0;  // before listener_, whose initializer sets it
  UniqueFd listener_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> accepted_{0};
  std::thread thread_;
};

TEST(LbloadWithoutServer, ConnectOnlyCountsConnectionsTheServerCloses) {
  NullServer server;
  LoadRun run = run_lbload({"--connect-only", "-c", "4", "-d", "0.5"},
                           "http://127.0.0.1:" + std::to_string(server.port()) + "/");
  const json& r = run.report;
  EXPECT_EQ(r["connection"], "connect-only");
  EXPECT_GT(count_at(r, "requests"), 0u) << r.dump();
  EXPECT_EQ(count_at(r, "errors_total"), 0u) << r.dump();
  EXPECT_LE(count_at(r, "requests"), server.accepted()) << "only connections the server took count";
  EXPECT_GT(r["latency_us"].value("p50", 0.0), 0.0);
}

// A fast HTTP server for new connections, on its own thread: it reads each request, answers
// 200 with "Connection: close" and closes. Answers go out in bursts: once `burst` requests are
// waiting (or none came for a poll interval), all of them back to back. lbload then reaps a burst
// of responses in one turn of its loop and opens as many connections in the same submission --
// what a fast server does to it on loopback, made the rule instead of luck.
class BurstCloseServer {
 public:
  explicit BurstCloseServer(size_t burst) : burst_(burst), listener_(listen_on_loopback(SOCK_NONBLOCK, &port_)) {
    thread_ = std::thread([this] { serve(); });
  }
  ~BurstCloseServer() {
    stop_.store(true);
    thread_.join();
  }
  uint16_t port() const { return port_; }
  uint64_t answered() const { return answered_.load(); }

 private:
  struct Connection {
    UniqueFd fd;
    std::string received;
    bool complete = false;  // the whole request is in: waiting for the burst
  };

  void serve() {
    static constexpr std::string_view kResponse =
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    std::vector<Connection> connections;
    std::vector<pollfd> fds;
    std::vector<size_t> which;  // fds[i + 1] is connections[which[i]]
    while (!stop_.load()) {
      fds.assign(1, pollfd{listener_.get(), POLLIN, 0});
      which.clear();
      for (size_t i = 0; i < connections.size(); i++) {
        if (connections[i].complete) continue;
        fds.push_back(pollfd{connections[i].fd.get(), POLLIN, 0});
        which.push_back(i);
      }
      // The timeout bounds how late stop_ is seen, and how long a short burst waits.
      const int ready = poll(fds.data(), fds.size(), 20);
      for (size_t i = 1; i < fds.size(); i++) {
        if (fds[i].revents == 0) continue;
        Connection& c = connections[which[i - 1]];
        char buffer[4096];
        const ssize_t n = recv(c.fd.get(), buffer, sizeof(buffer), MSG_DONTWAIT);
        if (n > 0) {
          c.received.append(buffer, static_cast<size_t>(n));
          c.complete = c.received.find("\r\n\r\n") != std::string::npos;
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          c.fd = UniqueFd();  // the client gave up: dropped below
        }
      }
      if (fds[0].revents & POLLIN) {
        while (true) {
          UniqueFd accepted(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
          if (!accepted) break;
          connections.push_back(Connection{std::move(accepted), {}, false});
        }
      }
      size_t waiting = 0;
      for (const Connection& c : connections) waiting += c.fd && c.complete;
      const bool answer = waiting >= burst_ || (ready == 0 && waiting > 0);
      std::erase_if(connections, [&](Connection& c) {
        if (!c.fd) return true;
        if (!answer || !c.complete) return false;
        if (send(c.fd.get(), kResponse.data(), kResponse.size(), MSG_NOSIGNAL) ==
            static_cast<ssize_t>(kResponse.size())) {
          answered_++;
        }
        return true;  // closed by UniqueFd
      });
    }
  }

  size_t burst_;
  uint16_t port_ = 0;  // before listener_, whose initializer sets it
  UniqueFd listener_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> answered_{0};
  std::thread thread_;
};

// 16 connections answered at once are 16 closes and 16 new connections (close, socket, connect,
// send, recv: 80 submission entries) queued in one turn, more than the 64-entry queue of a
// 16-connection thread. A linked chain cut by the early flush ran out of order (recv on a slot
// with no socket yet, EBADF, or one not connected yet, ENOTCONN; send, EPIPE): 2-3 % "other"
// errors where wrk saw none.
TEST(LbloadWithoutServer, NewConnectionsAnsweredInBurstsHaveNoErrors) {
  BurstCloseServer server(16);
  LoadRun run = run_lbload({"--new-connection", "--close-header", "-c", "16", "-d", "1"},
                           "http://127.0.0.1:" + std::to_string(server.port()) + "/");
  const json& r = run.report;
  EXPECT_EQ(r["connection"], "new");
  EXPECT_GT(count_at(r, "requests"), 1000u) << r.dump();
  EXPECT_EQ(count_at(r, "errors_total"), 0u) << r.dump();
  EXPECT_LE(count_at(r, "requests"), server.answered()) << "only answers the server sent count";
}

}  // namespace
}  // namespace lbd::test
