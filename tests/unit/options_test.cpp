// What an operator types: listen addresses, CPU lists and lbd's flags. Good input gives the
// documented values; bad input gives a ConfigError whose one-line message names what was wrong.
#include <gtest/gtest.h>

#include <sys/socket.h>

#include <initializer_list>
#include <string>
#include <vector>

#include "config/options.h"

namespace lbd {
namespace {

// --- listen addresses -----------------------------------------------------------------------

TEST(ListenAddress, ParsesTheAcceptedForms) {
  struct Case {
    const char* input;
    int family;
    uint16_t port;
    const char* canonical;
  };
  const Case cases[] = {
      {"127.0.0.1:8080", AF_INET, 8080, "127.0.0.1:8080"},
      {"0.0.0.0:80", AF_INET, 80, "0.0.0.0:80"},
      {"[::1]:9000", AF_INET6, 9000, "[::1]:9000"},
      {"[::]:8080", AF_INET6, 8080, "[::]:8080"},
      {"[2001:db8::1]:443", AF_INET6, 443, "[2001:db8::1]:443"},
      {"8080", AF_INET, 8080, "0.0.0.0:8080"},
      {":8080", AF_INET, 8080, "0.0.0.0:8080"},
      {"127.0.0.1:0", AF_INET, 0, "127.0.0.1:0"},
      {"0", AF_INET, 0, "0.0.0.0:0"},
      {"10.1.2.3:65535", AF_INET, 65535, "10.1.2.3:65535"},
  };
  for (const Case& c : cases) {
    net::Address a = net::Address::parse(c.input);
    EXPECT_EQ(a.family(), c.family) << c.input;
    EXPECT_EQ(a.is_v6(), c.family == AF_INET6) << c.input;
    EXPECT_EQ(a.port(), c.port) << c.input;
    EXPECT_EQ(a.to_string(), c.canonical) << c.input;
  }
}

TEST(ListenAddress, RejectsBadInputNamingIt) {
  struct Case {
    const char* description;
    const char* input;
    const char* hint;  // a word the message must contain besides the input
  };
  const Case cases[] = {
      {"port too large", "127.0.0.1:65536", "port"},
      {"port far too large", "127.0.0.1:99999999999", "port"},
      {"negative port", "127.0.0.1:-1", "port"},
      {"port not a number", "127.0.0.1:http", "port"},
      {"empty port", "127.0.0.1:", "port"},
      {"trailing junk after port", "127.0.0.1:80x", "port"},
      {"bare port not a number", "eighty", "port"},
      {"empty input", "", "port"},
      {"unbracketed IPv6", "::1:8080", "bracket"},
      {"unbracketed IPv6 wildcard", ":::8080", "bracket"},
      {"bracket not closed", "[::1:8080", "IPv6"},
      {"no colon after bracket", "[::1]8080", "IPv6"},
      {"no port after bracket", "[::1]", "IPv6"},
      {"hostname", "localhost:8080", "not an IPv4 or IPv6 address"},
      {"garbage host", "1.2.3:80", "not an IPv4 or IPv6 address"},
      {"garbage in brackets", "[nope]:80", "not an IPv4 or IPv6 address"},
  };
  for (const Case& c : cases) {
    try {
      net::Address::parse(c.input);
      ADD_FAILURE() << c.description << ": '" << c.input << "' was accepted";
    } catch (const ConfigError& e) {
      std::string message = e.what();
      EXPECT_NE(message.find("'" + std::string(c.input) + "'"), std::string::npos)
          << c.description << ": " << message;
      EXPECT_NE(message.find(c.hint), std::string::npos) << c.description << ": " << message;
      EXPECT_EQ(message.find('\n'), std::string::npos) << c.description << ": " << message;
    }
  }
}

TEST(ListenAddress, WithPortKeepsTheHostAndFamily) {
  EXPECT_EQ(net::Address::parse("127.0.0.1:0").with_port(4242).to_string(), "127.0.0.1:4242");
  net::Address v6 = net::Address::parse("[::1]:0").with_port(65535);
  EXPECT_TRUE(v6.is_v6());
  EXPECT_EQ(v6.to_string(), "[::1]:65535");
}

TEST(ListenAddress, SockaddrRoundTrips) {
  for (const char* text : {"192.0.2.7:1234", "[fe80::1]:99"}) {
    net::Address a = net::Address::parse(text);
    net::Address b = net::Address::from_sockaddr(a.sockaddr_ptr(), a.length());
    EXPECT_EQ(b.to_string(), text);
    EXPECT_EQ(b.length(), a.length());
  }
}

// --- CPU lists ------------------------------------------------------------------------------

SupervisorOptions parse(std::initializer_list<std::string> args);  // below: lbd's command line

TEST(CpuList, ParsesRangesAndSinglesSortedWithoutDuplicates) {
  struct Case {
    const char* input;
    std::vector<int> expected;
  };
  const Case cases[] = {
      {"0", {0}},
      {"0-3,6", {0, 1, 2, 3, 6}},
      {"6,0-3", {0, 1, 2, 3, 6}},
      {"2,2,1-2", {1, 2}},
      {"5-5", {5}},
      {"0-1,1-2", {0, 1, 2}},
  };
  for (const Case& c : cases) {
    auto cpus = parse_cpu_list(c.input);
    ASSERT_TRUE(cpus) << c.input << ": " << cpus.error().message();
    EXPECT_EQ(*cpus, c.expected) << c.input;
  }
}

TEST(CpuList, RejectsBadListsWithOneLineAndTheFlagNamesItself) {
  for (const char* input : {"", "a", "1,,2", ",", "-1", "1-", "-", "3-1", "1.5", "0-x", "100000", "0-2000000000"}) {
    auto cpus = parse_cpu_list(input);
    ASSERT_FALSE(cpus) << "'" << input << "' was accepted";
    const std::string message = cpus.error().message();
    EXPECT_FALSE(message.empty());
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    if (*input == '\0') continue;  // an empty --cpus means every allowed CPU
    try {
      parse({"--cpus", input});
      ADD_FAILURE() << "--cpus '" << input << "' was accepted";
    } catch (const ConfigError& e) {
      EXPECT_EQ(std::string(e.what()), "--cpus: " + message);
    }
  }
}

// --- the command line -----------------------------------------------------------------------

// argv for parse_command_line; argv[0] is "lbd".
class Argv {
 public:
  Argv(std::initializer_list<std::string> args) : storage_{"lbd"} {
    storage_.insert(storage_.end(), args);
    for (auto& s : storage_) pointers_.push_back(s.data());
    pointers_.push_back(nullptr);
  }
  int argc() const { return static_cast<int>(storage_.size()); }
  char** argv() { return pointers_.data(); }

 private:
  std::vector<std::string> storage_;
  std::vector<char*> pointers_;
};

SupervisorOptions parse(std::initializer_list<std::string> args) {
  Argv a(args);
  ParsedCommandLine parsed = parse_command_line(a.argc(), a.argv());
  if (!parsed.options) throw std::logic_error("no options: help or version was printed");
  return *parsed.options;
}

TEST(CommandLine, DefaultsAreTheDocumentedOnes) {
  SupervisorOptions o = parse({});
  EXPECT_EQ(o.cpus, allowed_cpus());
  EXPECT_EQ(o.workers, allowed_cpus().size()) << "one worker per allowed CPU";
  ASSERT_EQ(o.listen.size(), 1u);
  EXPECT_EQ(o.listen[0].to_string(), "0.0.0.0:8080");
  EXPECT_TRUE(o.pin);
  EXPECT_EQ(o.mode, Mode::kBpf);
  EXPECT_EQ(o.steering.policy, Policy::kLeast);
  EXPECT_EQ(o.steering.stale_after, std::chrono::milliseconds(50));
  EXPECT_EQ(o.idle_timeout, std::chrono::seconds(60));
  EXPECT_EQ(o.shutdown_timeout, std::chrono::seconds(10));
  EXPECT_EQ(o.max_restarts, 5u);
  EXPECT_EQ(o.restart_window, std::chrono::seconds(60));
  EXPECT_EQ(o.max_connections, 65536u);
  EXPECT_EQ(o.backlog, 4096);
  EXPECT_EQ(o.log_level, "info");
  EXPECT_EQ(o.http.max_header_bytes, HttpLimits{}.max_header_bytes);
  EXPECT_EQ(o.http.max_body_bytes, HttpLimits{}.max_body_bytes);
  EXPECT_FALSE(o.admin.has_value()) << "the admin endpoint is off unless asked for";
}

TEST(CommandLine, WorkersAutoMeansOnePerSelectedCpu) {
  EXPECT_EQ(parse({"--workers", "auto"}).workers, allowed_cpus().size());
  SupervisorOptions o = parse({"--workers", "auto", "--cpus", "0-2,5"});
  EXPECT_EQ(o.workers, 4u);
  EXPECT_EQ(o.cpus, (std::vector<int>{0, 1, 2, 5}));
}

// PM2's `-i -1`: one per CPU but one, to leave a CPU for something else; never fewer than one.
TEST(CommandLine, WorkersMaxMinusNLeavesNCpusFree) {
  EXPECT_EQ(parse({"--workers", "max-1", "--cpus", "0-3"}).workers, 3u);
  EXPECT_EQ(parse({"--workers", "-1", "--cpus", "0-3"}).workers, 3u);
  EXPECT_EQ(parse({"-w", "-2", "--cpus", "0-3"}).workers, 2u);
  EXPECT_EQ(parse({"--workers", "max-3", "--cpus", "0-3"}).workers, 1u);
  EXPECT_EQ(parse({"--workers", "max-4", "--cpus", "0-3"}).workers, 1u) << "at least one";
  EXPECT_EQ(parse({"--workers", "-9", "--cpus", "0"}).workers, 1u) << "at least one";
  EXPECT_EQ(parse({"run", "-i", "-1", "--cpus", "0-1", "--allow-root", "--", "/bin/true"}).workers, 1u);
  EXPECT_EQ(parse({"run", "-i", "max-1", "--cpus", "0-2", "--allow-root", "--", "/bin/true"}).workers, 2u);
}

TEST(CommandLine, ReadsEveryFlag) {
  SupervisorOptions o =
      parse({"-w", "3", "-l", "127.0.0.1:0", "--listen", "[::1]:9000", "--no-pin", "-p", "rr",
             "-m", "reuseport", "--idle-timeout", "1.5", "--shutdown-timeout", "2",
             "--max-restarts", "7", "--restart-window", "30", "--max-connections", "100",
             "--backlog", "64", "--stale-after", "80", "--log-level", "debug",
             "--admin", "127.0.0.1:0"});
  EXPECT_EQ(o.workers, 3u);
  ASSERT_EQ(o.listen.size(), 2u);
  EXPECT_EQ(o.listen[0].to_string(), "127.0.0.1:0");
  EXPECT_EQ(o.listen[1].to_string(), "[::1]:9000");
  EXPECT_FALSE(o.pin);
  EXPECT_EQ(o.steering.policy, Policy::kRoundRobin);
  EXPECT_EQ(o.mode, Mode::kReuseport);
  EXPECT_EQ(o.idle_timeout, std::chrono::milliseconds(1500));
  EXPECT_EQ(o.shutdown_timeout, std::chrono::seconds(2));
  EXPECT_EQ(o.max_restarts, 7u);
  EXPECT_EQ(o.restart_window, std::chrono::seconds(30));
  EXPECT_EQ(o.max_connections, 100u);
  EXPECT_EQ(o.backlog, 64);
  EXPECT_EQ(o.steering.stale_after, std::chrono::milliseconds(80));
  EXPECT_EQ(o.log_level, "debug");
  ASSERT_TRUE(o.admin.has_value());
  EXPECT_EQ(o.admin->to_string(), "127.0.0.1:0");
  EXPECT_EQ(parse({"--admin", "[::1]:9180"}).admin->to_string(), "[::1]:9180");
}

// Behind a balancer: --agent, and --drain-grace, whose default is 10 s with an agent to tell and
// none without; 0 turns it off even then.
TEST(CommandLine, AgentAndDrainGrace) {
  SupervisorOptions plain = parse({});
  EXPECT_FALSE(plain.agent.has_value());
  EXPECT_EQ(plain.drain_grace, std::chrono::milliseconds(0));
  SupervisorOptions agent = parse({"--agent", "0.0.0.0:9181"});
  ASSERT_TRUE(agent.agent.has_value());
  EXPECT_EQ(agent.agent->to_string(), "0.0.0.0:9181");
  EXPECT_EQ(agent.drain_grace, std::chrono::seconds(10));
  EXPECT_EQ(parse({"--agent", "0.0.0.0:9181", "--drain-grace", "0"}).drain_grace, std::chrono::milliseconds(0));
  EXPECT_EQ(parse({"--drain-grace", "2.5"}).drain_grace, std::chrono::milliseconds(2500));
}

TEST(CommandLine, AcceptsEveryPolicyAndMode) {
  EXPECT_EQ(parse({"--policy", "rr"}).steering.policy, Policy::kRoundRobin);
  EXPECT_EQ(parse({"--policy", "least"}).steering.policy, Policy::kLeast);
  EXPECT_EQ(parse({"--policy", "hash"}).steering.policy, Policy::kHash);
  EXPECT_EQ(parse({"--policy", "sticky"}).steering.policy, Policy::kSticky);
  // sticky is the steering program's: the kernel's hash would break it without a word.
  try {
    parse({"--policy", "sticky", "--mode", "reuseport"});
    ADD_FAILURE() << "--policy sticky --mode reuseport was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("--policy sticky needs --mode bpf"), std::string::npos) << e.what();
  }
  EXPECT_EQ(parse({"--mode", "bpf"}).mode, Mode::kBpf);
  EXPECT_EQ(parse({"--mode", "reuseport"}).mode, Mode::kReuseport);
  EXPECT_EQ(parse({"--mode", "shared"}).mode, Mode::kShared);
  EXPECT_EQ(parse({"--mode", "handoff"}).mode, Mode::kHandoff);
}

TEST(CommandLine, PolicyAndModeNamesRoundTrip) {
  for (Policy p : {Policy::kRoundRobin, Policy::kLeast, Policy::kHash}) {
    EXPECT_EQ(*parse_policy(policy_name(p)), p);
  }
  EXPECT_EQ(parse_policy("fastest").error().message(), "unknown policy 'fastest' (expected rr, least, hash or sticky)");
  for (Mode m : {Mode::kBpf, Mode::kReuseport, Mode::kShared, Mode::kHandoff}) EXPECT_EQ(*parse_mode(mode_name(m)), m);
  EXPECT_STREQ(mode_name(Mode::kBpf), "bpf");
  EXPECT_STREQ(mode_name(Mode::kReuseport), "reuseport");
  EXPECT_STREQ(mode_name(Mode::kShared), "shared");
  EXPECT_STREQ(mode_name(Mode::kHandoff), "handoff");
}

TEST(CommandLine, RejectsBadValuesWithAOneLineMessage) {
  struct Case {
    const char* description;
    std::vector<std::string> args;
    std::vector<std::string> message_mentions;
  };
  const Case cases[] = {
      {"workers not a number", {"--workers", "many"}, {"--workers", "many"}},
      {"workers zero", {"--workers", "0"}, {"--workers", "'0'"}},
      {"workers max minus junk", {"--workers", "max-x"}, {"--workers", "max-x"}},
      {"workers minus nothing", {"--workers", "max-"}, {"--workers", "max-"}},
      {"workers trailing junk", {"--workers", "4x"}, {"--workers", "4x"}},
      {"workers above the slot limit", {"--workers", "65"}, {"--workers", "64"}},
      {"unknown policy", {"--policy", "fastest"}, {"policy", "fastest"}},
      {"unknown mode", {"--mode", "magic"}, {"--mode", "magic"}},
      {"unknown log level", {"--log-level", "loud"}, {"--log-level", "loud"}},
      {"bad listen address", {"--listen", "nowhere:80"}, {"nowhere:80"}},
      {"bad admin address", {"--admin", "127.0.0.1:http"}, {"--admin", "127.0.0.1:http"}},
      {"bad agent address", {"--agent", "haproxy"}, {"--agent", "haproxy"}},
      {"negative drain grace", {"--drain-grace", "-3"}, {"--drain-grace"}},
      {"bad cpu list", {"--cpus", "3-1"}, {"--cpus", "3-1"}},
      {"idle timeout zero", {"--idle-timeout", "0"}, {"--idle-timeout"}},
      {"stale-after below the heartbeat period", {"--stale-after", "5"}, {"--stale-after"}},
      {"max connections too small", {"--max-connections", "1"}, {"--max-connections"}},
      {"backlog zero", {"--backlog", "0"}, {"--backlog"}},
      {"unknown flag", {"--frobnicate"}, {"--frobnicate"}},
      {"too many listen addresses",
       {"-l", "1", "-l", "2", "-l", "3", "-l", "4", "-l", "5", "-l", "6", "-l", "7", "-l", "8",
        "-l", "9"},
       {"--listen"}},
  };
  for (const Case& c : cases) {
    std::vector<std::string> storage{"lbd"};
    storage.insert(storage.end(), c.args.begin(), c.args.end());
    std::vector<char*> argv;
    for (auto& s : storage) argv.push_back(s.data());
    argv.push_back(nullptr);
    try {
      parse_command_line(static_cast<int>(storage.size()), argv.data());
      ADD_FAILURE() << c.description << ": accepted";
    } catch (const ConfigError& e) {
      std::string message = e.what();
      EXPECT_FALSE(message.empty()) << c.description;
      EXPECT_EQ(message.find('\n'), std::string::npos) << c.description << ": " << message;
      for (const auto& word : c.message_mentions) {
        EXPECT_NE(message.find(word), std::string::npos)
            << c.description << ": '" << message << "' does not mention " << word;
      }
    }
  }
}

TEST(CommandLine, RunReadinessDefaultsDependOnTheMode) {
  using std::chrono::milliseconds;
  // bpf: a program is ready when seen accepting; no delay unless asked for.
  SupervisorOptions bpf = parse({"run", "--mode", "bpf", "--", "server"});
  ASSERT_TRUE(bpf.program.has_value());
  EXPECT_FALSE(bpf.program->ready_delay.has_value());
  // reuseport: nothing can be probed, so the delay is the default signal.
  SupervisorOptions reuseport = parse({"run", "--mode", "reuseport", "--", "server"});
  EXPECT_EQ(reuseport.program->ready_delay, milliseconds(1000));
  // Asked for: in either mode.
  SupervisorOptions asked = parse({"run", "--mode", "bpf", "--ready-delay", "2.5", "--", "server"});
  EXPECT_EQ(asked.program->ready_delay, milliseconds(2500));
  EXPECT_THROW(parse({"run", "--ready-delay", "40", "--ready-timeout", "30", "--", "server"}), ConfigError);
}

TEST(CommandLine, VersionPrintsAndAsksMainToExit) {
  Argv a({"--version"});
  testing::internal::CaptureStdout();
  ParsedCommandLine parsed = parse_command_line(a.argc(), a.argv());
  std::string out = testing::internal::GetCapturedStdout();
  EXPECT_FALSE(parsed.options.has_value());
  EXPECT_NE(out.find(LBD_VERSION), std::string::npos) << out;
}

TEST(CommandLine, HelpPrintsAndAsksMainToExit) {
  Argv a({"--help"});
  testing::internal::CaptureStdout();
  ParsedCommandLine parsed = parse_command_line(a.argc(), a.argv());
  std::string out = testing::internal::GetCapturedStdout();
  EXPECT_FALSE(parsed.options.has_value());
  EXPECT_NE(out.find("--policy"), std::string::npos);
}

}  // namespace
}  // namespace lbd
