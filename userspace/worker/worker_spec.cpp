#include "worker/worker_spec.h"

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace lbd {

std::string encode_worker_spec(const WorkerSpec& spec) {
  nlohmann::json j = {
      {"slot", spec.slot},
      {"cpu", spec.cpu},
      {"accept_mode", spec.accept_mode == AcceptMode::kHandoff ? "handoff" : "steered"},
      {"listener_fds", spec.listener_fds},
      {"handoff_fd", spec.handoff_fd},
      {"handover_in_fd", spec.handover_in_fd},
      {"slot_table_fd", spec.slot_table_fd},
      {"stats_fd", spec.stats_fd},
      {"status_fd", spec.status_fd},
      {"status_escrow_fd", spec.status_escrow_fd},
      {"reconcile_queue", spec.reconcile_queue},
      {"publish_at_start", spec.publish_at_start},
      {"max_header_bytes", spec.http.max_header_bytes},
      {"max_body_bytes", spec.http.max_body_bytes},
      {"idle_timeout_ms", spec.idle_timeout.count()},
      {"header_timeout_ms", spec.header_timeout.count()},
      {"min_body_rate", spec.min_body_rate},
      {"body_memory", spec.body_memory},
      {"max_header_fields", spec.http.max_header_fields},
      {"drain_timeout_ms", spec.drain_timeout.count()},
      {"max_connections", spec.max_connections},
      {"log_level", spec.log_level},
      {"demo_routes", spec.demo_routes},
  };
  if (spec.run_as) {
    j["run_as"] = {{"uid", spec.run_as->uid},     {"gid", spec.run_as->gid},
                   {"groups", spec.run_as->groups}, {"user", spec.run_as->user},
                   {"group", spec.run_as->group}};
  }
  return j.dump();
}

WorkerSpec decode_worker_spec(const std::string& text) {
  try {
    nlohmann::json j = nlohmann::json::parse(text);
    WorkerSpec spec;
    spec.slot = j.at("slot").get<uint32_t>();
    spec.cpu = j.at("cpu").get<int>();
    spec.accept_mode =
        j.at("accept_mode").get<std::string>() == "handoff" ? AcceptMode::kHandoff : AcceptMode::kSteered;
    spec.listener_fds = j.at("listener_fds").get<std::vector<int>>();
    spec.handoff_fd = j.at("handoff_fd").get<int>();
    spec.handover_in_fd = j.at("handover_in_fd").get<int>();
    spec.slot_table_fd = j.at("slot_table_fd").get<int>();
    // Optional: a worker built with metrics still starts from a supervisor built before them.
    spec.stats_fd = j.value("stats_fd", -1);
    spec.status_fd = j.at("status_fd").get<int>();
    spec.status_escrow_fd = j.value("status_escrow_fd", -1);
    spec.reconcile_queue = j.at("reconcile_queue").get<bool>();
    spec.publish_at_start = j.at("publish_at_start").get<bool>();
    spec.http.max_header_bytes = j.at("max_header_bytes").get<size_t>();
    spec.http.max_body_bytes = j.at("max_body_bytes").get<size_t>();
    spec.idle_timeout = std::chrono::milliseconds(j.at("idle_timeout_ms").get<int64_t>());
    spec.header_timeout = std::chrono::milliseconds(j.value("header_timeout_ms", int64_t{10'000}));
    spec.min_body_rate = j.value("min_body_rate", uint64_t{1024});
    spec.body_memory = j.value("body_memory", BodyBudget{}.limit);
    spec.http.max_header_fields = j.value("max_header_fields", size_t{100});
    spec.drain_timeout = std::chrono::milliseconds(j.at("drain_timeout_ms").get<int64_t>());
    spec.max_connections = j.at("max_connections").get<unsigned>();
    spec.log_level = j.at("log_level").get<std::string>();
    spec.demo_routes = j.value("demo_routes", false);
    if (j.contains("run_as")) {
      const nlohmann::json& as = j.at("run_as");
      spec.run_as = RunAs{.uid = as.at("uid").get<uid_t>(),
                          .gid = as.at("gid").get<gid_t>(),
                          .groups = as.at("groups").get<std::vector<gid_t>>(),
                          .user = as.at("user").get<std::string>(),
                          .group = as.at("group").get<std::string>()};
    }
    return spec;
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(std::string("bad worker spec (is this worker from another lbd build?): ") +
                      e.what());
  }
}

}  // namespace lbd
