// The fixture for tests that drive lbd through lbctl: lbd with its own control socket in a
// private temp dir, and short-hands for lbctl and `lbctl status --json`.
//
//   TEST_F(Reload, ...) {
//     ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("bpf", 2)));
//     CommandResult r = lbctl({"reload"});
//     EXPECT_TRUE(r.exited(0)) << r.describe();
//     auto pids = serving_pids();
//   }
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/lbctl.h"
#include "support/lbd_test.h"
#include "support/temp_dir.h"

namespace lbd::test {

class ControlTest : public LbdTest {
 protected:
  // lbd (or `binary`) with `args` and --control <temp dir>/lbd.sock.
  void start_controlled(std::vector<std::string> args, std::string binary = LBD_BINARY_PATH) {
    args.push_back("--control");
    args.push_back(socket_path());
    start(std::move(args), std::move(binary));
  }

  // lbd goes before its temp dir (sockets, binaries) does.
  void TearDown() override { lbd_.reset(); }

  const std::string& socket_path() {
    if (socket_.empty()) socket_ = dir_.path("lbd.sock");
    return socket_;
  }

  CommandResult lbctl(const std::vector<std::string>& args, Deadline deadline = after(30s)) {
    return run_lbctl(socket_path(), args, deadline);
  }

  // `lbctl status --json`, parsed. A failure (and an empty object) if lbctl fails.
  nlohmann::json status() {
    CommandResult r = lbctl({"status", "--json"}, after(10s));
    if (!r.exited(0)) {
      ADD_FAILURE() << "lbctl status --json: " << r.describe();
      return nlohmann::json::object();
    }
    nlohmann::json j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("workers")) {
      ADD_FAILURE() << "lbctl status --json printed something else: " << r.out;
      return nlohmann::json::object();
    }
    return j;
  }

  // The status rows of `slot` (a slot being replaced has two or more).
  static std::vector<nlohmann::json> rows_of(const nlohmann::json& status, unsigned slot) {
    std::vector<nlohmann::json> rows;
    for (const auto& w : status.value("workers", nlohmann::json::array())) {
      if (w.value("slot", -1) == static_cast<int>(slot)) rows.push_back(w);
    }
    return rows;
  }

  // Slot -> pid of its active worker, from `lbctl status --json`.
  std::map<unsigned, pid_t> serving_pids() {
    std::map<unsigned, pid_t> pids;
    for (const auto& w : status().value("workers", nlohmann::json::array())) {
      if (w.value("state", "") == "active" && w["pid"].is_number()) {
        pids[w["slot"].get<unsigned>()] = w["pid"].get<pid_t>();
      }
    }
    return pids;
  }

  // Load that stands in for other machines' clients: bounded in time (`bound`) and count (the
  // tests stop it earlier, once what they check is done), and at a lower priority than lbd: on a
  // 2-CPU box (or under ASan) busy clients would otherwise starve the processes lbd starts.
  LoadOptions bounded(LoadOptions options, std::chrono::seconds bound) {
    options.address = address();
    options.duration = bound;
    options.max_requests = 10'000'000;
    options.nice = 19;
    return options;
  }

  // The two kinds of client the reload, upgrade and takeover tests put lbd under: 4 clients
  // opening a new connection per request, or 64 keep-alive connections.
  static LoadOptions clients(bool keep_alive) {
    LoadOptions options;
    options.keep_alive = keep_alive;
    options.threads = keep_alive ? 64 : 4;
    if (keep_alive) options.request = http_get("/");
    return options;
  }

  // The slot's states in status order, e.g. "starting,draining" (a slot mid-replacement).
  static std::string states_of(const nlohmann::json& status, unsigned slot) {
    std::string states;
    for (const auto& row : rows_of(status, slot)) {
      states += (states.empty() ? "" : ",") + row.value("state", std::string("?"));
    }
    return states;
  }

  TempDir dir_;
  std::string socket_;
};

}  // namespace lbd::test
