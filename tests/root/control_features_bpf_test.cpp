// Two things an operator relies on that need --mode bpf: `lbctl top`'s p key switches the steering
// policy (rr -> least -> hash -> rr) in lbd, shown on the screen; and --max-memory replaces one of
// lbd's own workers (not an exec-mode program: tests/root/exec_bpf_test.cpp) whose resident
// memory passes the limit, the new worker first, without failing a request, not even the ones
// the old worker was in the middle of. tmux gives lbctl top its terminal (the test skips without it).
#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "support/control_test.h"
#include "support/tmux.h"

namespace lbd::test {
namespace {

using nlohmann::json;

// --- lbctl top: p -----------------------------------------------------------------------------------

class TopPolicyKey : public ControlTest {
 protected:
  void SetUp() override { LBD_REQUIRE_ROOT("--mode bpf loads the steering program; only there is the policy lbd's"); }
};

// The screen's first line (lbd's header: "... policy rr ...") and its status line, the one above
// the keys, where top says how the last operation ended.
struct TopLines {
  std::string header;
  std::string status_line;
};

TopLines top_lines(const std::string& screen) {
  std::vector<std::string> lines;
  std::istringstream in(screen);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  while (!lines.empty() && lines.back().find_first_not_of(' ') == std::string::npos) lines.pop_back();
  TopLines out;
  if (!lines.empty()) out.header = lines.front();
  if (lines.size() >= 2) out.status_line = lines[lines.size() - 2];
  while (!out.status_line.empty() && out.status_line.back() == ' ') out.status_line.pop_back();
  return out;
}

TEST_F(TopPolicyKey, PSwitchesThePolicyInTurnAndShowsIt) {
  if (!TmuxSession::available()) GTEST_SKIP() << "needs tmux, to give lbctl top a terminal (apt install tmux)";
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("bpf", 2, {"--policy", "rr"})));
  ASSERT_EQ(status()["lbd"].value("policy", ""), "rr");
  TmuxSession tmux(dir_.path("tmux.sock"), {LBCTL_PATH, "-s", socket_path(), "top"}, 160, 40);
  std::string screen;
  ASSERT_TRUE(eventually(after(10s), [&] {
    screen = tmux.screen();
    return top_lines(screen).header.find("policy rr ") != std::string::npos;
  }, 50ms)) << screen;

  for (const std::string next : {"least", "hash", "sticky", "rr"}) {
    tmux.send_keys({"p"});
    json s;
    EXPECT_TRUE(eventually(after(10s), [&] {
      s = status();
      return s["lbd"].value("policy", "") == next;
    }, 50ms)) << "p did not switch lbd to " << next << ": " << s["lbd"].dump();
    // The header and the status line say so.
    EXPECT_TRUE(eventually(after(5s), [&] {
      screen = tmux.screen();
      const TopLines lines = top_lines(screen);
      return lines.header.find("policy " + next + " ") != std::string::npos && lines.status_line == "policy " + next;
    }, 50ms)) << screen;
    // Connections are steered under it: lbd answers.
    EXPECT_EQ(fetch(address(), http_get("/", true), after(5s)).status(), 200);
  }
  tmux.send_keys({"q"});
  EXPECT_TRUE(eventually(after(5s), [&] { return !tmux.running(); }, 20ms)) << tmux.screen();
}

// --- --max-memory for lbd's own workers -------------------------------------------------------------

class WorkerMaxMemory : public ControlTest {
 protected:
  void SetUp() override { LBD_REQUIRE_ROOT("--mode bpf loads the steering program"); }
};

// What makes a worker of the bundled app grow: request bodies it holds while they arrive (POST
// /echo, up to 1 MiB each, within --body-memory). Each of these holds just under 1 MB.
constexpr size_t kBodyBytes = 1'000'000;
constexpr size_t kHeldBack = 1'000;   // the body's last bytes, sent once the worker is replaced
constexpr unsigned kHeldBodies = 48;  // about 48 MB, twice the headroom the limit leaves
constexpr uint64_t kHeadroomMiB = 24;

TEST_F(WorkerMaxMemory, AWorkerOverTheLimitIsReplacedWithoutFailingARequest) {
  // The limit is a worker's own size in this build plus some headroom: a sanitizer build's
  // workers are several times a plain build's. Measured on workers that have served a while.
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("bpf", 2, {"--policy", "rr"})));
  {
    LoadGenerator warm_up(bounded(clients(false), 60s));
    ASSERT_TRUE(wait_for_requests(warm_up, 1000, after(20s)));
  }
  uint64_t worker_bytes = 0;
  for (auto [slot, pid] : serving_pids()) worker_bytes = std::max<uint64_t>(worker_bytes, process_rss_bytes(pid));
  ASSERT_GT(worker_bytes, 0u);
  const uint64_t limit_mib = (worker_bytes >> 20) + kHeadroomMiB;
  const std::string limit = std::to_string(limit_mib) + "M";
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags(
      "bpf", 2, {"--policy", "rr", "--max-memory", limit, "--body-memory", "128M", "--shutdown-timeout", "30"})));
  const auto before = serving_pids();
  ASSERT_EQ(before.size(), 2u);
  LoadOptions options = bounded(clients(false), 60s);
  options.record_samples = true;
  LoadGenerator load(options);
  ASSERT_TRUE(wait_for_requests(load, 200, after(10s))) << "the load did not get going";

  // Keep-alive connections that worker 1 has answered once; then a body on each, all but its
  // last bytes: worker 1 holds them all.
  std::vector<HttpConnection> held, others;
  for (int attempt = 0; attempt < 400 && held.size() < kHeldBodies; attempt++) {
    HttpConnection c = HttpConnection::open(address(), after(2s));
    HttpResult r = c.request(http_get("/"), after(2s));
    ASSERT_EQ(r.status(), 200) << r.describe();
    (r.worker() == 1 ? held : others).push_back(std::move(c));
  }
  ASSERT_EQ(held.size(), kHeldBodies) << "too few connections reached worker 1";
  others.clear();
  const std::string body(kBodyBytes, 'm');
  const std::string request = "POST /echo HTTP/1.1\r\nHost: lbd\r\nContent-Length: " + std::to_string(kBodyBytes) +
                              "\r\n\r\n" + body;
  const std::string_view first_part(request.data(), request.size() - kHeldBack);
  const std::string_view last_part(request.data() + first_part.size(), kHeldBack);
  for (auto& c : held) ASSERT_EQ(c.send(first_part, after(10s)), Outcome::kOk);

  // Sampled every second: worker 1 is over, and replaced; worker 0 is left alone.
  const pid_t old = before.at(1);
  ASSERT_TRUE(lbd().wait_for_log("worker 1 \\(pid " + std::to_string(old) +
                                     "\\) uses [0-9]+ MiB, over --max-memory " + std::to_string(limit_mib) +
                                     " MiB; replacing it",
                                 after(15s)))
      << "worker 1 holds " << process_rss_bytes(old) / (1 << 20) << " MiB\n" << lbd().log();
  pid_t replacement = 0;
  ASSERT_TRUE(eventually(after(15s), [&] {
    const auto now = serving_pids();
    replacement = now.count(1) ? now.at(1) : 0;
    return replacement != 0 && replacement != old;
  }, 20ms)) << status().dump(2);
  EXPECT_EQ(serving_pids().at(0), before.at(0)) << "worker 0 was under the limit";
  EXPECT_LT(process_rss_bytes(replacement), limit_mib << 20) << "the new worker is over the limit from the start";

  // The requests the old worker was in the middle of are answered by it, in full, with a close.
  for (auto& c : held) {
    ASSERT_EQ(c.send(last_part, after(5s)), Outcome::kOk);
    HttpResult answer = c.read_response(after(10s));
    ASSERT_TRUE(answer.ok()) << answer.describe();
    EXPECT_EQ(answer.response.status, 200);
    EXPECT_EQ(answer.response.body.size(), kBodyBytes);
    EXPECT_EQ(answer.worker(), 1);
    EXPECT_TRUE(answer.response.closes()) << "a worker being replaced closes the connection after its answer";
  }
  held.clear();
  EXPECT_TRUE(lbd().wait_for_log("worker 1 \\(pid " + std::to_string(old) + "\\) exited with status 0", after(10s)))
      << lbd().log();

  // Meanwhile, and after, the load saw no failure, and the new worker 1 takes connections.
  const Deadline replaced_at = Clock::now();
  ASSERT_TRUE(wait_for_requests(load, 300, after(10s)));
  LoadReport report = load.stop();
  std::cout << "--max-memory replacement under load: " << report.summary() << "\n";
  EXPECT_EQ(report.failed(), 0u) << report.summary();
  EXPECT_TRUE(report.all_ok()) << report.summary();
  uint64_t new_worker = 0;
  for (const Sample& s : report.samples) new_worker += s.connected_at > replaced_at && s.worker == 1;
  EXPECT_GT(new_worker, 0u) << "the new worker 1 got no connection";
  // One replacement: the new worker is under the limit, and worker 0 was never over it.
  EXPECT_EQ(lbd().count_log("over --max-memory"), 1u) << lbd().log();
  EXPECT_EQ(serving_pids(), (std::map<unsigned, pid_t>{{0, before.at(0)}, {1, replacement}}));
  EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u);
}

}  // namespace
}  // namespace lbd::test
