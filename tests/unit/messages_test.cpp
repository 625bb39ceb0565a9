// The typed messages between lbd's processes and its operators, through their encodings:
// - the status answer (control/status.h): what lbd writes, lbctl reads back exactly, and reads
//   leniently when fields are missing or odd (an older or newer lbd);
// - the status channel's records (worker/channel.h): what one side encodes, the other decodes,
//   and anything else is refused with a reason, never guessed at;
// - an operator's message (`lbctl send`): the one rule for its text (common/message_text.h), in
//   the control protocol's request and in the channel's kMessage.
#include <gtest/gtest.h>

#include <cstring>

#include "common/message_text.h"
#include "control/protocol.h"
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

TEST(MessageText, OneLineOfUtf8UpTo4095Bytes) {
  EXPECT_EQ(message_text_problem("flush caches"), "");
  EXPECT_EQ(message_text_problem("tab\there, caf\xc3\xa9, \xe2\x82\xac, \xf0\x9f\x98\x80"), "");
  EXPECT_EQ(message_text_problem(std::string(kMaxMessageText, 'x')), "") << "4095 bytes and a newline: PIPE_BUF";
  EXPECT_NE(message_text_problem(std::string(kMaxMessageText + 1, 'x')).find("4096 bytes; at most 4095"),
            std::string::npos);
  EXPECT_NE(message_text_problem("").find("empty"), std::string::npos);
  EXPECT_NE(message_text_problem("two\nlines").find("newline"), std::string::npos);
  EXPECT_NE(message_text_problem("cr\rhere").find("newline"), std::string::npos) << "readline ends a line at \\r";
  EXPECT_NE(message_text_problem(std::string("nul\0x", 5)).find("control characters (byte 0 at 3)"),
            std::string::npos);
  EXPECT_NE(message_text_problem("esc\x1b[31m").find("control characters"), std::string::npos);
  EXPECT_NE(message_text_problem("del\x7f").find("control characters"), std::string::npos);
  // C1 controls and the Unicode line separators, as UTF-8; a no-break space (U+00A0) is text.
  EXPECT_NE(message_text_problem("csi\xc2\x9b" "31m").find("control characters (U+009B at 3)"), std::string::npos);
  EXPECT_NE(message_text_problem("nel\xc2\x85").find("control characters"), std::string::npos);
  EXPECT_NE(message_text_problem("ls\xe2\x80\xa8").find("control characters (U+2028"), std::string::npos);
  EXPECT_EQ(message_text_problem("nbsp\xc2\xa0ok"), "");
  for (const char* bad : {"\xff", "\xc3", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "a\x80"}) {
    EXPECT_NE(message_text_problem(bad).find("not valid UTF-8"), std::string::npos) << testing::PrintToString(bad);
  }
}

TEST(ChannelMessage, AMessageCarriesItsTextAfterTheRecord) {
  for (const std::string& text : {std::string("flush caches"), std::string(kMaxMessageText, 'y')}) {
    const std::string packet = encode_channel_packet({.command = ChannelCommand::kMessage, .text = text});
    ASSERT_EQ(packet.size(), sizeof(ChannelRecord) + text.size());
    auto decoded = decode_channel_message(packet.data(), packet.size());
    ASSERT_TRUE(decoded) << decoded.error().message();
    EXPECT_EQ(decoded->command, ChannelCommand::kMessage);
    EXPECT_EQ(decoded->value, text.size());
    EXPECT_EQ(decoded->text, text);
  }
  // Every other command is the record alone, as before.
  EXPECT_EQ(encode_channel_packet({.command = ChannelCommand::kServing, .text = "ignored"}).size(), sizeof(ChannelRecord));
}

TEST(ChannelMessage, AMessageThatDoesNotHoldTogetherIsRefused) {
  auto refused = [](const std::string& packet) {
    auto decoded = decode_channel_message(packet.data(), packet.size());
    EXPECT_FALSE(decoded) << "decoded: " << (decoded ? decoded->text : "");
    return decoded ? std::string() : decoded.error().message();
  };
  const std::string good = encode_channel_packet({.command = ChannelCommand::kMessage, .text = "hello"});
  EXPECT_NE(refused(good.substr(0, good.size() - 1)).find("28 bytes"), std::string::npos) << "cut short";
  EXPECT_NE(refused(good + "!").find("30 bytes"), std::string::npos) << "more than it says";
  std::string empty = encode_channel_packet({.command = ChannelCommand::kMessage, .text = ""});
  EXPECT_NE(refused(empty).find("empty"), std::string::npos);
  EXPECT_NE(refused(encode_channel_packet({.command = ChannelCommand::kMessage, .text = "a\nb"})).find("newline"),
            std::string::npos);
  EXPECT_NE(refused(encode_channel_packet({.command = ChannelCommand::kMessage, .text = "\xff"})).find("UTF-8"),
            std::string::npos);
  // A length past the limit is refused from the record alone, whatever follows.
  ChannelRecord record = encode_channel_message({.command = ChannelCommand::kMessage});
  record.value = kMaxMessageText + 1;
  std::string huge(reinterpret_cast<const char*>(&record), sizeof(record));
  huge += std::string(kMaxMessageText + 1, 'z');
  EXPECT_NE(refused(huge).find("a message of 4096 bytes"), std::string::npos);
  // Text after any other command is not a message.
  EXPECT_NE(refused(encode_channel_packet({.command = ChannelCommand::kServing}) + "x").find("25 bytes"),
            std::string::npos);
}

TEST(ControlRequest, SendNamesItsWorkersAndCarriesOneCheckedLine) {
  auto request = control::parse_request(R"({"verb":"send","slot":1,"text":"flush caches"})");
  ASSERT_TRUE(request) << request.error().message();
  EXPECT_EQ(request->verb, control::Verb::kSend);
  EXPECT_EQ(request->slot, 1u);
  EXPECT_EQ(request->text, "flush caches");
  auto again = control::parse_request(control::encode_request(*request));
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(again->text, "flush caches");
  EXPECT_EQ(again->slot, 1u);

  control::Request all{.verb = control::Verb::kSend, .all = true, .text = "caf\xc3\xa9 \t ok"};
  auto all_again = control::parse_request(control::encode_request(all));
  ASSERT_TRUE(all_again) << all_again.error().message();
  EXPECT_TRUE(all_again->all);
  EXPECT_EQ(all_again->text, all.text);

  auto refused = [](const std::string& line) {
    auto r = control::parse_request(line);
    EXPECT_FALSE(r) << line;
    return r ? std::string() : r.error().message();
  };
  EXPECT_EQ(refused(R"({"verb":"send","text":"x"})"), "name one slot, or all");
  EXPECT_EQ(refused(R"({"verb":"send","slot":0,"all":true,"text":"x"})"), "name one slot, or all");
  EXPECT_EQ(refused(R"({"verb":"send","slot":0})"), "the message is empty");
  EXPECT_NE(refused(R"({"verb":"send","slot":0,"text":"a\nb"})").find("newline"), std::string::npos);
  EXPECT_NE(refused(R"({"verb":"send","slot":0,"text":"a\u0000b"})").find("control characters"), std::string::npos);
  EXPECT_NE(refused(R"({"verb":"send","slot":0,"text":")" + std::string(5000, 'x') + "\"}").find("5000 bytes"),
            std::string::npos);
  EXPECT_NE(refused(R"({"verb":"send","slot":0,"text":5})").find("wrong type"), std::string::npos);
}

}  // namespace
}  // namespace lbd
