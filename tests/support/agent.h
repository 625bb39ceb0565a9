// HAProxy's agent-check (--agent) from a test: lbd with its agent on port 0 (the real port read
// from the log line "agent: answering HAProxy agent checks on ADDR"), asked the way HAProxy asks.
#pragma once

#include <signal.h>
#include <sys/socket.h>

#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "support/admin.h"

namespace lbd::test {

// One agent check as HAProxy makes it: connect, send `line` (HAProxy's agent-send) if any, read
// until lbd closes. Empty on failure.
inline std::string ask_agent(const net::Address& agent, const std::string& line = "", Deadline deadline = after(5s)) {
  UniqueFd fd(socket(agent.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd || connect(fd.get(), agent.sockaddr_ptr(), agent.length()) != 0) return {};
  if (!line.empty() && send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL) < 0) return {};
  timeval tv{.tv_sec = remaining_ms(deadline) / 1000, .tv_usec = (remaining_ms(deadline) % 1000) * 1000};
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string answer;
  char buffer[256];
  while (true) {
    const ssize_t n = recv(fd.get(), buffer, sizeof(buffer), 0);
    if (n <= 0) return n == 0 ? answer : std::string();
    answer.append(buffer, static_cast<size_t>(n));
  }
}

// The weight of an "up ready N%" answer, or -1.
inline int weight_of(const std::string& answer) {
  std::smatch m;
  static const std::regex up(R"(^up ready ([0-9]+)%\n$)");
  return std::regex_match(answer, m, up) ? std::stoi(m[1]) : -1;
}

class Agent : public AdminTest {
 protected:
  void start_with_agent(std::vector<std::string> extra, unsigned workers = 2) {
    std::vector<std::string> args = lbd_flags("reuseport", workers, {"--demo-routes", "--agent", "127.0.0.1:0"});
    args.insert(args.end(), extra.begin(), extra.end());
    ASSERT_NO_FATAL_FAILURE(start_with_admin(std::move(args)));
    auto line = lbd().wait_for_log(R"(\[lbd\] agent: answering HAProxy agent checks on (.+)$)", after(1s));
    ASSERT_TRUE(line) << "no 'agent: answering' line";
    agent_ = net::Address::parse(line->groups[1]);
  }
  std::string ask(const std::string& line = "") { return ask_agent(*agent_, line); }

  // A stop behind a balancer, as HAProxy would see it: SIGTERM, then an agent check that hears
  // "drain", so that lbd's --drain-grace ends a quiet second later instead of running out.
  void TearDown() override {
    if (lbd_ && agent_ && lbd().wait_exit(after(0s)) == ExitStatus::running()) {
      lbd().signal(SIGTERM);
      eventually(after(5s), [&] { return weight_of(ask()) < 0; }, 20ms);  // drain, maint, or gone
      EXPECT_EQ(lbd().wait_exit(after(10s)), ExitStatus::exited(0)) << "a graceful stop behind a balancer";
    }
    AdminTest::TearDown();
  }

  // New connections, one request each, until stopped: what a balancer sends a host.
  std::unique_ptr<LoadGenerator> steady_load(std::chrono::milliseconds duration = 60s) {
    return std::make_unique<LoadGenerator>(LoadOptions{.address = address(), .threads = 2, .duration = duration,
                                                       .max_requests = 1'000'000});
  }

  std::optional<net::Address> agent_;
};

}  // namespace lbd::test
