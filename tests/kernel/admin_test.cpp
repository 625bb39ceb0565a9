// The admin endpoint (--admin) as a monitoring system and a load balancer's health check
// see it, against lbd in --mode reuseport (no root needed): /healthz, /readyz through drain and
// stop, 404/405, bad and silent clients that must not hurt anyone else, and /metrics: valid for
// promtool, counting every request in its duration histogram, and never going backwards across
// a reload or a crash.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iostream>

#include "support/admin.h"

namespace lbd::test {
namespace {

using nlohmann::json;

class Admin : public AdminTest {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(start_with_admin(lbd_flags("reuseport", 2, {"--demo-routes"}))); }

  // lbd still serves: the admin endpoint answers, and so does a worker.
  void expect_still_serving() {
    EXPECT_EQ(admin_get("/healthz").status(), 200);
    HttpResult r = fetch(address(), http_get("/"), after(2s));
    EXPECT_EQ(r.status(), 200) << r.describe();
    EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u);
  }
};

// --- health and readiness -------------------------------------------------------------------------

TEST_F(Admin, HealthzAndReadyzAnswer200WhileServing) {
  HttpResult health = admin_get("/healthz");
  ASSERT_EQ(health.status(), 200) << health.describe();
  EXPECT_EQ(health.response.body, "ok\n");
  EXPECT_TRUE(health.response.closes()) << "every admin answer says Connection: close";

  HttpResult ready = admin_get("/readyz");
  ASSERT_EQ(ready.status(), 200) << ready.describe();
  EXPECT_EQ(ready.response.body, "ready\n");

  // HEAD, as some health checkers send it: the same status, no body.
  HttpConnection c = HttpConnection::open(admin_address(), after(2s));
  HttpResult head = c.request(http_head("/readyz"), after(2s));
  ASSERT_EQ(head.status(), 200) << head.describe();
  EXPECT_EQ(head.response.body, "");
  EXPECT_EQ(head.response.header("Content-Length"), "6");
}

TEST_F(Admin, OtherPathsGet404AndOtherMethods405) {
  HttpResult missing = admin_get("/");
  EXPECT_EQ(missing.status(), 404) << missing.describe();
  EXPECT_EQ(admin_get("/metrics/x").status(), 404);
  EXPECT_EQ(admin_get("/health").status(), 404);

  HttpResult post = fetch(admin_address(), http_post("/metrics", "x", true), after(2s));
  ASSERT_EQ(post.status(), 405) << post.describe();
  EXPECT_EQ(post.response.header("Allow"), "GET, HEAD");
  expect_still_serving();
}

TEST_F(Admin, ReadyzTurns503AsSoonAsDrainAllReturnsAndBackAfterUndrain) {
  CommandResult drained = lbctl({"drain", "--all"});
  const Deadline returned = Clock::now();
  ASSERT_TRUE(drained.exited(0)) << drained.describe();
  // The slots leave steering before lbctl gets its answer, so the first question after it
  // already gets 503: well within the 100 ms a balancer is promised.
  HttpResult first = admin_get("/readyz", returned + 2s);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - returned);
  ASSERT_TRUE(first.ok()) << first.describe();
  EXPECT_EQ(first.response.status, 503) << first.response.body;
  EXPECT_EQ(first.response.body, "not ready: every worker is drained\n");
  EXPECT_LT(took, 100ms) << "the answer itself came late";
  std::cout << "readyz answered 503 " << took.count() << " ms after lbctl drain --all returned\n";
  EXPECT_EQ(admin_get("/healthz").status(), 200) << "drained, but alive";
  EXPECT_EQ(scrape().sum("lbd_ready"), 0);

  CommandResult back = lbctl({"undrain", "--all"});
  ASSERT_TRUE(back.exited(0)) << back.describe();
  // undrain returns once every slot serves again.
  HttpResult again = admin_get("/readyz");
  EXPECT_EQ(again.status(), 200) << again.describe() << " " << again.response.body;
  EXPECT_EQ(scrape().sum("lbd_ready"), 1);
}

TEST_F(Admin, ReadyzIs503DuringAGracefulStop) {
  // A slow request keeps the stop going for 2 s.
  HttpConnection c = HttpConnection::open(address(), after(2s));
  ASSERT_TRUE(c.valid());
  ASSERT_EQ(c.send(http_get("/") + http_get("/sleep?ms=2000"), after(2s)), Outcome::kOk);
  HttpResult started = c.read_response(after(2s));
  ASSERT_EQ(started.status(), 200) << started.describe();  // the sleep has begun behind it

  lbd().signal(SIGTERM);
  int status = 0;
  EXPECT_TRUE(eventually(after(1s), [&] {
    status = admin_get("/readyz", after(1s)).status();
    return status == 503;
  }, 5ms)) << "readyz still answers " << status << " after SIGTERM";
  EXPECT_EQ(admin_get("/healthz").status(), 200) << "stopping, but alive";
  EXPECT_EQ(admin_get("/readyz").response.body, "not ready: lbd is stopping\n");
  EXPECT_TRUE(c.nothing_received()) << "the stop was over before readyz was checked";

  HttpResult slept = c.read_response(after(5s));
  ASSERT_TRUE(slept.ok()) << slept.describe();
  EXPECT_EQ(slept.response.body, "slept 2000 ms\n");
  EXPECT_EQ(lbd().wait_exit(after(10s)), ExitStatus::exited(0));
}

// --- bad and silent clients --------------------------------------------------------------------------

struct BadRequest {
  const char* name;
  std::string bytes;
  int status;
};
void PrintTo(const BadRequest& bad, std::ostream* out) { *out << bad.name; }

class AdminBadRequest : public Admin, public ::testing::WithParamInterface<BadRequest> {};

TEST_P(AdminBadRequest, GetsAnErrorAnswerThenACloseAndLbdKeepsServing) {
  HttpConnection c = HttpConnection::open(admin_address(), after(2s));
  ASSERT_TRUE(c.valid());
  HttpResult r = c.request(GetParam().bytes, after(5s));
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.response.status, GetParam().status) << r.response.body;
  EXPECT_TRUE(r.response.closes());
  EXPECT_EQ(c.wait_for_close(after(3s)), PeerEnd::kClosed) << "an orderly close, not a reset";
  expect_still_serving();
}

INSTANTIATE_TEST_SUITE_P(
    Inputs, AdminBadRequest,
    ::testing::Values(
        BadRequest{"NotHttp", "hello admin\r\n\r\n", 400},
        BadRequest{"TlsClientHello", std::string("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 11), 400},
        BadRequest{"NulInTarget", std::string("GET /metrics\0 HTTP/1.1\r\n\r\n", 26), 400},
        BadRequest{"HeadersOver8KiB",
                   "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20'000, 'a') + "\r\n\r\n", 431},
        BadRequest{"TargetOver8KiB", "GET /" + std::string(10'000, 'm') + " HTTP/1.1\r\nHost: x\r\n\r\n", 431},
        BadRequest{"BodyOver4KiB",
                   "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" +
                       std::string(100'000, 'b'),
                   413}),
    [](const auto& test) { return std::string(test.param.name); });

TEST_F(Admin, SilentClientsDoNotBlockOthersAndAreClosedAfter5s) {
  const Deadline opened = Clock::now();
  std::vector<HttpConnection> silent;
  for (int i = 0; i < 5; i++) {
    silent.push_back(HttpConnection::open(admin_address(), after(2s)));
    ASSERT_TRUE(silent.back().valid());
  }
  HttpConnection half = HttpConnection::open(admin_address(), after(2s));
  ASSERT_EQ(half.send("GET /metrics HTTP/1.1\r\nHost: x\r\n", after(1s)), Outcome::kOk);  // no end

  const Deadline asked = Clock::now();
  HttpResult health = admin_get("/healthz", after(1s));
  EXPECT_EQ(health.status(), 200) << health.describe();
  EXPECT_LT(Clock::now() - asked, 500ms);
  MetricSamples m = scrape();
  EXPECT_GT(m.count("lbd_requests_total"), 0u);

  // Nobody waits on them for ever: lbd closes them at their 5 s deadline.
  EXPECT_EQ(half.wait_for_close(after(10s)), PeerEnd::kClosed);
  for (auto& c : silent) EXPECT_EQ(c.wait_for_close(after(2s)), PeerEnd::kClosed);
  EXPECT_GE(Clock::now() - opened, 4500ms) << "closed before the deadline";
  expect_still_serving();
}

TEST_F(Admin, ConnectionsBeyondTheLimitAreClosedAtOnceAndServiceResumes) {
  // The documented limit: 32 admin connections at once.
  std::vector<HttpConnection> held;
  for (int i = 0; i < 32; i++) {
    held.push_back(HttpConnection::open(admin_address(), after(2s)));
    ASSERT_TRUE(held.back().valid());
  }
  HttpConnection extra = HttpConnection::open(admin_address(), after(2s));
  ASSERT_TRUE(extra.valid());
  const Deadline connected = Clock::now();
  EXPECT_EQ(extra.wait_for_close(after(3s)), PeerEnd::kClosed);
  EXPECT_LT(Clock::now() - connected, 1s) << "the extra connection should be closed at once";
  EXPECT_EQ(fetch(address(), http_get("/"), after(2s)).status(), 200) << "the workers are not involved";

  held.clear();  // lbd sees them close and forgets them
  int status = 0;
  EXPECT_TRUE(eventually(after(2s), [&] {
    status = admin_get("/healthz", after(1s)).status();
    return status == 200;
  }, 10ms)) << "last status " << status;
}

// --- /metrics ----------------------------------------------------------------------------------------

class Metrics : public Admin {};

// promtool's path, or empty.
std::string find_promtool() {
  const char* path = getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  size_t at = 0;
  while (at <= dirs.size()) {
    size_t colon = dirs.find(':', at);
    std::string candidate = dirs.substr(at, colon == std::string::npos ? std::string::npos : colon - at) + "/promtool";
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    if (colon == std::string::npos) break;
    at = colon + 1;
  }
  return {};
}

TEST_F(Metrics, PassPromtoolCheckMetrics) {
  const std::string promtool = find_promtool();
  if (promtool.empty()) {
    GTEST_SKIP() << "promtool not found (Debian package prometheus; scripts/install-deps.sh installs it)";
  }
  // Some traffic and a drained slot, so that every family has samples worth checking.
  for (int i = 0; i < 20; i++) ASSERT_EQ(fetch(address(), http_get("/"), after(2s)).status(), 200);
  ASSERT_EQ(fetch(address(), http_get("/sleep?ms=30"), after(2s)).status(), 200);
  CommandResult drained = lbctl({"drain", "1"});
  ASSERT_TRUE(drained.exited(0)) << drained.describe();

  const MetricSamples m = scrape();
  const std::string file = dir_.path("metrics.txt");
  std::ofstream(file) << m.text();
  CommandResult check = run_command({"/bin/sh", "-c", promtool + " check metrics < " + file}, after(20s));
  EXPECT_TRUE(check.exited(0)) << check.describe() << "\n" << m.text();
  // The families the README promises, in --mode reuseport (no steering series without BPF).
  for (const char* family : {"lbd_build_info", "lbd_policy", "lbd_workers", "lbd_connections",
                             "lbd_accepted_connections_total", "lbd_requests_total",
                             "lbd_request_duration_seconds_bucket", "lbd_worker_cpu_seconds_total",
                             "lbd_worker_resident_memory_bytes", "lbd_worker_restarts_total",
                             "lbd_reloads_total", "lbd_reload_failures_total"}) {
    EXPECT_GT(m.count(family), 0u) << family;
  }
  EXPECT_EQ(m.count("lbd_steering_selected_total"), 0u) << "steering series are for --mode bpf";
  EXPECT_EQ(m.sum("lbd_build_info", {{"version", LBD_VERSION}, {"app", "lbd"}}), 1);
  EXPECT_EQ(m.sum("lbd_policy", {{"policy", "kernel"}}), 1);
  EXPECT_EQ(m.sum("lbd_workers", {{"state", "active"}}), 1);
}

TEST_F(Metrics, DurationHistogramCountsEveryRequestAndSleepsLandAbove200ms) {
  const MetricSamples before = scrape();
  EXPECT_EQ(before.sum("lbd_requests_total"), 0);

  constexpr int kFast = 60;
  constexpr int kSleeps = 3;
  HttpConnection c = HttpConnection::open(address(), after(2s));
  for (int i = 0; i < kFast; i++) ASSERT_EQ(c.request(http_get("/"), after(2s)).status(), 200);
  c.close();
  for (int i = 0; i < kSleeps; i++) {
    ASSERT_EQ(fetch(address(), http_get("/sleep?ms=200"), after(3s)).status(), 200);
  }

  const MetricSamples m = scrape();
  const double total = kFast + kSleeps;
  EXPECT_EQ(m.sum("lbd_request_duration_seconds_count"), total) << m.text();
  EXPECT_EQ(m.sum("lbd_requests_total"), total);
  EXPECT_EQ(m.sum("lbd_request_duration_seconds_bucket", {{"le", "+Inf"}}), total);
  // The sleeps took 200 ms or more: none is in a bucket of 100 ms or less; the rest are.
  EXPECT_EQ(m.sum("lbd_request_duration_seconds_bucket", {{"le", "0.1"}}), kFast) << m.text();
  EXPECT_GE(m.sum("lbd_request_duration_seconds_sum"), 0.2 * kSleeps);
  EXPECT_EQ(m.sum("lbd_accepted_connections_total"), 1 + kSleeps);
  // Per slot too: each slot's histogram counts exactly its requests.
  for (const char* slot : {"0", "1"}) {
    EXPECT_EQ(m.sum("lbd_request_duration_seconds_count", {{"slot", slot}}),
              m.sum("lbd_requests_total", {{"slot", slot}}))
        << "slot " << slot;
  }

  // lbctl status carries each worker's histogram (counts per bucket, not cumulative).
  const json s = status();
  uint64_t counted = 0, slow = 0;
  for (const auto& w : s.value("workers", json::array())) {
    ASSERT_TRUE(w.contains("latency_histogram")) << w.dump();
    const json& h = w["latency_histogram"];
    ASSERT_EQ(h["bounds_seconds"].size(), 16u) << h.dump();
    ASSERT_EQ(h["counts"].size(), 17u) << h.dump();
    EXPECT_EQ(h["bounds_seconds"][9].get<double>(), 0.1);
    for (size_t i = 0; i < 17; i++) {
      counted += h["counts"][i].get<uint64_t>();
      if (i >= 10) slow += h["counts"][i].get<uint64_t>();  // above 0.1 s
    }
  }
  EXPECT_EQ(counted, static_cast<uint64_t>(total));
  EXPECT_EQ(slow, static_cast<uint64_t>(kSleeps));
}

TEST_F(Metrics, SlotCountersDoNotGoBackwardsAcrossAReload) {
  for (int i = 0; i < 40; i++) ASSERT_EQ(fetch(address(), http_get("/"), after(2s)).status(), 200);
  const MetricSamples before = scrape();
  ASSERT_EQ(before.sum("lbd_requests_total"), 40);

  CommandResult reload = lbctl({"reload"});
  ASSERT_TRUE(reload.exited(0)) << reload.describe();
  // Once the old workers have gone too, only the history holds what they counted.
  MetricSamples after_reload;
  EXPECT_TRUE(eventually(after(10s), [&] {
    after_reload = scrape();
    return after_reload.sum("lbd_workers", {{"state", "draining"}}) == 0;
  }, 20ms)) << after_reload.text();
  EXPECT_EQ(after_reload.sum("lbd_reloads_total"), 1);
  for (const char* slot : {"0", "1"}) {
    SCOPED_TRACE(std::string("slot ") + slot);
    for (const char* counter : {"lbd_requests_total", "lbd_accepted_connections_total",
                                "lbd_request_duration_seconds_count", "lbd_worker_cpu_seconds_total"}) {
      EXPECT_GE(after_reload.sum(counter, {{"slot", slot}}), before.sum(counter, {{"slot", slot}})) << counter;
    }
    EXPECT_EQ(after_reload.sum("lbd_requests_total", {{"slot", slot}}),
              before.sum("lbd_requests_total", {{"slot", slot}}));
  }
  // And the new workers count on top.
  for (int i = 0; i < 10; i++) ASSERT_EQ(fetch(address(), http_get("/"), after(2s)).status(), 200);
  EXPECT_EQ(scrape().sum("lbd_requests_total"), 50);
}

TEST_F(Metrics, SlotCountersSurviveACrashAndCountTheRestart) {
  for (int i = 0; i < 30; i++) ASSERT_EQ(fetch(address(), http_get("/"), after(2s)).status(), 200);
  const MetricSamples before = scrape();
  const std::map<std::string, std::string> slot0 = {{"slot", "0"}};
  EXPECT_EQ(before.sum("lbd_worker_restarts_total", slot0), 0);

  const pid_t victim = lbd().worker_pid(0);
  ASSERT_GT(victim, 0);
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  ASSERT_NE(lbd().wait_for_worker_restart(0, victim, after(5s)), 0) << "worker 0 was not restarted";

  // What the killed worker counted is still there: its block outlived it.
  const MetricSamples after_crash = scrape();
  EXPECT_EQ(after_crash.sum("lbd_worker_restarts_total", slot0), 1);
  EXPECT_EQ(after_crash.sum("lbd_requests_total", slot0), before.sum("lbd_requests_total", slot0));
  EXPECT_EQ(after_crash.sum("lbd_accepted_connections_total", slot0),
            before.sum("lbd_accepted_connections_total", slot0));
  EXPECT_EQ(after_crash.sum("lbd_requests_total"), 30);
}

}  // namespace
}  // namespace lbd::test
