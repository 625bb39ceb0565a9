// lbctl reload, drain and scale in the two modes that hand out connections without a steering
// program (README, --mode): `shared`, one listener every worker accepts on, and `handoff`, where
// the supervisor accepts and passes each connection to a worker. The bpf-mode tests of the same
// verbs are tests/root/reload_test.cpp, drain_test.cpp and scale_test.cpp. Under light load:
// no request fails, a reload replaces every worker, a drained worker gets no connection opened
// after `lbctl drain` returned, and scale leaves exactly the workers asked for, every one serving.
#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "support/control_test.h"

namespace lbd::test {
namespace {

using nlohmann::json;

class ModesControl : public ControlTest, public ::testing::WithParamInterface<std::string> {
 protected:
  // --max-connections 16 and /sleep: what every_worker_serves() needs in shared mode.
  void start_mode(unsigned workers) {
    ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags(
        GetParam(), workers, {"--max-connections", "16", "--demo-routes", "--shutdown-timeout", "5"})));
    ASSERT_EQ(ready_.mode, GetParam());
  }

  // Light load: 4 clients opening a new connection per request and 4 keep-alive clients that never
  // retry (a "Connection: close" answer sends one to a new connection), niced below lbd.
  LoadOptions light(bool keep_alive) {
    LoadOptions options = bounded(clients(keep_alive), 60s);
    options.threads = 4;
    options.record_samples = !keep_alive;
    return options;
  }

  // Every one of the `workers` slots answers a new connection, shown the way the mode hands them
  // out. handoff: the supervisor deals connections to the active workers in turn, so 2N
  // connections one after another reach all N. shared: the kernel wakes whichever worker waits
  // first, so one may take everything while it has room; but a worker whose table is full
  // (--max-connections 16) stops accepting, so with requests held open (each being answered, so
  // none is shed) 16 * (N - 1) + 1 connections cannot all fit in N - 1 workers.
  void expect_every_worker_serves(unsigned workers) {
    std::set<int> answered;
    std::vector<HttpConnection> held;
    const unsigned most = GetParam() == "handoff" ? 2 * workers : 16 * (workers - 1) + 1;
    for (unsigned i = 0; i < most && answered.size() < workers; i++) {
      HttpResult failure;
      HttpConnection c = HttpConnection::open(address(), after(5s), &failure);
      ASSERT_TRUE(c.valid()) << failure.describe();
      HttpResult r = c.request(http_get("/"), after(5s));
      ASSERT_TRUE(r.ok()) << "connection " << i << ": " << r.describe();
      answered.insert(r.worker());
      if (GetParam() == "shared") {
        ASSERT_EQ(c.send(http_get("/sleep?ms=3000"), after(2s)), Outcome::kOk);  // busy for the next 3 s
        held.push_back(std::move(c));
      }
    }
    std::set<int> all;
    for (unsigned slot = 0; slot < workers; slot++) all.insert(static_cast<int>(slot));
    EXPECT_EQ(answered, all) << "not every worker answered";
    // The held requests are answered too: none is left in flight for lbd's stop to wait on.
    for (auto& c : held) EXPECT_EQ(c.read_response(after(10s)).status(), 200);
  }

  static std::set<unsigned> slots_in(const json& status) {
    std::set<unsigned> slots;
    for (const auto& w : status.value("workers", json::array())) slots.insert(w.value("slot", 999u));
    return slots;
  }

  void expect_no_failure(const LoadReport& report, const std::string& what) {
    std::cout << GetParam() << ", " << what << ": " << report.summary() << "\n";
    EXPECT_EQ(report.failed(), 0u) << what << ": " << report.summary();
    EXPECT_TRUE(report.all_ok()) << what << ": " << report.summary();
  }

  std::string exited_line(unsigned slot, pid_t pid) {
    return "worker " + std::to_string(slot) + " \\(pid " + std::to_string(pid) + "\\) exited with status 0";
  }
};

TEST_P(ModesControl, ReloadsUnderLoadReplaceEveryWorkerAndFailNothing) {
  ASSERT_NO_FATAL_FAILURE(start_mode(2));
  std::map<unsigned, pid_t> current = serving_pids();
  ASSERT_EQ(current.size(), 2u);
  LoadGenerator fresh(light(false)), kept(light(true));
  ASSERT_TRUE(wait_for_requests(fresh, 200, after(10s))) << "the load did not get going";
  ASSERT_TRUE(wait_for_requests(kept, 200, after(10s))) << "the load did not get going";

  std::vector<std::pair<unsigned, pid_t>> retired;
  for (int i = 1; i <= 3; i++) {
    CommandResult r = lbctl({"reload"});
    ASSERT_TRUE(r.exited(0)) << "reload " << i << ": " << r.describe();
    EXPECT_TRUE(r.out_lines().back().starts_with("reload done: 2 slot(s) in ")) << r.out;
    const auto now = serving_pids();
    ASSERT_EQ(now.size(), 2u);
    for (auto [slot, pid] : current) {
      EXPECT_NE(now.at(slot), pid) << "reload " << i << " left slot " << slot << "'s worker in place";
      retired.emplace_back(slot, pid);
    }
    current = now;
    ASSERT_TRUE(wait_for_requests(fresh, 100, after(10s))) << "the load stalled after reload " << i;
  }
  LoadReport fresh_report = fresh.stop(), kept_report = kept.stop();
  expect_no_failure(fresh_report, "3 reloads, a new connection per request");
  expect_no_failure(kept_report, "3 reloads, keep-alive");

  // Every replaced worker drained and exited cleanly; the reload count says 3.
  for (auto [slot, pid] : retired) {
    EXPECT_TRUE(lbd().wait_for_log(exited_line(slot, pid), after(10s))) << "pid " << pid << " did not exit cleanly";
  }
  EXPECT_EQ(status()["lbd"].value("reloads", -1), 3);
  EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u);
  expect_every_worker_serves(2);
}

TEST_P(ModesControl, ADrainedWorkerFinishesItsRequestsAndGetsNoNewConnection) {
  ASSERT_NO_FATAL_FAILURE(start_mode(2));
  const auto before = serving_pids();
  ASSERT_EQ(before.size(), 2u);
  // The worker drained is the one taking the most connections under the load: in shared mode the
  // kernel may hand nearly all of them to one worker, and "none after the drain" must mean
  // something.
  LoadGenerator load(light(false));
  std::map<int, uint64_t> accepted;
  ASSERT_TRUE(eventually(after(20s), [&] {
    accepted.clear();
    for (const auto& w : status().value("workers", json::array())) accepted[w.value("slot", -1)] = w.value("accepted", 0);
    return std::any_of(accepted.begin(), accepted.end(), [](const auto& kv) { return kv.second >= 200; });
  }, 20ms)) << "the load did not get going";
  const int drained = std::max_element(accepted.begin(), accepted.end(), [](const auto& a, const auto& b) {
                        return a.second < b.second;
                      })->first;
  const unsigned other = 1 - static_cast<unsigned>(drained);
  // Two keep-alive connections it has answered.
  std::vector<HttpConnection> sleepers, others;
  for (int attempt = 0; attempt < 200 && sleepers.size() < 2; attempt++) {
    HttpConnection c = HttpConnection::open(address(), after(2s));
    HttpResult r = c.request(http_get("/"), after(2s));
    ASSERT_EQ(r.status(), 200) << r.describe();
    (r.worker() == drained ? sleepers : others).push_back(std::move(c));
  }
  ASSERT_EQ(sleepers.size(), 2u) << "too few connections reached worker " << drained << " in 200 tries";
  others.clear();
  // Slow requests in flight on the worker when the drain comes: it lives on while they finish,
  // so a worker that still took connections while draining would be seen taking them.
  for (auto& c : sleepers) {
    // Pipelined behind a GET /: once that answer is back, the worker has started the sleep.
    ASSERT_EQ(c.send(http_get("/") + http_get("/sleep?ms=1500"), after(2s)), Outcome::kOk);
    ASSERT_EQ(c.read_response(after(2s)).status(), 200);
  }
  CommandResult r = lbctl({"drain", std::to_string(drained)});
  const Deadline drained_at = Clock::now();
  ASSERT_TRUE(r.exited(0)) << r.describe();
  EXPECT_EQ(r.out, "draining [" + std::to_string(drained) + "]\n");

  // The requests in flight finish, each followed by a close; then the worker exits, and the slot
  // stays drained while the other one serves.
  for (auto& c : sleepers) {
    HttpResult answer = c.read_response(after(10s));
    ASSERT_TRUE(answer.ok()) << answer.describe();
    EXPECT_EQ(answer.response.body, "slept 1500 ms\n");
    EXPECT_EQ(answer.worker(), drained);
    EXPECT_TRUE(answer.response.closes()) << "a draining worker closes the connection after its answer";
  }
  const auto slot = static_cast<unsigned>(drained);
  EXPECT_TRUE(lbd().wait_for_log(exited_line(slot, before.at(slot)), after(10s))) << lbd().log();
  json s = status();
  EXPECT_EQ(states_of(s, slot), "drained") << s.dump(2);
  EXPECT_EQ(states_of(s, other), "active") << s.dump(2);
  EXPECT_TRUE(wait_for_requests(load, 300, after(10s))) << "the load stalled after the drain";
  LoadReport report = load.stop();
  expect_no_failure(report, "drain of slot " + std::to_string(drained));
  uint64_t after_drain = 0, on_drained = 0;
  for (const Sample& sample : report.samples) {
    if (sample.connected_at <= drained_at) continue;
    after_drain++;
    if (sample.worker == drained) on_drained++;
  }
  EXPECT_GE(after_drain, 100u) << "too little load after the drain to tell";
  EXPECT_EQ(on_drained, 0u) << on_drained << " of " << after_drain << " connections opened after lbctl drain returned "
                            << "reached the drained worker " << drained;

  // undrain returns once a new worker serves the slot; both answer again.
  CommandResult back = lbctl({"undrain", std::to_string(drained)});
  ASSERT_TRUE(back.exited(0)) << back.describe();
  const auto now = serving_pids();
  ASSERT_EQ(now.size(), 2u);
  EXPECT_NE(now.at(slot), before.at(slot));
  EXPECT_EQ(now.at(other), before.at(other)) << "the other slot was left alone";
  expect_every_worker_serves(2);
}

TEST_P(ModesControl, ScaleUpAndDownUnderLoadLeavesTheWorkersAskedForAndFailsNothing) {
  ASSERT_NO_FATAL_FAILURE(start_mode(2));
  const auto two = serving_pids();
  ASSERT_EQ(two.size(), 2u);
  LoadGenerator fresh(light(false)), kept(light(true));
  ASSERT_TRUE(wait_for_requests(fresh, 200, after(10s))) << "the load did not get going";
  ASSERT_TRUE(wait_for_requests(kept, 200, after(10s))) << "the load did not get going";

  // Up: when scale returns, slots 2 and 3 serve with new workers; 0 and 1 were left alone.
  CommandResult up = lbctl({"scale", "4"});
  ASSERT_TRUE(up.exited(0)) << up.describe();
  EXPECT_TRUE(up.out_lines().back().starts_with("scale done: 2 slot(s)")) << up.out;
  const auto four = serving_pids();
  ASSERT_EQ(four.size(), 4u) << status().dump(2);
  EXPECT_EQ(four.at(0), two.at(0));
  EXPECT_EQ(four.at(1), two.at(1));
  ASSERT_TRUE(wait_for_requests(fresh, 200, after(10s))) << "the load stalled after scaling up";

  // Down to 3: slot 3 goes, its worker exits; no connection opened afterwards reaches it.
  CommandResult down = lbctl({"scale", "3"});
  const Deadline down_done = Clock::now();
  ASSERT_TRUE(down.exited(0)) << down.describe();
  const json three = status();
  EXPECT_EQ(slots_in(three), (std::set<unsigned>{0, 1, 2})) << three.dump(2);
  EXPECT_TRUE(lbd().wait_for_log(exited_line(3, four.at(3)), after(10s))) << lbd().log();
  ASSERT_TRUE(wait_for_requests(fresh, 300, after(10s))) << "the load stalled after scaling down";
  LoadReport fresh_report = fresh.stop(), kept_report = kept.stop();
  expect_no_failure(fresh_report, "scale 2 -> 4 -> 3, a new connection per request");
  expect_no_failure(kept_report, "scale 2 -> 4 -> 3, keep-alive");
  uint64_t after_down = 0, on_slot3 = 0;
  for (const Sample& sample : fresh_report.samples) {
    if (sample.connected_at <= down_done) continue;
    after_down++;
    if (sample.worker == 3) on_slot3++;
  }
  EXPECT_GE(after_down, 100u) << "too little load after scaling down to tell";
  EXPECT_EQ(on_slot3, 0u) << "connections opened after scale 3 returned reached the slot scaled away";

  // The three left all serve, slot 2 included.
  const auto left = serving_pids();
  ASSERT_EQ(left.size(), 3u);
  EXPECT_EQ(left.at(2), four.at(2));
  expect_every_worker_serves(3);
  EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u);
}

INSTANTIATE_TEST_SUITE_P(WithoutSteering, ModesControl, ::testing::Values("shared", "handoff"),
                         [](const auto& test) { return test.param; });

}  // namespace
}  // namespace lbd::test
