// lbd refuses to start on a bad command line or a busy port: one clear line, the right exit code
// (2 for usage, 1 for a start-up failure), and nothing left running.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>

#include "support/lbd_test.h"

namespace lbd::test {
namespace {

// Someone else's server: a listener on a free loopback port (no SO_REUSEPORT), and its address.
void listen_elsewhere(UniqueFd& other, std::string& where) {
  other.reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(other.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(other.get(), 16), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(other.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  where = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
}

TEST(StartupErrors, PortInUseExits1NamingTheAddress) {
  UniqueFd other;
  std::string where;
  ASSERT_NO_FATAL_FAILURE(listen_elsewhere(other, where));

  LbdProcess lbd({"--mode", "reuseport", "--workers", "2", "--listen", where});
  EXPECT_EQ(lbd.wait_exit(after(10s)), ExitStatus::exited(1));
  const auto lines = lbd.lines();
  ASSERT_EQ(lines.size(), 1u) << "expected one line, got:\n" << lbd.log();
  EXPECT_TRUE(lbd.wait_for_log(R"(error +\[lbd\] cannot listen on )" + where + ": Address already in use$",
                               after(1s)))
      << lines[0];
}

TEST(StartupErrors, AdminPortInUseExits1NamingTheAddress) {
  UniqueFd other;
  std::string where;
  ASSERT_NO_FATAL_FAILURE(listen_elsewhere(other, where));

  LbdProcess lbd({"--mode", "reuseport", "--workers", "1", "--listen", "127.0.0.1:0", "--control",
                  "none", "--admin", where});
  EXPECT_EQ(lbd.wait_exit(after(10s)), ExitStatus::exited(1));
  const auto lines = lbd.lines();
  ASSERT_EQ(lines.size(), 1u) << "expected one line, got:\n" << lbd.log();
  EXPECT_TRUE(lbd.wait_for_log(R"(error +\[lbd\] admin endpoint: cannot listen on )" + where +
                                   ": Address already in use$",
                               after(1s)))
      << lines[0];
}

struct BadFlag {
  std::vector<std::string> args;
  std::string names;  // what the message must mention: the setting and the bad value
};
void PrintTo(const BadFlag& flag, std::ostream* out) {
  for (const auto& arg : flag.args) *out << arg << " ";
}

class BadFlags : public ::testing::TestWithParam<BadFlag> {};

TEST_P(BadFlags, Exit2WithOneLineNamingTheProblem) {
  std::vector<std::string> args = {"--listen", "127.0.0.1:0"};
  args.insert(args.end(), GetParam().args.begin(), GetParam().args.end());
  LbdProcess lbd(args);
  EXPECT_EQ(lbd.wait_exit(after(10s)), ExitStatus::exited(2));
  const auto lines = lbd.lines();
  ASSERT_FALSE(lines.empty());
  auto message = lbd.wait_for_log("^lbd: .*" + GetParam().names, after(1s));
  ASSERT_TRUE(message) << "no line names the problem";
  EXPECT_EQ(message->line, 0u) << "the problem is not the first line";
  // Nothing else but a pointer to --help: no log lines, no workers.
  for (size_t i = 1; i < lines.size(); i++) EXPECT_EQ(lines[i], "Run 'lbd --help' for the options.");
}

INSTANTIATE_TEST_SUITE_P(
    Flags, BadFlags,
    ::testing::Values(BadFlag{{"--workers", "x"}, "--workers.*'x'"},
                      BadFlag{{"--policy", "nope"}, "policy.*'nope'"},
                      BadFlag{{"--listen", "1.2.3.4.5:80"}, "listen address.*'1\\.2\\.3\\.4\\.5:80'"},
                      BadFlag{{"--mode", "fast"}, "--mode.*'fast'"},
                      BadFlag{{"--admin", "localhost:x"}, "--admin.*'localhost:x'"},
                      BadFlag{{"--idle-timeout", "-1"}, "--idle-timeout"}),
    [](const auto& test) {
      std::string name = test.param.args[0].substr(2);
      name.erase(std::remove(name.begin(), name.end(), '-'), name.end());
      return name;
    });

}  // namespace
}  // namespace lbd::test
