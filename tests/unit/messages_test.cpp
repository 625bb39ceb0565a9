// The typed messages between lbd's processes and its operators, through their encodings:
// - the status answer (control/status.h): what lbd writes, lbctl reads back exactly, and reads
//   leniently when fields are missing or odd (an older or newer lbd);
// - the status channel's records (worker/channel.h): what one side encodes, the other decodes,
//   and anything else is refused with a reason, never guessed at.
#include <gtest/gtest.h>

#include <cstring>

#include "control/status.h"
#include "worker/channel.h"

namespace lbd {
namespace {

using nlohmann::json;

control::StatusReport full_report() {
  control::StatusReport report;
  report.lbd = {.pid = 4242,
                .version = "0.1.0",
                .app = "web",
                .mode = "bpf",
                .policy = "least",
                .listen = {"127.0.0.1:8080", "[::1]:8080"},
                .uptime_s = 12.5,
                .reloads = 3,
                .reload_failures = 1,
                .operation = "reload",
                .fallbacks = 2,
                .command = std::vector<std::string>{"node", "hello.js"},
                .log = "/var/log/lbd/web.log",
                .log_dropped_lines = 0,
                .max_memory_bytes = 512ull << 20,
                .memory_replacements = 4};
  control::WorkerStatus active{.slot = 0,
                               .pid = 100,
                               .cpu = 0,
                               .state = "active",
                               .uptime_s = 10.0,
                               .restarts = 1,
                               .connections = 7,
                               .accepted = 70,
                               .requests = 700,
                               .inflight = 2,
                               .rss_bytes = 15 << 20,
                               .cpu_percent = 12.5,
                               .latency_histogram = control::LatencyHistogram{{0.001, 0.01}, {5, 2, 1}, 0.25},
                               .steered = 71,
                               .migrated_in = 1};
  control::WorkerStatus draining{.slot = 0, .pid = 99, .cpu = 0, .state = "draining", .uptime_s = 20.0, .connections = 3};
  control::WorkerStatus drained{.slot = 1, .cpu = 1, .state = "drained", .restarts = 2};
  report.workers = {active, draining, drained};
  return report;
}

TEST(StatusReport, RoundTripsThroughItsJson) {
  const control::StatusReport report = full_report();
  const json encoded = control::to_json(report);
  EXPECT_EQ(control::status_from_json(encoded), report);
  // And through text, as it crosses the control socket.
  EXPECT_EQ(control::status_from_json(json::parse(encoded.dump())), report);
  EXPECT_TRUE(encoded["workers"][2]["pid"].is_null()) << "an empty slot says so: pid null";
  EXPECT_FALSE(encoded["workers"][1].contains("requests")) << "what is not known is left out";
}

TEST(StatusReport, ReadsWhatItCanFromAnOddAnswer) {
  const control::StatusReport empty = control::status_from_json(json::object());
  EXPECT_TRUE(empty.workers.empty());
  EXPECT_EQ(empty.lbd.mode, "-");
  EXPECT_EQ(empty.lbd.pid, std::nullopt);

  const json odd = {{"lbd", {{"pid", "not a number"}, {"listen", {"127.0.0.1:1", 5}}, {"reloads", -3}}},
                    {"workers", json::array({{{"slot", 0}, {"state", 5}, {"requests", -1}}, "not a row"})}};
  const control::StatusReport read = control::status_from_json(odd);
  EXPECT_EQ(read.lbd.pid, std::nullopt);
  EXPECT_EQ(read.lbd.listen, std::vector<std::string>{"127.0.0.1:1"});
  EXPECT_EQ(read.lbd.reloads, 0u);
  ASSERT_EQ(read.workers.size(), 2u);
  EXPECT_EQ(read.workers[0].state, "-");
  EXPECT_EQ(read.workers[0].requests, std::nullopt) << "a negative count is not a count";
  EXPECT_EQ(read.workers[1].slot, 0u);
}

TEST(StatusReport, AHistogramMustHoldTogether) {
  using control::LatencyHistogram;
  EXPECT_EQ(LatencyHistogram::from_json(json()), std::nullopt) << "an lbd without histograms";
  auto h = LatencyHistogram::from_json({{"bounds_seconds", {0.001, 0.01}}, {"counts", {4, 2, 1}}, {"sum_seconds", 0.5}});
  ASSERT_TRUE(h);
  EXPECT_EQ(h->counts, (std::vector<uint64_t>{4, 2, 1}));
  EXPECT_EQ(h->sum_seconds, 0.5);
  EXPECT_EQ(h->zeroed().counts, (std::vector<uint64_t>{0, 0, 0}));
  EXPECT_EQ(LatencyHistogram::from_json({{"bounds_seconds", {0.001}}, {"counts", {4}}}), std::nullopt)
      << "no +Inf count";
  EXPECT_EQ(LatencyHistogram::from_json({{"bounds_seconds", {0.001}}, {"counts", {4, -1}}}), std::nullopt)
      << "a negative count";
}

TEST(ChannelMessage, EveryCommandRoundTrips) {
  const ChannelMessage messages[] = {
      {ChannelCommand::kReady, 0, 0},
      {ChannelCommand::kOpenConnections, 1234, 0},
      {ChannelCommand::kExecFailed, ENOENT, 0},
      {ChannelCommand::kServing, 0, 0},
      {ChannelCommand::kDrain, static_cast<uint32_t>(DrainMode::kHandover), 10'000},
      {ChannelCommand::kConnection, 0, 0},
  };
  for (const ChannelMessage& m : messages) {
    const ChannelRecord record = encode_channel_message(m);
    auto decoded = decode_channel_message(&record, sizeof(record));
    ASSERT_TRUE(decoded) << decoded.error().message();
    EXPECT_EQ(decoded->command, m.command);
    EXPECT_EQ(decoded->value, m.value);
    EXPECT_EQ(decoded->timeout_ms, m.timeout_ms);
  }
}

TEST(ChannelMessage, AnythingElseIsRefusedWithAReason) {
  ChannelRecord record = encode_channel_message({ChannelCommand::kDrain, 1, 500});
  auto refused = [](const void* data, size_t size) {
    auto decoded = decode_channel_message(data, size);
    EXPECT_FALSE(decoded);
    return decoded ? std::string() : decoded.error().message();
  };
  EXPECT_NE(refused(&record, sizeof(record) - 1).find("23 bytes"), std::string::npos);
  EXPECT_NE(refused("READY=1", 7).find("7 bytes"), std::string::npos) << "the old text protocol";
  ChannelRecord bad = record;
  bad.magic ^= 1;
  EXPECT_NE(refused(&bad, sizeof(bad)).find("bad magic"), std::string::npos);
  bad = record;
  bad.version = 2;
  EXPECT_NE(refused(&bad, sizeof(bad)).find("version 2"), std::string::npos);
  bad = record;
  bad.command = 99;
  EXPECT_NE(refused(&bad, sizeof(bad)).find("unknown command 99"), std::string::npos);
  bad = record;
  bad.value = 7;
  EXPECT_NE(refused(&bad, sizeof(bad)).find("unknown drain mode 7"), std::string::npos);
}

}  // namespace
}  // namespace lbd
