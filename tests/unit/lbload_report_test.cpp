// lbload's report (tools/lbload/report.h): the JSON object scripts read has exactly the keys the
// CLI contract names, with the values the run measured; the table says the same to a person.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "lbload/options.h"
#include "lbload/report.h"

namespace lbd::load {
namespace {

Options options_for(std::vector<std::string> args) {
  args.insert(args.begin(), "lbload");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  return parse_command_line(static_cast<int>(argv.size()), argv.data()).options;
}

std::set<std::string> keys_of(const nlohmann::ordered_json& j) {
  std::set<std::string> keys;
  for (const auto& [key, value] : j.items()) keys.insert(key);
  return keys;
}

RunResult two_path_result() {
  RunResult r{RunStats(2)};
  for (int i = 0; i < 90; i++) r.stats.record_success(0, 100'000);  // 100 us
  for (int i = 0; i < 10; i++) r.stats.record_success(1, 5'000'000);  // 5 ms
  r.stats.record_error(ErrorKind::kRefused);
  r.stats.record_error(ErrorKind::kTimeout);
  r.stats.record_error(ErrorKind::kTimeout);
  r.stats.workers.add("1", 60);
  r.stats.workers.add("0", 39);
  r.stats.workers.add("", 1);
  r.stats.held = {4, 20, 1};
  r.duration_s = 2.0;
  r.cpu_us = 600;
  return r;
}

TEST(LbloadReport, JsonHasExactlyTheContractKeys) {
  const Options o = options_for({"--mix", "9:/,1:/work?us=5000", "http://127.0.0.1:8080/"});
  const auto j = report_json(o, two_path_result());
  EXPECT_EQ(keys_of(j), (std::set<std::string>{"url", "mode", "connection", "connections", "threads", "rate",
                                               "duration_s", "requests", "rps", "latency_us", "paths", "errors",
                                               "errors_total", "workers", "held", "client_cpu_us_per_request"}));
  const std::set<std::string> latency_keys = {"p50", "p90", "p99", "p999", "max", "mean"};
  EXPECT_EQ(keys_of(j["latency_us"]), latency_keys);
  EXPECT_EQ(keys_of(j["paths"]), (std::set<std::string>{"/", "/work?us=5000"}));
  EXPECT_EQ(keys_of(j["paths"]["/"]), (std::set<std::string>{"requests", "latency_us"}));
  EXPECT_EQ(keys_of(j["paths"]["/"]["latency_us"]), latency_keys);
  EXPECT_EQ(keys_of(j["errors"]), (std::set<std::string>{"refused", "reset", "timeout", "closed", "bad_status",
                                                         "bad_response", "other"}));
  EXPECT_EQ(keys_of(j["held"]), (std::set<std::string>{"connections", "requests", "errors_total"}));
}

TEST(LbloadReport, JsonValues) {
  const Options o = options_for({"--mix", "9:/,1:/work?us=5000", "http://127.0.0.1:8080/"});
  const auto j = report_json(o, two_path_result());
  EXPECT_EQ(j["url"], "http://127.0.0.1:8080/");
  EXPECT_EQ(j["mode"], "closed");
  EXPECT_EQ(j["connection"], "keep-alive");
  EXPECT_EQ(j["connections"], 64);
  EXPECT_EQ(j["threads"], 1);
  EXPECT_TRUE(j["rate"].is_null());
  EXPECT_EQ(j["duration_s"], 2.0);
  EXPECT_EQ(j["requests"], 100);
  EXPECT_EQ(j["rps"], 50.0);
  EXPECT_EQ(j["errors"]["refused"], 1);
  EXPECT_EQ(j["errors"]["timeout"], 2);
  EXPECT_EQ(j["errors_total"], 3);
  EXPECT_EQ(j["workers"], nlohmann::ordered_json({{"0", 39}, {"1", 60}, {"-", 1}}));
  EXPECT_EQ(j["held"]["connections"], 4);
  EXPECT_EQ(j["held"]["requests"], 20);
  EXPECT_EQ(j["held"]["errors_total"], 1);
  EXPECT_EQ(j["paths"]["/"]["requests"], 90);
  EXPECT_EQ(j["paths"]["/work?us=5000"]["requests"], 10);
  EXPECT_NEAR(j["paths"]["/"]["latency_us"]["p50"].get<double>(), 100.0, 1.0);
  EXPECT_NEAR(j["paths"]["/work?us=5000"]["latency_us"]["p50"].get<double>(), 5000.0, 50.0);
  EXPECT_NEAR(j["latency_us"]["p99"].get<double>(), 5000.0, 50.0);
  EXPECT_NEAR(j["latency_us"]["mean"].get<double>(), 590.0, 0.1);
  EXPECT_NEAR(j["client_cpu_us_per_request"].get<double>(), 600.0 / 120, 0.01) << "held requests count too";
}

TEST(LbloadReport, OpenLoopAndConnectionModes) {
  RunResult r{RunStats(1)};
  auto j = report_json(options_for({"--rate", "250", "--new-connection", "http://127.0.0.1:1/"}), r);
  EXPECT_EQ(j["mode"], "open");
  EXPECT_EQ(j["rate"], 250.0);
  EXPECT_EQ(j["connection"], "new");
  EXPECT_EQ(j["client_cpu_us_per_request"], 0.0) << "no requests, no division by zero";
  j = report_json(options_for({"--connect-only", "http://127.0.0.1:1/"}), r);
  EXPECT_EQ(j["connection"], "connect-only");
}

TEST(LbloadReport, TableSaysTheSame) {
  const Options o = options_for({"--mix", "9:/,1:/work?us=5000", "--hold", "4", "http://127.0.0.1:8080/"});
  const std::string table = report_table(o, two_path_result());
  for (const char* part : {"100 in 2.00 s = 50.0 req/s", "p50 0.10", "refused 1", "timeout 2", "0: 39",
                           "1: 60", "-: 1", "/work?us=5000", "4 connections, 20 requests, 1 errors",
                           "5.00 us/request"}) {
    EXPECT_NE(table.find(part), std::string::npos) << "no '" << part << "' in\n" << table;
  }
}

TEST(LbloadReport, NoPerPathLinesForOnePath) {
  const std::string table = report_table(options_for({"http://127.0.0.1:8080/"}), two_path_result());
  EXPECT_EQ(table.find("per path"), std::string::npos) << table;
}

}  // namespace
}  // namespace lbd::load
