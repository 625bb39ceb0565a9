// The spec a worker is started with travels as text (LBD_WORKER_SPEC): whatever the supervisor
// encodes, the worker decodes unchanged; anything else is a clear ConfigError, not a crash.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "common/result.h"
#include "worker/worker_spec.h"

namespace lbd {
namespace {

void expect_same(const WorkerSpec& a, const WorkerSpec& b) {
  EXPECT_EQ(a.slot, b.slot);
  EXPECT_EQ(a.cpu, b.cpu);
  EXPECT_EQ(a.accept_mode, b.accept_mode);
  EXPECT_EQ(a.listener_fds, b.listener_fds);
  EXPECT_EQ(a.handoff_fd, b.handoff_fd);
  EXPECT_EQ(a.handover_in_fd, b.handover_in_fd);
  EXPECT_EQ(a.slot_table_fd, b.slot_table_fd);
  EXPECT_EQ(a.stats_fd, b.stats_fd);
  EXPECT_EQ(a.status_fd, b.status_fd);
  EXPECT_EQ(a.reconcile_queue, b.reconcile_queue);
  EXPECT_EQ(a.http.max_header_bytes, b.http.max_header_bytes);
  EXPECT_EQ(a.http.max_body_bytes, b.http.max_body_bytes);
  EXPECT_EQ(a.idle_timeout, b.idle_timeout);
  EXPECT_EQ(a.header_timeout, b.header_timeout);
  EXPECT_EQ(a.min_body_rate, b.min_body_rate);
  EXPECT_EQ(a.body_memory, b.body_memory);
  EXPECT_EQ(a.http.max_header_fields, b.http.max_header_fields);
  EXPECT_EQ(a.drain_timeout, b.drain_timeout);
  EXPECT_EQ(a.max_connections, b.max_connections);
  EXPECT_EQ(a.log_level, b.log_level);
  EXPECT_EQ(a.demo_routes, b.demo_routes);
  ASSERT_EQ(a.run_as.has_value(), b.run_as.has_value());
  if (a.run_as) {
    EXPECT_EQ(a.run_as->uid, b.run_as->uid);
    EXPECT_EQ(a.run_as->gid, b.run_as->gid);
    EXPECT_EQ(a.run_as->groups, b.run_as->groups);
    EXPECT_EQ(a.run_as->describe(), b.run_as->describe());
  }
}

TEST(WorkerSpec, DefaultSpecRoundTrips) {
  WorkerSpec spec;
  expect_same(decode_worker_spec(encode_worker_spec(spec)), spec);
}

TEST(WorkerSpec, EveryFieldRoundTrips) {
  WorkerSpec steered;
  steered.slot = 63;
  steered.cpu = 5;
  steered.accept_mode = AcceptMode::kSteered;
  steered.listener_fds = {3, 4, 17};
  steered.slot_table_fd = 9;
  steered.stats_fd = 11;
  steered.status_fd = 10;
  steered.reconcile_queue = true;
  steered.http.max_header_bytes = 123;
  steered.http.max_body_bytes = 5'000'000'000ull;  // above 32 bits
  steered.idle_timeout = std::chrono::milliseconds(1500);
  steered.header_timeout = std::chrono::milliseconds(2500);
  steered.min_body_rate = 300;
  steered.body_memory = 5 << 20;
  steered.http.max_header_fields = 7;
  steered.drain_timeout = std::chrono::milliseconds(250);
  steered.max_connections = 77;
  steered.log_level = "debug";
  steered.demo_routes = true;
  steered.run_as = RunAs{.uid = 65534, .gid = 65533, .groups = {65533, 4}, .user = "nobody", .group = "nogroup"};
  expect_same(decode_worker_spec(encode_worker_spec(steered)), steered);

  WorkerSpec handoff;
  handoff.slot = 2;
  handoff.accept_mode = AcceptMode::kHandoff;
  handoff.handoff_fd = 6;
  handoff.handover_in_fd = 7;
  handoff.listener_fds = {};
  expect_same(decode_worker_spec(encode_worker_spec(handoff)), handoff);
}

TEST(WorkerSpec, StatsFdIsOptional) {
  // A supervisor built before stats blocks existed sends none: the worker still starts.
  nlohmann::json j = nlohmann::json::parse(encode_worker_spec(WorkerSpec{}));
  j.erase("stats_fd");
  EXPECT_EQ(decode_worker_spec(j.dump()).stats_fd, -1);
}

TEST(WorkerSpec, GarbageIsAConfigErrorThatSaysWhat) {
  struct Case {
    const char* description;
    std::string text;
  };
  WorkerSpec spec;
  std::string good = encode_worker_spec(spec);
  std::string missing_slot = good;
  missing_slot.replace(missing_slot.find("\"slot\""), 6, "\"slob\"");
  const Case cases[] = {
      {"empty", ""},
      {"not JSON", "slot=1 cpu=2"},
      {"truncated", good.substr(0, good.size() / 2)},
      {"an empty object", "{}"},
      {"a JSON array", "[1, 2, 3]"},
      {"a field missing", missing_slot},
      {"a field of the wrong type", "{\"slot\": \"one\"}"},
  };
  for (const Case& c : cases) {
    try {
      decode_worker_spec(c.text);
      ADD_FAILURE() << c.description << ": accepted";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("worker spec"), std::string::npos)
          << c.description << ": " << e.what();
    }
  }
}

}  // namespace
}  // namespace lbd
