// lbload's command line (tools/lbload/options.h, url.h): URLs it accepts and refuses, the
// defaults, flags that cannot go together, and the exact request bytes it sends.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/result.h"
#include "lbload/options.h"
#include "lbload/url.h"

namespace lbd::load {
namespace {

std::string address_text(const Target& t) {
  char text[INET6_ADDRSTRLEN] = {};
  if (t.family() == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&t.address)->sin6_addr, text, sizeof(text));
  } else {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&t.address)->sin_addr, text, sizeof(text));
  }
  return text;
}

CommandLine parse(std::vector<std::string> args) {
  args.insert(args.begin(), "lbload");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  return parse_command_line(static_cast<int>(argv.size()), argv.data());
}

// The ConfigError message for these arguments, or "" if they were accepted.
std::string refusal(std::vector<std::string> args) {
  try {
    (void)parse(std::move(args));
    return "";
  } catch (const ConfigError& e) {
    return e.what();
  }
}

// --- URLs ---------------------------------------------------------------------------------------

TEST(LbloadUrl, ParsesIpv4) {
  Target t = parse_url("http://127.0.0.1:8080/hello?x=1");
  EXPECT_EQ(t.family(), AF_INET);
  EXPECT_EQ(address_text(t), "127.0.0.1");
  EXPECT_EQ(t.port, 8080);
  EXPECT_EQ(ntohs(reinterpret_cast<const sockaddr_in*>(&t.address)->sin_port), 8080);
  EXPECT_EQ(t.address_length, sizeof(sockaddr_in));
  EXPECT_EQ(t.host_header, "127.0.0.1:8080");
  EXPECT_EQ(t.path, "/hello?x=1");
}

TEST(LbloadUrl, ParsesBracketedIpv6) {
  Target t = parse_url("http://[::1]:9000/");
  EXPECT_EQ(t.family(), AF_INET6);
  EXPECT_EQ(address_text(t), "::1");
  EXPECT_EQ(t.port, 9000);
  EXPECT_EQ(t.address_length, sizeof(sockaddr_in6));
  EXPECT_EQ(t.host_header, "[::1]:9000");
  EXPECT_EQ(t.path, "/");
}

TEST(LbloadUrl, PathAndPortHaveDefaults) {
  Target t = parse_url("http://10.1.2.3");
  EXPECT_EQ(t.port, 80);
  EXPECT_EQ(t.path, "/");
  EXPECT_EQ(t.host_header, "10.1.2.3");
  EXPECT_EQ(parse_url("http://[::1]").port, 80);
}

TEST(LbloadUrl, RefusesBadUrls) {
  const char* bad[] = {
      "",
      "127.0.0.1:8080",
      "https://127.0.0.1:8080/",
      "http://",
      "http://localhost:8080/",
      "http://example.com/",
      "http://127.0.0.1:/",
      "http://127.0.0.1:0/",
      "http://127.0.0.1:65536/",
      "http://127.0.0.1:80x/",
      "http://::1:8080/",
      "http://[::1/",
      "http://[::1]x/",
      "http://[127.0.0.1]:80/",
      "http://[nonsense]:80/",
      "http://999.0.0.1:80/",
      "http://127.0.0.1:80/a b",
  };
  for (const char* url : bad) {
    try {
      (void)parse_url(url);
      ADD_FAILURE() << "accepted '" << url << "'";
    } catch (const ConfigError& e) {
      EXPECT_EQ(std::string(e.what()).rfind("bad URL '" + std::string(url) + "'", 0), 0u) << e.what();
    }
  }
}

// --- arguments ----------------------------------------------------------------------------------

TEST(LbloadOptions, Defaults) {
  const Options o = parse({"http://127.0.0.1:8080/x"}).options;
  EXPECT_EQ(o.url, "http://127.0.0.1:8080/x");
  EXPECT_EQ(o.connections, 64u);
  EXPECT_EQ(o.duration, std::chrono::seconds(10));
  EXPECT_EQ(o.max_requests, 0u);
  EXPECT_EQ(o.threads, 1u);
  EXPECT_EQ(o.connection, ConnectionMode::kKeepAlive);
  EXPECT_FALSE(o.open_loop());
  EXPECT_EQ(o.timeout, std::chrono::milliseconds(2000));
  EXPECT_EQ(o.hold, 0u);
  EXPECT_EQ(o.hold_interval, std::chrono::milliseconds(100));
  EXPECT_FALSE(o.close_header);
  EXPECT_FALSE(o.json);
  ASSERT_EQ(o.mix.size(), 1u);
  EXPECT_EQ(o.mix.paths()[0].path, "/x") << "the URL's path is the default mix";
}

TEST(LbloadOptions, ReadsEveryFlag) {
  const Options o = parse({"-c", "100", "-d", "2.5", "-n", "1000", "-t", "2", "--new-connection", "--rate",
                           "750.5", "--mix", "3:/,1:/work?us=10", "--timeout", "150", "--hold", "8",
                           "--hold-interval", "20", "--close-header", "--json", "http://[::1]:81/"})
                        .options;
  EXPECT_EQ(o.connections, 100u);
  EXPECT_EQ(o.duration, std::chrono::milliseconds(2500));
  EXPECT_EQ(o.max_requests, 1000u);
  EXPECT_EQ(o.threads, 2u);
  EXPECT_EQ(o.connection, ConnectionMode::kNew);
  ASSERT_TRUE(o.open_loop());
  EXPECT_EQ(*o.rate, 750.5);
  EXPECT_EQ(o.mix.size(), 2u);
  EXPECT_EQ(o.timeout, std::chrono::milliseconds(150));
  EXPECT_EQ(o.hold, 8u);
  EXPECT_EQ(o.hold_interval, std::chrono::milliseconds(20));
  EXPECT_TRUE(o.close_header);
  EXPECT_TRUE(o.json);
  EXPECT_EQ(parse({"--connect-only", "http://127.0.0.1:1/"}).options.connection, ConnectionMode::kConnectOnly);
}

TEST(LbloadOptions, HelpIsNotAnError) {
  const CommandLine c = parse({"--help"});
  ASSERT_TRUE(c.help.has_value());
  EXPECT_NE(c.help->find("--connections"), std::string::npos);
}

TEST(LbloadOptions, RefusesBadArgumentsInOneLine) {
  struct Case {
    std::vector<std::string> args;
    const char* says;
  };
  const std::string url = "http://127.0.0.1:8080/";
  const Case cases[] = {
      {{}, "URL is required"},
      {{"http://nowhere/"}, "bad URL"},
      {{"--mix", "0:/", url}, "bad --mix"},
      {{"--rate", "0", url}, "--rate must be a positive"},
      {{"--rate", "-5", url}, "--rate"},
      {{"--rate", "nan", url}, "--rate must be a positive"},
      {{"-c", "0", url}, "--connections must be"},
      {{"-c", "-3", url}, "connections"},
      {{"-d", "0", url}, "--duration must be"},
      {{"-d", "-1", url}, "--duration"},
      {{"-d", "inf", url}, "--duration must be"},
      {{"-t", "0", url}, "--threads must be"},
      {{"-t", "4", "-c", "2", url}, "more than --connections"},
      {{"--timeout", "0", url}, "--timeout must be"},
      {{"--hold-interval", "0", url}, "--hold-interval must be"},
      {{"--new-connection", "--connect-only", url}, "excludes"},
      {{"--connect-only", "--close-header", url}, "--close-header"},
      {{"--connect-only", "--mix", "1:/", url}, "--mix"},
      {{"--frobnicate", url}, "frobnicate"},
      {{url, url}, "not expected"},
  };
  for (const Case& c : cases) {
    std::string joined;
    for (const auto& a : c.args) joined += a + " ";
    SCOPED_TRACE(joined);
    const std::string message = refusal(c.args);
    ASSERT_FALSE(message.empty()) << "accepted";
    EXPECT_NE(message.find(c.says), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << "one line: " << message;
  }
}

// --- request bytes ------------------------------------------------------------------------------

TEST(LbloadOptions, BuildsTheExactRequest) {
  Options o = parse({"http://127.0.0.1:8080/"}).options;
  EXPECT_EQ(build_request(o, "/work?us=5"), "GET /work?us=5 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n");
  o.close_header = true;
  EXPECT_EQ(build_request(o, "/"), "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n");
  Options v6 = parse({"http://[::1]:9/"}).options;
  EXPECT_EQ(build_request(v6, "/"), "GET / HTTP/1.1\r\nHost: [::1]:9\r\n\r\n");
}

TEST(LbloadOptions, NewConnectionSendsNoCloseHeaderByDefault) {
  const Options o = parse({"--new-connection", "http://127.0.0.1:8080/"}).options;
  EXPECT_EQ(build_request(o, "/").find("Connection"), std::string::npos);
}

}  // namespace
}  // namespace lbd::load
