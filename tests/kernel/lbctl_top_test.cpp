// `lbctl top` (tools/lbctl/top.h) against an lbd in --mode reuseport (no root needed): the plain
// snapshot when stdout is a pipe, the usual one-line error when lbd is not running, and the
// full screen on a real terminal (tmux): one row per worker, live req/s under load, `d` drains
// the selected worker, `q` quits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "support/control_test.h"
#include "support/tmux.h"
#include "support/top_screen.h"

namespace lbd::test {
namespace {

using nlohmann::json;

// "2043" -> 2043, "12.3k" -> 12300; nothing for "-".
std::optional<double> rate_value(const std::string& shown) {
  if (shown.empty() || !std::isdigit(static_cast<unsigned char>(shown[0]))) return std::nullopt;
  const double value = std::stod(shown);
  if (shown.back() == 'k') return value * 1e3;
  if (shown.back() == 'M') return value * 1e6;
  return value;
}

// The total in the header: "... req/s 2043 ...".
std::optional<double> total_rate(const std::string& text) {
  static const std::regex kTotal(R"(req/s (\S+))");
  std::smatch match;
  if (!std::regex_search(text, match, kTotal)) return std::nullopt;
  return rate_value(match[1]);
}

std::vector<std::string> rates_of(const std::vector<TableRow>& rows) {
  std::vector<std::string> rates;
  for (const auto& row : rows) rates.push_back(row.requests_per_s);
  return rates;
}

class LbctlTop : public ControlTest {
 protected:
  // New connections from several clients, so the kernel's hash spreads them over both workers.
  // Niced: the clients stand in for other machines and must not starve lbd on a small box.
  LoadOptions steady_load() {
    LoadOptions options;
    options.address = address();
    options.threads = 4;
    options.duration = 40s;
    options.max_requests = 100'000'000;
    options.nice = 10;
    return options;
  }

  void expect_one_row_per_worker(const std::vector<TableRow>& rows, const std::string& text) {
    const auto pids = serving_pids();
    ASSERT_EQ(rows.size(), 2u) << text;
    for (unsigned slot = 0; slot < 2; slot++) {
      EXPECT_EQ(rows[slot].slot, static_cast<int>(slot)) << text;
      EXPECT_EQ(rows[slot].pid, std::to_string(pids.at(slot))) << text;
      EXPECT_EQ(rows[slot].state, "active") << text;
    }
  }
};

TEST_F(LbctlTop, SaysLbdIsNotRunningLikeTheOtherVerbs) {
  const std::string missing = dir_.path("missing.sock");
  CommandResult r = run_lbctl(missing, {"top"}, after(10s));
  EXPECT_TRUE(r.exited(1)) << r.describe();
  EXPECT_EQ(r.err, "lbctl: lbd is not running (no control socket at " + missing + ")\n");
  EXPECT_EQ(r.out, "");
}

TEST_F(LbctlTop, PrintsOneSnapshotWhenStdoutIsNotATerminal) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 2)));
  LoadGenerator load(steady_load());
  ASSERT_TRUE(wait_for_requests(load, 100, after(10s))) << "no load";

  // run_lbctl gives it pipes: one snapshot, rates over about a second, then exit.
  CommandResult r = lbctl({"top"}, after(20s));
  ASSERT_TRUE(r.exited(0)) << r.describe();
  EXPECT_EQ(r.err, "");
  const auto lines = r.out_lines();
  ASSERT_GE(lines.size(), 2u) << r.out;
  EXPECT_NE(lines[0].find("pid " + std::to_string(lbd().pid())), std::string::npos) << r.out;
  EXPECT_NE(lines[0].find("mode reuseport"), std::string::npos) << r.out;
  EXPECT_NE(lines[0].find(address().to_string()), std::string::npos) << r.out;
  ASSERT_NO_FATAL_FAILURE(expect_one_row_per_worker(table_rows(r.out), r.out));
  EXPECT_GT(total_rate(r.out).value_or(0), 0) << "req/s under load: " << r.out;
  for (const auto& row : table_rows(r.out)) {
    if (rate_value(row.requests_per_s).value_or(0) > 0) {
      EXPECT_NE(row.p99, "-") << "p99 of a busy worker: " << r.out;
    }
  }
  EXPECT_EQ(lines.size(), 6u) << "two header lines, a blank, the column header, a row per worker:\n" << r.out;
  load.stop();
}

TEST_F(LbctlTop, OnATerminalShowsLiveRatesDrainsTheSelectedWorkerAndQuits) {
  if (!TmuxSession::available()) GTEST_SKIP() << "needs tmux, to give lbctl top a terminal (apt install tmux)";
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 2)));

  // sh writes lbctl's exit status down once the screen is gone.
  const std::string exit_file = dir_.path("top.exit");
  TmuxSession tmux(dir_.path("tmux.sock"),
                   {"sh", "-c", R"("$0" -s "$1" top; echo $? > "$2")", LBCTL_PATH, socket_path(), exit_file}, 160, 40);
  std::string screen;
  auto rows_on_screen = [&] {
    screen = tmux.screen();
    return table_rows(screen);
  };
  ASSERT_TRUE(eventually(after(10s), [&] { return rows_on_screen().size() == 2; }, 50ms)) << screen;
  ASSERT_NO_FATAL_FAILURE(expect_one_row_per_worker(table_rows(screen), screen));

  // Under load the rates become non-zero, then change from one refresh to the next.
  LoadGenerator load(steady_load());
  std::vector<std::string> first_rates;
  ASSERT_TRUE(eventually(after(15s), [&] {
    const auto rows = rows_on_screen();
    first_rates = rates_of(rows);
    // A busy worker has a p99 too (lbd's request-duration histogram, over the same second).
    const bool p99_shown = std::any_of(rows.begin(), rows.end(), [](const TableRow& row) { return row.p99 != "-"; });
    return total_rate(screen).value_or(0) > 0 && p99_shown;
  }, 100ms)) << screen;
  EXPECT_TRUE(eventually(after(10s), [&] {
    const auto rates = rates_of(rows_on_screen());
    return total_rate(screen).value_or(0) > 0 && rates.size() == 2 && rates != first_rates;
  }, 100ms)) << "the same rates for 10 s:\n" << screen;

  // The selection starts on slot 0; j moves it to slot 1, d drains that one.
  tmux.send_keys({"j", "d"});
  json s;
  EXPECT_TRUE(eventually(after(10s), [&] {
    s = status();
    const std::string state = states_of(s, 1);
    return state == "draining" || state == "drained";  // drained: already done
  }, 50ms)) << s.dump(2);
  EXPECT_EQ(states_of(s, 0), "active") << "only the selected slot drains: " << s.dump(2);
  EXPECT_TRUE(eventually(after(5s), [&] {
    const auto rows = rows_on_screen();
    return screen.find("draining [1]") != std::string::npos && rows.size() == 2 &&
           (rows[1].state == "draining" || rows[1].state == "drained");
  }, 50ms)) << "the status line and slot 1's row should say so:\n" << screen;
  load.stop();

  // q: the screen goes, lbctl exits 0, and the session ends with it.
  tmux.send_keys({"q"});
  EXPECT_TRUE(eventually(after(5s), [&] { return !tmux.running(); }, 20ms)) << tmux.screen();
  std::ifstream exit_status(exit_file);
  std::string code;
  EXPECT_TRUE(std::getline(exit_status, code)) << "lbctl top did not exit";
  EXPECT_EQ(code, "0");
}

}  // namespace
}  // namespace lbd::test
