// The pure logic behind the admin endpoint: which histogram bucket a request duration lands in,
// the Prometheus text format (escaping, numbers, the exact lines of a histogram), and which
// answer each admin request gets. No sockets; the endpoint over HTTP is tests/kernel/admin_test.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "metrics/exposition.h"
#include "metrics/worker_stats.h"
#include "supervisor/admin_server.h"
#include "supervisor/agent_server.h"
#include "worker/http.h"

namespace lbd {
namespace {

using metrics::Exposition;
using metrics::Label;
using metrics::MetricType;

// --- duration buckets ---------------------------------------------------------------------------

TEST(DurationBuckets, ABoundBelongsToItsOwnBucketAndOneNanosecondMoreToTheNext) {
  struct Case {
    uint64_t ns;
    size_t bucket;
  };
  const Case cases[] = {
      {0, 0},
      {1, 0},
      {100'000, 0},  // exactly 100 µs: le="0.0001" (Prometheus buckets are inclusive)
      {100'001, 1},
      {250'000, 1},
      {999'999, 3},
      {1'000'000, 3},
      {200'000'000, 10},  // /sleep?ms=200: le="0.25"
      {10'000'000'000, 15},
      {10'000'000'001, 16},  // past the last bound: +Inf
      {std::numeric_limits<uint64_t>::max(), 16},
  };
  for (const Case& c : cases) EXPECT_EQ(duration_bucket(c.ns), c.bucket) << c.ns << " ns";
}

TEST(DurationBuckets, BoundsRiseAndReadAsTheDocumentedSeconds) {
  const std::vector<double> expected = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                        0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,     10};
  ASSERT_EQ(kDurationBoundsNs.size(), expected.size());
  EXPECT_EQ(kDurationBuckets, expected.size() + 1);
  for (size_t i = 0; i < expected.size(); i++) {
    EXPECT_EQ(duration_bound_seconds(i), expected[i]) << i;
    if (i > 0) {
      EXPECT_LT(kDurationBoundsNs[i - 1], kDurationBoundsNs[i]) << i;
    }
  }
}

TEST(WorkerStats, RecordingCountsEachRequestOnceAndAddsItsDuration) {
  WorkerStats stats{};
  record_request(stats, 50'000);       // 50 µs
  record_request(stats, 50'000);
  record_request(stats, 300'000'000);  // 300 ms
  record_accepted(stats);
  EXPECT_EQ(stats.duration_counts[0], 2u);
  EXPECT_EQ(stats.duration_counts[11], 1u);  // le="0.5"
  EXPECT_EQ(stats.duration_sum_ns, 300'100'000u);
  EXPECT_EQ(stats.accepted, 1u);
}

TEST(WorkerStats, ASharedBlockReadsBackWhatWasRecordedAndSnapshotsAddUp) {
  auto block = WorkerStatsBlock::create();
  ASSERT_TRUE(block) << block.error().message();
  // A second mapping of the same memfd, as the worker has: the supervisor sees its writes.
  auto worker_side = WorkerStatsBlock::map(block->fd());
  ASSERT_TRUE(worker_side) << worker_side.error().message();
  record_request(worker_side->stats(), 1'000);
  record_request(worker_side->stats(), 2'000'000'000);
  record_accepted(worker_side->stats());

  WorkerStatsSnapshot snapshot = block->read();
  EXPECT_EQ(snapshot.requests(), 2u);
  EXPECT_EQ(snapshot.accepted, 1u);
  EXPECT_EQ(snapshot.duration_counts[0], 1u);
  EXPECT_EQ(snapshot.duration_counts[13], 1u);  // le="2.5"
  EXPECT_DOUBLE_EQ(snapshot.duration_sum_seconds(), 2.000001);

  WorkerStatsSnapshot total = snapshot;
  total += snapshot;
  EXPECT_EQ(total.requests(), 4u);
  EXPECT_EQ(total.accepted, 2u);
  EXPECT_EQ(total.duration_counts[13], 2u);
  EXPECT_EQ(total.duration_sum_ns, 2 * snapshot.duration_sum_ns);
}

// --- the text format ------------------------------------------------------------------------------

TEST(Exposition, EscapesLabelValuesAndHelpAsTheFormatSays) {
  EXPECT_EQ(metrics::escape_label_value(R"(plain)"), "plain");
  EXPECT_EQ(metrics::escape_label_value("a\"b"), R"(a\"b)");
  EXPECT_EQ(metrics::escape_label_value("a\\b"), R"(a\\b)");
  EXPECT_EQ(metrics::escape_label_value("a\nb"), R"(a\nb)");
  EXPECT_EQ(metrics::escape_help("say \"hi\"\\\n"), "say \"hi\"\\\\\\n") << "quotes stay in HELP";
}

TEST(Exposition, FormatsNumbersSoTheyReadBackExactly) {
  EXPECT_EQ(metrics::format_value(0), "0");
  EXPECT_EQ(metrics::format_value(1), "1");
  EXPECT_EQ(metrics::format_value(0.0001), "0.0001");
  EXPECT_EQ(metrics::format_value(0.00025), "0.00025");
  EXPECT_EQ(metrics::format_value(2.5), "2.5");
  EXPECT_EQ(metrics::format_value(1e-7), "1e-07");
  EXPECT_EQ(metrics::format_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(metrics::format_value(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(metrics::format_value(std::nan("")), "NaN");
  EXPECT_EQ(std::stod(metrics::format_value(0.1 + 0.2)), 0.1 + 0.2);
}

TEST(Exposition, WritesFamiliesAndSamples) {
  Exposition out;
  out.family("lbd_requests_total", MetricType::kCounter, "Requests answered.\nPer slot.");
  out.sample("lbd_requests_total", {{"app", "lbd"}, {"slot", "0"}}, uint64_t{18446744073709551615u});
  out.sample("lbd_requests_total", {{"app", "a\"b"}}, 0.5);
  out.family("lbd_up", MetricType::kGauge, "Up.");
  out.sample("lbd_up", {}, uint64_t{1});
  EXPECT_EQ(out.text(),
            "# HELP lbd_requests_total Requests answered.\\nPer slot.\n"
            "# TYPE lbd_requests_total counter\n"
            "lbd_requests_total{app=\"lbd\",slot=\"0\"} 18446744073709551615\n"
            "lbd_requests_total{app=\"a\\\"b\"} 0.5\n"
            "# HELP lbd_up Up.\n"
            "# TYPE lbd_up gauge\n"
            "lbd_up 1\n");
}

TEST(Exposition, WritesAHistogramWithCumulativeBucketsSumAndCount) {
  Exposition out;
  out.family("d_seconds", MetricType::kHistogram, "Durations.");
  const Label labels[] = {{"slot", "1"}};
  const double bounds[] = {0.1, 1};
  const uint64_t counts[] = {3, 0, 2};  // per bucket; the last is +Inf
  out.histogram("d_seconds", labels, bounds, counts, 12.5);
  EXPECT_EQ(out.text(),
            "# HELP d_seconds Durations.\n"
            "# TYPE d_seconds histogram\n"
            "d_seconds_bucket{slot=\"1\",le=\"0.1\"} 3\n"
            "d_seconds_bucket{slot=\"1\",le=\"1\"} 3\n"
            "d_seconds_bucket{slot=\"1\",le=\"+Inf\"} 5\n"
            "d_seconds_sum{slot=\"1\"} 12.5\n"
            "d_seconds_count{slot=\"1\"} 5\n");
}

TEST(Exposition, AHistogramAlwaysEndsWithAnInfBucket) {
  Exposition out;
  const double bounds[] = {1};
  const uint64_t counts[] = {4};  // no +Inf count given
  out.histogram("d", {}, bounds, counts, 1);
  EXPECT_NE(out.text().find("d_bucket{le=\"+Inf\"} 4\n"), std::string::npos) << out.text();
  EXPECT_NE(out.text().find("d_count 4\n"), std::string::npos) << out.text();
}

// --- the admin endpoint's answers -------------------------------------------------------------------

class AdminRoutes : public ::testing::Test {
 protected:
  // Parses `raw` the way the admin server does and answers it.
  AdminResponse answer(const std::string& raw) {
    RequestParser parser;
    auto step = parser.parse(raw);
    EXPECT_EQ(step.status, RequestParser::Status::kRequest) << raw;
    return answer_admin_request(parser.request(), endpoints_);
  }

  std::string not_ready_;
  AdminEndpoints endpoints_{.not_ready_because = [this] { return not_ready_; },
                            .metrics = [] { return std::string("m 1\n"); }};
};

TEST_F(AdminRoutes, ServesTheThreeEndpoints) {
  AdminResponse health = answer("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body, "ok\n");

  AdminResponse ready = answer("GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(ready.status, 200);
  not_ready_ = "lbd is stopping";
  AdminResponse stopping = answer("GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(stopping.status, 503);
  EXPECT_EQ(stopping.body, "not ready: lbd is stopping\n");

  AdminResponse metrics = answer("GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_EQ(metrics.content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(metrics.body, "m 1\n");
}

TEST_F(AdminRoutes, OtherPathsAre404AndOtherMethods405) {
  EXPECT_EQ(answer("GET / HTTP/1.1\r\nHost: x\r\n\r\n").status, 404);
  EXPECT_EQ(answer("GET /metricsz HTTP/1.1\r\nHost: x\r\n\r\n").status, 404);
  EXPECT_EQ(answer("POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").status, 404);
  for (const char* method : {"POST", "PUT", "DELETE", "OPTIONS"}) {
    AdminResponse r = answer(std::string(method) + " /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    EXPECT_EQ(r.status, 405) << method;
    EXPECT_EQ(r.extra_headers, "Allow: GET, HEAD\r\n") << method;
  }
  EXPECT_EQ(answer("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
}

TEST(AdminResponseBytes, SayConnectionCloseAndTheLengthAndOmitTheBodyForHead) {
  AdminResponse r;
  r.status = 503;
  r.body = "not ready: x\n";
  const std::string full = serialize_admin_response(r, false);
  EXPECT_TRUE(full.starts_with("HTTP/1.1 503 Service Unavailable\r\n")) << full;
  EXPECT_NE(full.find("\r\nContent-Length: 13\r\n"), std::string::npos) << full;
  EXPECT_NE(full.find("\r\nConnection: close\r\n"), std::string::npos) << full;
  EXPECT_TRUE(full.ends_with("\r\n\r\nnot ready: x\n")) << full;

  const std::string head = serialize_admin_response(r, true);
  EXPECT_NE(head.find("\r\nContent-Length: 13\r\n"), std::string::npos) << head;
  EXPECT_TRUE(head.ends_with("\r\n\r\n")) << head;

  EXPECT_EQ(admin_error_response(431).body, "431 Request Header Fields Too Large\n");
}

}  // namespace
}  // namespace lbd

namespace lbd {
namespace {

// --- HAProxy's agent-check (supervisor/agent_server.h) --------------------------------------------

TEST(AgentWeight, IsTheHostsFreeShareOverEverySlot) {
  EXPECT_EQ(agent_weight_percent({}), 0u);
  EXPECT_EQ(agent_weight_percent({{.active = true}, {.active = true}}), 100u);
  EXPECT_EQ(agent_weight_percent({{.active = true, .cpu_busy = 0.5}, {.active = true}}), 75u);
  // A drained or stalled or full slot is capacity the host does not have.
  EXPECT_EQ(agent_weight_percent({{.active = true}, {.active = false}}), 50u);
  EXPECT_EQ(agent_weight_percent({{.active = true}, {.active = true, .stalled = true}}), 50u);
  EXPECT_EQ(agent_weight_percent({{.active = true}, {.active = true, .full = true}}), 50u);
  // Busy beyond one CPU (a program with threads) counts as fully busy, not less than nothing.
  EXPECT_EQ(agent_weight_percent({{.active = true, .cpu_busy = 1.7}, {.active = true}}), 50u);
  // Every active worker busy: 1%, never 0, which HAProxy would read as "drain".
  EXPECT_EQ(agent_weight_percent({{.active = true, .cpu_busy = 1.0}, {.active = true, .stalled = true}}), 1u);
  EXPECT_EQ(agent_weight_percent({{.active = false}, {.active = false}}), 0u);
}

TEST(AgentAnswer, SaysUpReadyDrainOrMaintInHAProxysWords) {
  EXPECT_EQ(agent_answer("", true, 73), "up ready 73%\n");
  EXPECT_EQ(agent_answer("", true, 0), "up ready 1%\n");
  EXPECT_EQ(agent_answer("lbd is stopping", true, 73), "drain\n");
  EXPECT_EQ(agent_answer("every worker is drained", false, 0), "maint\n");
  EXPECT_EQ(agent_answer("", false, 0), "maint\n") << "nothing serves yet";
}

}  // namespace
}  // namespace lbd
