// What an operator relies on in lbctl beyond its verbs, against an lbd in --mode reuseport (no
// root needed): $LBD_CONTROL names the control socket when -s does not (a shell set up once for
// one lbd), and `lbctl top`'s keys u (undrain the selected slot) and r (rolling reload) act on
// lbd and say so on the screen. The p key switches the steering policy, which needs --mode bpf:
// tests/root/control_features_bpf_test.cpp.
#include <gtest/gtest.h>

#include <cctype>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "support/control_test.h"
#include "support/tmux.h"
#include "support/top_screen.h"

namespace lbd::test {
namespace {

using nlohmann::json;

// --- $LBD_CONTROL -------------------------------------------------------------------------------

class LbdControlVariable : public ControlTest {
 protected:
  // lbctl ARGS with `variable` as $LBD_CONTROL and no -s of the test's own; $LBD_CONTROL_DIR
  // unset, so only the variable under test can point lbctl at a socket.
  CommandResult lbctl_with(const std::string& variable, const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"/usr/bin/env", "-u", "LBD_CONTROL_DIR", "LBD_CONTROL=" + variable, LBCTL_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv, after(30s));
  }
};

TEST_F(LbdControlVariable, NamesTheSocketWhenNoFlagDoesAndTheFlagWins) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 2)));
  const auto before = serving_pids();
  ASSERT_EQ(before.size(), 2u);

  // Without -s, the variable's socket is the one lbctl talks to: this lbd answers, by its pid.
  CommandResult s = lbctl_with(socket_path(), {"status", "--json"});
  ASSERT_TRUE(s.exited(0)) << s.describe();
  const json answer = json::parse(s.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(answer.is_object()) << s.out;
  EXPECT_EQ(answer["lbd"].value("pid", 0), lbd().pid()) << s.out;

  // A verb that changes something reaches it too.
  CommandResult restart = lbctl_with(socket_path(), {"restart", "1"});
  ASSERT_TRUE(restart.exited(0)) << restart.describe();
  const auto now = serving_pids();
  ASSERT_EQ(now.size(), 2u);
  EXPECT_EQ(now.at(0), before.at(0));
  EXPECT_NE(now.at(1), before.at(1)) << "lbctl restart 1 through $LBD_CONTROL replaced nothing";

  // A variable naming a socket no lbd listens on: lbctl says which socket it tried (that one,
  // not the default /run/lbd/lbd.sock).
  const std::string missing = dir_.path("missing.sock");
  CommandResult nobody_there = lbctl_with(missing, {"status"});
  EXPECT_TRUE(nobody_there.exited(1)) << nobody_there.describe();
  EXPECT_EQ(nobody_there.err, "lbctl: lbd is not running (no control socket at " + missing + ")\n");
  EXPECT_EQ(nobody_there.out, "");

  // -s on the command line wins over a variable left in the shell.
  CommandResult flag_wins = lbctl_with(missing, {"-s", socket_path(), "status", "--json"});
  ASSERT_TRUE(flag_wins.exited(0)) << flag_wins.describe();
  EXPECT_EQ(json::parse(flag_wins.out, nullptr, false)["lbd"].value("pid", 0), lbd().pid()) << flag_wins.out;
}

// --- lbctl top: u and r -----------------------------------------------------------------------------

class LbctlTopKeys : public ControlTest {
 protected:
  void SetUp() override {
    if (!TmuxSession::available()) GTEST_SKIP() << "needs tmux, to give lbctl top a terminal (apt install tmux)";
  }

  // lbctl top on a 160x40 terminal, once it shows a row per worker.
  void open_top() {
    tmux_.emplace(dir_.path("tmux.sock"), std::vector<std::string>{LBCTL_PATH, "-s", socket_path(), "top"}, 160, 40);
    ASSERT_TRUE(eventually(after(10s), [&] { return rows_now().size() == 2; }, 50ms)) << screen_;
  }

  std::vector<TableRow> rows_now() {
    screen_ = tmux_->screen();
    return table_rows(screen_);
  }

  // The screen's row for each slot shows this pid and state.
  bool screen_shows(const std::map<unsigned, pid_t>& pids, const std::string& state) {
    const auto rows = rows_now();
    if (rows.size() != pids.size()) return false;
    for (const auto& row : rows) {
      auto it = pids.find(static_cast<unsigned>(row.slot));
      if (it == pids.end() || row.pid != std::to_string(it->second) || row.state != state) return false;
    }
    return true;
  }

  void TearDown() override {
    tmux_.reset();
    ControlTest::TearDown();
  }

  std::optional<TmuxSession> tmux_;
  std::string screen_;
};

TEST_F(LbctlTopKeys, UUndrainsTheSelectedSlot) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 2)));
  const auto before = serving_pids();
  ASSERT_EQ(before.size(), 2u);
  CommandResult drained = lbctl({"drain", "1", "--wait"});
  ASSERT_TRUE(drained.exited(0)) << drained.describe();
  ASSERT_EQ(states_of(status(), 1), "drained");

  ASSERT_NO_FATAL_FAILURE(open_top());
  ASSERT_TRUE(eventually(after(5s), [&] {
    const auto rows = rows_now();
    return rows.size() == 2 && rows[1].state == "drained";
  }, 50ms)) << screen_;
  // The selection starts on slot 0; j moves it to the drained slot 1, u starts a worker there.
  tmux_->send_keys({"j", "u"});
  json s;
  EXPECT_TRUE(eventually(after(15s), [&] {
    s = status();
    return states_of(s, 1) == "active";
  }, 50ms)) << "slot 1 was not undrained: " << s.dump(2);
  EXPECT_EQ(states_of(s, 0), "active") << s.dump(2);
  const auto now = serving_pids();
  ASSERT_EQ(now.size(), 2u) << s.dump(2);
  EXPECT_EQ(now.at(0), before.at(0)) << "slot 0 was left alone";
  EXPECT_NE(now.at(1), before.at(1)) << "a new worker serves slot 1";
  // The status line says it was done, and slot 1's row shows the new worker serving.
  EXPECT_TRUE(eventually(after(5s), [&] {
    return screen_shows(now, "active") && screen_.find("undrain done: 1 slot(s)") != std::string::npos;
  }, 50ms)) << screen_;
  EXPECT_EQ(fetch_from_worker(address(), 1, after(5s)).worker(), 1);
}

TEST_F(LbctlTopKeys, RStartsARollingReloadOfEveryWorker) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 2)));
  const auto before = serving_pids();
  ASSERT_EQ(before.size(), 2u);
  ASSERT_NO_FATAL_FAILURE(open_top());

  tmux_->send_keys({"r"});
  json s;
  EXPECT_TRUE(eventually(after(30s), [&] {
    s = status();
    return s["lbd"].value("reloads", -1) == 1 && s["lbd"]["operation"].is_null();
  }, 50ms)) << "no reload completed: " << s.dump(2);
  const auto now = serving_pids();
  ASSERT_EQ(now.size(), 2u) << s.dump(2);
  for (unsigned slot = 0; slot < 2; slot++) EXPECT_NE(now.at(slot), before.at(slot)) << "slot " << slot << " was not replaced";
  EXPECT_TRUE(eventually(after(5s), [&] {
    return screen_shows(now, "active") && screen_.find("reload done: 2 slot(s)") != std::string::npos;
  }, 50ms)) << screen_;
}

}  // namespace
}  // namespace lbd::test
