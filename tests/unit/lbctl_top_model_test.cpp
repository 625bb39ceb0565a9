// What `lbctl top` computes from two status answers (tools/lbctl/top_model.h) and how lbctl
// writes numbers (tools/lbctl/format.h): interval p99 from two histogram snapshots, req/s from a
// counter, rows that follow a worker by pid across a reload, and the text columns.
#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "lbctl/format.h"
#include "lbctl/top_model.h"

namespace lbd::ctl {

// For failure messages: "<= 2.5ms", "> 10s".
void PrintTo(const LatencyBound& bound, std::ostream* out) {
  *out << (bound.beyond_last_bound ? "> " : "<= ") << human_latency(bound.seconds);
}

namespace {

using nlohmann::json;

// --- formatting -----------------------------------------------------------------------------------

TEST(LbctlFormat, BytesDurationsRatesLatencies) {
  EXPECT_EQ(human_bytes(512), "512B");
  EXPECT_EQ(human_bytes(15'204'352), "14.5M");
  EXPECT_EQ(human_duration(59.9), "59s");
  EXPECT_EQ(human_duration(192), "3m12s");
  EXPECT_EQ(human_duration(7380), "2h03m");
  EXPECT_EQ(human_duration(90000), "1d01h");
  EXPECT_EQ(human_rate(0), "0.0");
  EXPECT_EQ(human_rate(0.5), "0.5");
  EXPECT_EQ(human_rate(9.96), "10");
  EXPECT_EQ(human_rate(2043.4), "2043");
  EXPECT_EQ(human_rate(12'345), "12.3k");
  EXPECT_EQ(human_rate(2'500'000), "2.5M");
  // The bounds lbd reports (userspace/metrics/worker_stats.h), as they arrive in JSON.
  EXPECT_EQ(human_latency(100'000 / 1e9), "100us");
  EXPECT_EQ(human_latency(250'000 / 1e9), "250us");
  EXPECT_EQ(human_latency(1'000'000 / 1e9), "1ms");
  EXPECT_EQ(human_latency(2'500'000 / 1e9), "2.5ms");
  EXPECT_EQ(human_latency(1'000'000'000 / 1e9), "1s");
  EXPECT_EQ(human_latency(10'000'000'000 / 1e9), "10s");
}

// --- p99 over an interval ---------------------------------------------------------------------------

const std::vector<double> kBounds = {0.001, 0.01, 0.1};  // and +Inf

LatencyHistogram histogram(std::vector<uint64_t> counts) { return {kBounds, std::move(counts)}; }

struct PercentileCase {
  const char* description;
  std::vector<uint64_t> before;
  std::vector<uint64_t> now;
  std::optional<LatencyBound> expected_p99;
};

const PercentileCase kPercentileCases[] = {
    {"every request fast", {0, 0, 0, 0}, {100, 0, 0, 0}, LatencyBound{0.001, false}},
    {"99 of 100 fast: p99 is the fast bucket", {0, 0, 0, 0}, {99, 0, 1, 0}, LatencyBound{0.001, false}},
    {"98 of 100 fast: p99 is the slow one", {0, 0, 0, 0}, {98, 0, 2, 0}, LatencyBound{0.1, false}},
    {"one request: it is the p99", {0, 0, 0, 0}, {0, 1, 0, 0}, LatencyBound{0.01, false}},
    {"only the interval counts, not the worker's past",
     {0, 0, 5000, 0}, {300, 0, 5000, 0}, LatencyBound{0.001, false}},
    {"past the last bound: the +Inf bucket", {10, 0, 0, 0}, {10, 0, 0, 3}, LatencyBound{0.1, true}},
    {"no request in the interval", {7, 3, 0, 1}, {7, 3, 0, 1}, std::nullopt},
    {"a count went down: another process", {50, 0, 0, 0}, {10, 5, 0, 0}, std::nullopt},
    {"too few counts for the bounds", {0, 0, 0}, {1, 0, 0}, std::nullopt},
};

TEST(LbctlTopPercentile, FromTwoSnapshotsOfOneProcess) {
  for (const auto& c : kPercentileCases) {
    SCOPED_TRACE(c.description);
    EXPECT_EQ(interval_percentile(histogram(c.before), histogram(c.now), 0.99), c.expected_p99);
  }
}

TEST(LbctlTopPercentile, BucketsMustMatch) {
  LatencyHistogram other{{0.001, 0.02, 0.1}, {0, 0, 0, 0}};
  EXPECT_EQ(interval_percentile(other, histogram({5, 0, 0, 0}), 0.99), std::nullopt);
  EXPECT_EQ(interval_percentile(LatencyHistogram{}, LatencyHistogram{}, 0.99), std::nullopt);
}

TEST(LbctlTopPercentile, OtherQuantiles) {
  const auto now = histogram({50, 30, 15, 5});
  const auto zero = now.zeroed();
  EXPECT_EQ(interval_percentile(zero, now, 0.5), (LatencyBound{0.001, false}));
  EXPECT_EQ(interval_percentile(zero, now, 0.8), (LatencyBound{0.01, false}));
  EXPECT_EQ(interval_percentile(zero, now, 0.95), (LatencyBound{0.1, false}));
  EXPECT_EQ(interval_percentile(zero, now, 1.0), (LatencyBound{0.1, true}));
}

// --- rates --------------------------------------------------------------------------------------

TEST(LbctlTopRate, CounterDeltaOverRealTime) {
  EXPECT_EQ(counter_rate(100, 350, 0.5), 500.0);
  EXPECT_EQ(counter_rate(100, 100, 1.0), 0.0);
  EXPECT_EQ(counter_rate(350, 100, 1.0), std::nullopt) << "a counter going down is another process";
  EXPECT_EQ(counter_rate(100, 350, 0.0), std::nullopt);
}

// --- rows from two status answers -----------------------------------------------------------------

// The dashboard for two status answers as lbd sends them, read the way lbctl reads them.
Dashboard dashboard_of(const json* previous, const json& now, double seconds) {
  const control::StatusReport now_report = control::status_from_json(now);
  if (!previous) return build_dashboard(nullptr, now_report, seconds);
  const control::StatusReport previous_report = control::status_from_json(*previous);
  return build_dashboard(&previous_report, now_report, seconds);
}

json worker(int slot, json pid, const std::string& state, uint64_t requests,
            std::vector<uint64_t> counts = {0, 0, 0, 0}) {
  return {{"slot", slot},        {"pid", pid},           {"cpu", slot},
          {"state", state},      {"connections", 3},     {"accepted", requests},
          {"requests", requests}, {"rss_bytes", 15'204'352}, {"cpu_percent", 42.0},
          {"latency_histogram", {{"bounds_seconds", kBounds}, {"counts", counts}}}};
}

json status_of(json workers, const std::string& policy = "least") {
  return {{"lbd",
           {{"pid", 4242},
            {"version", "0.1.0"},
            {"mode", "bpf"},
            {"policy", policy},
            {"listen", json::array({"127.0.0.1:8080"})},
            {"uptime_s", 192.0},
            {"reloads", 0},
            {"operation", nullptr}}},
          {"workers", std::move(workers)}};
}

TEST(LbctlTopDashboard, RatesAndP99OverTheInterval) {
  const json before = status_of(json::array({worker(0, 100, "active", 1000, {900, 0, 0, 0}),
                                 worker(1, 101, "active", 2000, {1900, 10, 0, 0})}));
  const json now = status_of(json::array({worker(0, 100, "active", 1500, {1394, 0, 6, 0}),
                              worker(1, 101, "active", 2250, {2150, 10, 0, 0})}));
  const Dashboard d = dashboard_of(&before, now, 0.5);
  ASSERT_EQ(d.rows.size(), 2u);
  EXPECT_EQ(d.rows[0].requests_per_s, 1000.0);
  EXPECT_EQ(d.rows[0].p99, (LatencyBound{0.1, false})) << "6 of 500 slow: the 495th is slow";
  EXPECT_EQ(d.rows[1].requests_per_s, 500.0);
  EXPECT_EQ(d.rows[1].p99, (LatencyBound{0.001, false}));
  EXPECT_EQ(d.rows[0].cpu, 0);
  EXPECT_EQ(d.rows[1].cpu, 1);
  EXPECT_EQ(d.rows[0].rss_bytes, 15'204'352u);
  EXPECT_EQ(d.rows[0].connections, 3u);
  EXPECT_EQ(d.rows[0].cpu_percent, 42.0);

  EXPECT_EQ(d.overview.requests_per_s, 1500.0);
  EXPECT_EQ(d.overview.connections, 6u);
  EXPECT_EQ(d.overview.active, 2u);
  EXPECT_EQ(d.overview.pid, 4242);
  EXPECT_EQ(d.overview.policy, "least");
  EXPECT_EQ(d.overview.listen, (std::vector<std::string>{"127.0.0.1:8080"}));
}

TEST(LbctlTopDashboard, FirstScreenHasNoRatesYet) {
  const json first = status_of(json::array({worker(0, 100, "active", 1000, {900, 0, 0, 0})}));
  const Dashboard d = dashboard_of(nullptr, first, 0);
  ASSERT_EQ(d.rows.size(), 1u);
  EXPECT_EQ(d.rows[0].requests_per_s, std::nullopt);
  EXPECT_EQ(d.rows[0].p99, std::nullopt);
  EXPECT_EQ(d.overview.requests_per_s, std::nullopt);
  EXPECT_EQ(d.rows[0].pid, 100);
}

TEST(LbctlTopDashboard, NoHistogramNoP99ButARate) {
  json before = status_of(json::array({worker(0, 100, "active", 1000)}));
  json now = status_of(json::array({worker(0, 100, "active", 1100)}));
  before["workers"][0].erase("latency_histogram");
  now["workers"][0].erase("latency_histogram");
  const Dashboard d = dashboard_of(&before, now, 1.0);
  EXPECT_EQ(d.rows[0].requests_per_s, 100.0);
  EXPECT_EQ(d.rows[0].p99, std::nullopt);
}

// A reload of slot 0: pid 100 serves while pid 200 starts; then 200 serves and 100 drains.
TEST(LbctlTopDashboard, FollowsWorkersByPidThroughAReload) {
  // A starting worker's `requests` is its slot's counter, still pid 100's: no rate of its own.
  const json first = status_of(json::array({worker(0, 100, "active", 5000)}));
  const json starting =
      status_of(json::array({worker(0, 100, "active", 5100), worker(0, 200, "starting", 5100)}));
  const Dashboard a = dashboard_of(&first, starting, 1.0);
  ASSERT_EQ(a.rows.size(), 2u);
  EXPECT_EQ(a.rows[0].requests_per_s, 100.0);
  EXPECT_EQ(a.rows[1].requests_per_s, std::nullopt);
  EXPECT_EQ(a.overview.requests_per_s, 100.0) << "the starting row must not count pid 100's requests twice";
  EXPECT_EQ(a.overview.active, 1u);
  EXPECT_EQ(a.overview.starting, 1u);

  // Now pid 200 serves and counts from zero; what it was shown while starting is no base.
  json swapped =
      status_of(json::array({worker(0, 200, "active", 40, {40, 0, 0, 0}), worker(0, 100, "draining", 0)}));
  swapped["workers"][1].erase("requests");  // a retiring worker reports only its connections
  const Dashboard b = dashboard_of(&starting, swapped, 1.0);
  ASSERT_EQ(b.rows.size(), 2u);
  EXPECT_EQ(b.rows[0].requests_per_s, 40.0);
  EXPECT_EQ(b.rows[0].p99, (LatencyBound{0.001, false}));
  EXPECT_EQ(b.rows[1].requests_per_s, std::nullopt);
  EXPECT_EQ(b.overview.draining, 1u);

  // A worker that did not exist at the previous answer: everything it counted is new.
  const json fresh = status_of(json::array({worker(0, 300, "active", 25, {20, 5, 0, 0})}));
  const Dashboard c = dashboard_of(&first, fresh, 0.5);
  EXPECT_EQ(c.rows[0].requests_per_s, 50.0);
  EXPECT_EQ(c.rows[0].p99, (LatencyBound{0.01, false}));
}

TEST(LbctlTopDashboard, EmptySlotsAreRowsToo) {
  const json drained = {{"slot", 1}, {"pid", nullptr}, {"cpu", 1}, {"state", "drained"}, {"restarts", 0}};
  const json before = status_of(json::array({worker(0, 100, "active", 0), drained}));
  const json now = status_of(json::array({worker(0, 100, "active", 10), drained}));
  const Dashboard d = dashboard_of(&before, now, 1.0);
  ASSERT_EQ(d.rows.size(), 2u);
  EXPECT_EQ(d.rows[1].slot, 1u);
  EXPECT_EQ(d.rows[1].state, "drained");
  EXPECT_EQ(d.rows[1].pid, std::nullopt);
  EXPECT_EQ(d.rows[1].requests_per_s, std::nullopt);
  EXPECT_EQ(d.overview.active, 1u);
  const std::string text = format_row(d.rows[1]);
  EXPECT_TRUE(text.starts_with("1     -  ")) << text;
  EXPECT_EQ(text.find('['), std::string::npos) << "no CPU bar without a process: " << text;
}

TEST(LbctlTopDashboard, SurvivesAnAnswerWithoutTheUsualFields) {
  const Dashboard d = dashboard_of(nullptr, json::object(), 0);
  EXPECT_TRUE(d.rows.empty());
  EXPECT_EQ(d.overview.mode, "-");
  const json odd = {{"lbd", {{"pid", "not a number"}}}, {"workers", json::array({{{"slot", 0}, {"state", 5}}})}};
  const Dashboard e = dashboard_of(&odd, odd, 1.0);
  ASSERT_EQ(e.rows.size(), 1u);
  EXPECT_EQ(e.rows[0].state, "-");
  EXPECT_EQ(e.overview.pid, std::nullopt);
  EXPECT_FALSE(plain_snapshot(e).empty());
}

TEST(LbctlTopPolicy, CyclesRrLeastHash) {
  EXPECT_EQ(next_policy("rr"), "least");
  EXPECT_EQ(next_policy("least"), "hash");
  EXPECT_EQ(next_policy("hash"), "sticky");
  EXPECT_EQ(next_policy("sticky"), "rr");
  EXPECT_EQ(next_policy("kernel"), "rr") << "--mode reuseport: lbd will say policies need --mode bpf";
}

// --- text -----------------------------------------------------------------------------------------

TEST(LbctlTopText, CpuBar) {
  EXPECT_EQ(cpu_bar(0.0), "[          ]");
  EXPECT_EQ(cpu_bar(50.0), "[|||||     ]");
  EXPECT_EQ(cpu_bar(250.0), "[||||||||||]");
  EXPECT_EQ(cpu_bar(std::nullopt), "[          ]");
  EXPECT_EQ(cpu_bar(100.0, 6), "[||||]");
}

TEST(LbctlTopText, RowsLineUpUnderTheColumnHeader) {
  WorkerRow row;
  row.slot = 3;
  row.pid = 31896;
  row.cpu = 3;
  row.state = "restarting";
  row.cpu_percent = 31.24;
  row.rss_bytes = 15'204'352;
  row.connections = 12;
  row.requests_per_s = 2043.4;
  row.p99 = LatencyBound{10, true};
  const std::string text = format_row(row);
  const std::string header = column_header();
  EXPECT_EQ(text, "3     31896     3    restarting  [|||       ]  31.2%    14.5M      12     2043     >10s") << text;
  EXPECT_EQ(text.size(), header.size()) << header << "\n" << text;
  EXPECT_EQ(text.substr(kStateColumn, kStateWidth), "restarting");
  EXPECT_EQ(header.substr(kStateColumn, 5), "STATE");
  EXPECT_EQ(text[kBarColumn], '[');
  EXPECT_EQ(text[kBarColumn + kBarWidth - 1], ']');
  EXPECT_EQ(header.substr(kBarColumn, 4), "CPU%");
  // Right-aligned numbers end where their titles end.
  for (const char* title : {"RSS", "CONNS", "REQ/S", "P99"}) {
    const size_t end = header.find(title) + std::string(title).size();
    EXPECT_NE(text[end - 1], ' ') << title << "\n" << header << "\n" << text;
  }

  WorkerRow unknown;
  unknown.pid = 7;
  unknown.state = "active";
  EXPECT_EQ(format_row(unknown),
            "0     7         any  active      [          ]      -        -       -        -        -");
}

TEST(LbctlTopText, PlainSnapshotHasTheHeaderAndOneLinePerWorker) {
  const json before =
      status_of(json::array({worker(0, 100, "active", 1000), worker(1, 101, "draining", 10)}));
  json now = status_of(json::array({worker(0, 100, "active", 1100), worker(1, 101, "draining", 10)}));
  now["lbd"]["operation"] = "reload";
  const std::string text = plain_snapshot(dashboard_of(&before, now, 1.0));
  EXPECT_EQ(text,
            "lbd 0.1.0  pid 4242  mode bpf  policy least  up 3m12s  listen 127.0.0.1:8080\n"
            "workers 1 active, 0 starting, 1 draining  connections 6  req/s 100  (reload in progress)\n"
            "\n" +
                column_header() + "\n" +
                "0     100       0    active      [||||      ]  42.0%    14.5M       3      100        -\n"
                "1     101       1    draining    [||||      ]  42.0%    14.5M       3      0.0        -\n")
      << text;
}

}  // namespace
}  // namespace lbd::ctl
