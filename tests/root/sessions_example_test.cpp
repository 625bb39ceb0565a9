// examples/sessions under lbd run --policy rr: each worker has its own memory, so a session kept
// there would break as a client's requests alternate workers. Kept in a real redis-server, one
// session's counter goes 1, 2, 3, ... whichever worker answers, and on through a rolling reload
// that replaces every worker.
#include <gtest/gtest.h>

#include <atomic>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/exec_test.h"
#include "support/npm_example.h"

namespace lbd::test {
namespace {

using nlohmann::json;

// A redis-server of the test's own: on a Unix socket in the test's temp dir (no port to pick),
// nothing saved to disk, stopped with the test. Its socket is open to everyone: the app's workers
// run as nobody.
class RedisServer {
 public:
  explicit RedisServer(const TempDir& dir)
      : socket_(dir.path("redis.sock")),
        process_(LbdProcess::Options{path_of("redis-server"), {"--port", "0", "--unixsocket", socket_,
                                                           "--unixsocketperm", "777", "--save", "",
                                                           "--appendonly", "no", "--dir", dir.path()}, {}}) {}

  bool wait_ready(Deadline deadline) {
    return process_.wait_for_log("[Rr]eady to accept connections", deadline).has_value();
  }
  const std::string& socket() const { return socket_; }
  std::string log() const { return process_.log(); }

 private:
  std::string socket_;
  LbdProcess process_;
};

// One GET / on a new connection, with the session's cookie when there is one.
HttpResult get_with_cookie(const net::Address& address, const std::string& sid) {
  std::string request = "GET / HTTP/1.1\r\nHost: lbd-test\r\nConnection: close\r\n";
  if (!sid.empty()) request += "Cookie: theme=dark; sid=" + sid + "\r\n";
  request += "\r\n";
  return fetch(address, request, after(5s));
}

class SessionsExample : public ExecTest {
 protected:
  void SetUp() override {
    LBD_REQUIRE_ROOT("--policy rr is lbd's steering (--mode bpf)");
    if (!on_path("redis-server")) GTEST_SKIP() << "needs redis-server (scripts/install-deps.sh installs it)";
    app_ = prepare_npm_example("sessions");
    if (!app_.skip_reason.empty()) GTEST_SKIP() << app_.skip_reason;
    ASSERT_TRUE(app_.problem.empty()) << app_.problem;
    redis_.emplace(dir_);
    ASSERT_TRUE(redis_->wait_ready(after(10s))) << "redis-server did not start:\n" << redis_->log();
  }
  // lbd (and so its workers, Redis's clients) before Redis, before the temp dir.
  void TearDown() override {
    lbd_.reset();
    redis_.reset();
  }

  NpmExample app_;
  std::optional<RedisServer> redis_;
};

struct Answer {
  int count = 0;
  int worker = -1;
  pid_t pid = 0;
};

TEST_F(SessionsExample, ASessionCountsOnAcrossWorkersAndThroughAReload) {
  ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "bpf", "--policy", "rr", "-i", "2", "--kill-timeout", "5",
                                         "--env", "REDIS_SOCKET=" + redis_->socket()},
                                        {"node", app_.path("server.js")}));
  const auto first_pids = serving_pids();
  ASSERT_EQ(first_pids.size(), 2u);

  // The first answer opens the session: a cookie, and count 1.
  HttpResult opened = get_with_cookie(address(), "");
  ASSERT_TRUE(opened.ok() && opened.status() == 200) << opened.describe();
  const std::string cookie = opened.response.header("Set-Cookie").value_or("");
  ASSERT_TRUE(cookie.starts_with("sid=")) << "no session cookie: " << cookie;
  const std::string sid = cookie.substr(4, cookie.find(';') - 4);
  ASSERT_EQ(json::parse(opened.response.body, nullptr, false).value("count", 0), 1) << opened.response.body;

  // Each request on a new connection: rr sends them to the workers in turn. Every answer must be
  // the next number of this one session, whoever gives it.
  std::vector<Answer> answers;
  std::string failures;
  auto ask = [&] {
    HttpResult r = get_with_cookie(address(), sid);
    const json body = r.ok() ? json::parse(r.response.body, nullptr, false) : json();
    if (!r.ok() || r.status() != 200 || !body.is_object() || body.value("session", "") != sid) {
      failures += "request " + std::to_string(answers.size() + 2) + ": " + r.describe() + " " +
                  (r.ok() ? r.response.body : "") + "\n";
      return;
    }
    if (r.response.header("Set-Cookie")) failures += "a new session was opened: " + r.response.body;
    answers.push_back({body.value("count", 0), r.worker(), body.value("pid", 0)});
  };
  for (int i = 0; i < 20; i++) ask();

  // Meanwhile lbd replaces both workers, one slot after the other; the client keeps asking.
  std::atomic<bool> reloaded{false};
  CommandResult reload;
  std::thread reloader([&] {
    reload = lbctl({"reload"});
    reloaded = true;
  });
  const size_t before_reload = answers.size();
  const Deadline bound = after(60s);
  while (!reloaded && Clock::now() < bound && failures.empty()) ask();
  reloader.join();
  const size_t during_reload = answers.size() - before_reload;
  for (int i = 0; i < 20; i++) ask();
  ASSERT_TRUE(reload.exited(0)) << reload.describe();
  const auto last_pids = serving_pids();
  ASSERT_EQ(last_pids.size(), 2u);

  EXPECT_EQ(failures, "");
  std::map<int, int> per_worker;
  std::set<pid_t> pids;
  bool counted_on = true;
  for (size_t i = 0; i < answers.size(); i++) {
    per_worker[answers[i].worker]++;
    pids.insert(answers[i].pid);
    if (answers[i].count != static_cast<int>(i) + 2) {
      counted_on = false;
      ADD_FAILURE() << "answer " << i + 2 << " counted " << answers[i].count << " (from worker " << answers[i].worker
                    << ", pid " << answers[i].pid << ")";
      break;
    }
  }
  EXPECT_TRUE(counted_on);
  // Both workers served the session, before the reload and after it (the last 20 answers are the
  // new workers'), so the count did cross from one process to another: not a vacuous pass.
  EXPECT_GT(per_worker[0], 0);
  EXPECT_GT(per_worker[1], 0);
  std::set<pid_t> after_reload;
  for (size_t i = answers.size() - std::min<size_t>(answers.size(), 20); i < answers.size(); i++) {
    after_reload.insert(answers[i].pid);
  }
  for (auto [slot, pid] : first_pids) {
    EXPECT_NE(last_pids.at(slot), pid) << "slot " << slot << " was not replaced";
    EXPECT_EQ(after_reload.count(pid), 0u) << "an old worker answered after the reload";
  }
  EXPECT_EQ(after_reload.size(), 2u) << "both new workers should have answered after the reload";
  std::cout << "one session, " << answers.size() + 1 << " requests (" << during_reload
            << " during the reload) by " << pids.size() << " processes (" << per_worker[0] << " by slot 0, "
            << per_worker[1] << " by slot 1): counted 1.." << (answers.empty() ? 1 : answers.back().count) << "\n";
  EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u) << lbd().log();
}

// A second session is a session of its own: its count starts at 1, the first one's is untouched.
TEST_F(SessionsExample, SessionsAreSeparate) {
  ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "bpf", "--policy", "rr", "-i", "2",
                                         "--env", "REDIS_SOCKET=" + redis_->socket()},
                                        {"node", app_.path("server.js")}));
  auto open_session = [&] {
    HttpResult r = get_with_cookie(address(), "");
    EXPECT_TRUE(r.ok() && r.status() == 200) << r.describe();
    const std::string cookie = r.response.header("Set-Cookie").value_or("");
    return cookie.starts_with("sid=") ? cookie.substr(4, cookie.find(';') - 4) : std::string();
  };
  auto count_of = [&](const std::string& sid) {
    HttpResult r = get_with_cookie(address(), sid);
    EXPECT_TRUE(r.ok() && r.status() == 200) << r.describe();
    return json::parse(r.ok() ? r.response.body : "{}", nullptr, false).value("count", 0);
  };
  const std::string a = open_session(), b = open_session();
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  EXPECT_NE(a, b);
  EXPECT_EQ(count_of(a), 2);
  EXPECT_EQ(count_of(a), 3);
  EXPECT_EQ(count_of(b), 2);
  EXPECT_EQ(count_of(a), 4);
  // A cookie that is not ours opens a new session rather than trusting it.
  HttpResult forged = get_with_cookie(address(), "../../etc");
  ASSERT_TRUE(forged.ok()) << forged.describe();
  EXPECT_TRUE(forged.response.header("Set-Cookie").has_value());
}

// A sid that looks like ours but that the server never issued (session fixation: an attacker plants
// a known id in a victim's browser) is not adopted: the answer opens a new session under a fresh
// id, counted from 1, and the planted id stays unknown.
TEST_F(SessionsExample, AnIdTheServerNeverIssuedIsNotAdopted) {
  ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "bpf", "--policy", "rr", "-i", "2",
                                         "--env", "REDIS_SOCKET=" + redis_->socket()},
                                        {"node", app_.path("server.js")}));
  std::random_device random;
  auto hex = [&](int digits) {
    std::string out;
    for (int i = 0; i < digits; i++) out += "0123456789abcdef"[random() % 16];
    return out;
  };
  const std::string planted = hex(8) + "-" + hex(4) + "-4" + hex(3) + "-a" + hex(3) + "-" + hex(12);
  ASSERT_EQ(planted.size(), 36u);
  auto answer_to = [&](const std::string& sid, std::string& issued, json& body) {
    HttpResult r = get_with_cookie(address(), sid);
    ASSERT_TRUE(r.ok() && r.status() == 200) << r.describe();
    const std::string cookie = r.response.header("Set-Cookie").value_or("");
    issued = cookie.starts_with("sid=") ? cookie.substr(4, cookie.find(';') - 4) : std::string();
    body = json::parse(r.response.body, nullptr, false);
  };
  // Twice, so both workers (rr) are asked, and the first answer did not create the planted session.
  std::set<std::string> issued_ids;
  for (int i = 0; i < 2; i++) {
    std::string issued;
    json body;
    ASSERT_NO_FATAL_FAILURE(answer_to(planted, issued, body));
    ASSERT_EQ(issued.size(), 36u) << "no new session cookie for a sid the server never issued; body " << body.dump();
    EXPECT_NE(issued, planted) << "the server adopted the client's sid";
    EXPECT_EQ(body.value("session", ""), issued) << body.dump();
    EXPECT_EQ(body.value("count", 0), 1) << body.dump();
    issued_ids.insert(issued);
  }
  EXPECT_EQ(issued_ids.size(), 2u) << "each answer should have opened a session of its own";
  // The id the server did issue is honoured.
  std::string issued;
  json body;
  ASSERT_NO_FATAL_FAILURE(answer_to(*issued_ids.begin(), issued, body));
  EXPECT_EQ(issued, "") << "a new cookie for a session that exists";
  EXPECT_EQ(body.value("session", ""), *issued_ids.begin()) << body.dump();
  EXPECT_EQ(body.value("count", 0), 2) << body.dump();
  EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u) << lbd().log();
}

}  // namespace
}  // namespace lbd::test
