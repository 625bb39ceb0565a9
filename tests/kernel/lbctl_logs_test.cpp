// `lbctl logs` (tools/lbctl/logs_command.h), the real binary, reading log files the real
// LogCollector wrote into a temporary directory: the last K lines of an app (across rotated
// files), one worker's lines, every app merged by time, the one-line errors, and --follow: new
// lines appear as they are written, through a rotation, until SIGTERM ends it with status 0.
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "logs/log_collector.h"
#include "support/log_collector.h"
#include "support/deadline.h"
#include "support/lbctl.h"
#include "support/lbd_process.h"
#include "support/temp_dir.h"

namespace lbd::test {
namespace {

using logs::LogCollector;
using logs::LogOptions;
using logs::LogPipe;
using logs::parse_record;
using logs::PipeState;

// Writes `lines` as worker `worker`'s stdout through a real pipe into the collector: a child's
// output without the child. Each write is drained before the next, so none can block.
void feed(LogCollector& collector, uint32_t worker, const std::vector<std::string>& lines) {
  auto pipes = collector.make_child_pipes(worker);
  ASSERT_TRUE(pipes) << pipes.error().message();
  std::string chunk;
  auto flush = [&] {
    ASSERT_EQ(write(pipes->out_write.get(), chunk.data(), chunk.size()), static_cast<ssize_t>(chunk.size()));
    ASSERT_EQ(collector.on_readable(pipes->out), PipeState::kOpen);
    chunk.clear();
  };
  for (const auto& line : lines) {
    chunk += line + "\n";
    if (chunk.size() > 16 * 1024) flush();
  }
  if (!chunk.empty()) flush();
  pipes->out_write.reset();
  pipes->err_write.reset();
  ASSERT_EQ(collector.on_readable(pipes->out), PipeState::kClosed);
}

std::vector<std::string> numbered(const std::string& prefix, int from, int to) {
  std::vector<std::string> lines;
  for (int i = from; i < to; i++) lines.push_back(prefix + std::to_string(i));
  return lines;
}

// Waits until the writer thread has written `count` records in total.
bool written(const LogCollector& collector, uint64_t count, Deadline deadline) {
  return eventually(deadline, [&] { return collector.written_lines() >= count; }, 1ms);
}

std::vector<std::string> file_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

CommandResult lbctl_logs(const std::string& dir, std::vector<std::string> args) {
  std::vector<std::string> argv = {LBCTL_PATH, "logs"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.insert(argv.end(), {"--log-dir", dir});
  return run_command(argv, after(20s));
}

// The text field of each line (which must be a record).
std::vector<std::string> texts(const std::vector<std::string>& lines) {
  std::vector<std::string> out;
  for (const auto& line : lines) {
    auto record = parse_record(line);
    EXPECT_TRUE(record) << "not a record: " << line;
    out.push_back(record ? std::string(record->text) : line);
  }
  return out;
}

TEST(LbctlLogs, LastLinesOfAnApp) {
  TempDir dir;
  auto collector = make_collector({.dir = dir.path(), .app = "web"});
  ASSERT_TRUE(collector);
  feed(*collector, 0, numbered("zero ", 0, 100));
  feed(*collector, 1, numbered("one ", 0, 100));
  collector.reset();
  const auto file = file_lines(dir.path("web.log"));
  ASSERT_EQ(file.size(), 200u);

  auto five = lbctl_logs(dir.path(), {"web", "--lines", "5"});
  ASSERT_TRUE(five.exited(0)) << five.describe();
  EXPECT_EQ(five.out_lines(), std::vector<std::string>(file.end() - 5, file.end()));
  EXPECT_EQ(five.err, "");

  auto by_default = lbctl_logs(dir.path(), {"web"});
  ASSERT_TRUE(by_default.exited(0)) << by_default.describe();
  EXPECT_EQ(by_default.out_lines(), std::vector<std::string>(file.end() - 20, file.end()));

  auto none = lbctl_logs(dir.path(), {"web", "--lines", "0"});
  ASSERT_TRUE(none.exited(0)) << none.describe();
  EXPECT_EQ(none.out, "");
}

TEST(LbctlLogs, ControlCharactersAnAppWroteAreShownEscaped) {
  // A program (or a client whose input it echoes) can write escape sequences that would drive the
  // operator's terminal: lbctl logs shows them, never sends them.
  TempDir dir;
  auto collector = make_collector({.dir = dir.path(), .app = "web"});
  ASSERT_TRUE(collector);
  feed(*collector, 0, {"\x1b]0;owned\x07red \x1b[31malert\x1b[0m", "C1 \xc2\x9b" "2J and DEL \x7f", "a\ttab and \\x41"});
  collector.reset();
  auto shown = lbctl_logs(dir.path(), {"web"});
  ASSERT_TRUE(shown.exited(0)) << shown.describe();
  EXPECT_EQ(texts(shown.out_lines()),
            (std::vector<std::string>{"\\x1b]0;owned\\x07red \\x1b[31malert\\x1b[0m", "C1 \\xc2\\x9b2J and DEL \\x7f",
                                      "a\ttab and \\\\x41"}));
  EXPECT_EQ(shown.out.find('\x1b'), std::string::npos);
}

TEST(LbctlLogs, OneWorker) {
  TempDir dir;
  auto collector = make_collector({.dir = dir.path(), .app = "web"});
  ASSERT_TRUE(collector);
  feed(*collector, 0, numbered("zero ", 0, 100));
  feed(*collector, 1, numbered("one ", 0, 100));
  feed(*collector, 0, numbered("zero again ", 0, 2));
  collector->note(1, "restarted");
  collector.reset();

  auto worker0 = lbctl_logs(dir.path(), {"web", "--worker", "0", "--lines", "3"});
  ASSERT_TRUE(worker0.exited(0)) << worker0.describe();
  EXPECT_EQ(texts(worker0.out_lines()), (std::vector<std::string>{"zero 99", "zero again 0", "zero again 1"}));

  auto worker1 = lbctl_logs(dir.path(), {"web", "--worker", "1", "--lines", "2"});
  ASSERT_TRUE(worker1.exited(0)) << worker1.describe();
  EXPECT_EQ(texts(worker1.out_lines()), (std::vector<std::string>{"one 99", "restarted"}));

  auto nobody = lbctl_logs(dir.path(), {"web", "--worker", "5"});
  ASSERT_TRUE(nobody.exited(0)) << nobody.describe();
  EXPECT_EQ(nobody.out, "");
}

TEST(LbctlLogs, LinesReachBackIntoRotatedFiles) {
  TempDir dir;
  // The smallest files the collector allows (one 16 KiB record), so 2,000 lines rotate often.
  auto collector = make_collector({.dir = dir.path(), .app = "web", .max_bytes = 20'000, .keep_files = 50});
  ASSERT_TRUE(collector);
  feed(*collector, 0, numbered("line ", 0, 2000));
  collector.reset();
  ASSERT_TRUE(std::filesystem::exists(dir.path("web.log.3"))) << "expected several rotated files";

  auto many = lbctl_logs(dir.path(), {"web", "--lines", "1500"});
  ASSERT_TRUE(many.exited(0)) << many.describe();
  EXPECT_EQ(texts(many.out_lines()), numbered("line ", 500, 2000));

  auto all = lbctl_logs(dir.path(), {"web", "--lines", "1000000"});
  ASSERT_TRUE(all.exited(0)) << all.describe();
  EXPECT_EQ(texts(all.out_lines()), numbered("line ", 0, 2000));
}

TEST(LbctlLogs, EveryAppMergedByTime) {
  TempDir dir;
  auto api = make_collector({.dir = dir.path(), .app = "api"});
  auto web = make_collector({.dir = dir.path(), .app = "web"});
  ASSERT_TRUE(api && web);
  for (int i = 0; i < 10; i++) {
    feed(*api, 0, {"api " + std::to_string(i)});
    feed(*web, 1, {"web " + std::to_string(i)});
  }
  api.reset();
  web.reset();

  // The directory from $LBD_LOG_DIR this time.
  auto merged = run_command({"/usr/bin/env", "LBD_LOG_DIR=" + dir.path(), LBCTL_PATH, "logs", "--lines", "100"},
                            after(20s));
  ASSERT_TRUE(merged.exited(0)) << merged.describe();
  const auto lines = merged.out_lines();
  ASSERT_EQ(lines.size(), 20u) << merged.out;
  std::vector<std::string> expected;
  for (int i = 0; i < 10; i++) {
    expected.push_back("api " + std::to_string(i));
    expected.push_back("web " + std::to_string(i));
  }
  EXPECT_EQ(texts(lines), expected) << "written alternately, so merged by time they alternate";
  for (size_t i = 1; i < lines.size(); i++) {
    EXPECT_LE(lines[i - 1].substr(0, logs::kTimestampLength), lines[i].substr(0, logs::kTimestampLength));
  }

  auto last = lbctl_logs(dir.path(), {"--lines", "3"});
  ASSERT_TRUE(last.exited(0)) << last.describe();
  EXPECT_EQ(texts(last.out_lines()), (std::vector<std::string>{"web 8", "api 9", "web 9"}));
}

TEST(LbctlLogs, Errors) {
  TempDir dir;
  {
    auto collector = make_collector({.dir = dir.path(), .app = "web"});
    ASSERT_TRUE(collector);
    collector->note(0, "hello");
  }
  auto missing = lbctl_logs(dir.path(), {"nope"});
  EXPECT_TRUE(missing.exited(1)) << missing.describe();
  EXPECT_EQ(missing.err, "lbctl: no logs for app 'nope' in " + dir.path() + "\n");
  EXPECT_EQ(missing.out, "");

  auto empty_dir = lbctl_logs(dir.path("nothing-here"), {});
  EXPECT_TRUE(empty_dir.exited(1)) << empty_dir.describe();
  EXPECT_EQ(empty_dir.err, "lbctl: no logs in " + dir.path("nothing-here") + "\n");

  auto bad_name = lbctl_logs(dir.path(), {"../web"});
  EXPECT_TRUE(bad_name.exited(2)) << bad_name.describe();
  EXPECT_TRUE(bad_name.err.starts_with("lbctl: bad app name '../web'")) << bad_name.err;

  auto bad_lines = lbctl_logs(dir.path(), {"web", "--lines", "many"});
  EXPECT_TRUE(bad_lines.exited(2)) << bad_lines.describe();
}

TEST(LbctlLogs, FollowShowsNewLinesThroughARotationUntilSigterm) {
  TempDir dir;
  auto collector = make_collector({.dir = dir.path(), .app = "web", .max_bytes = 20'000, .keep_files = 5});
  ASSERT_TRUE(collector);
  feed(*collector, 0, numbered("old ", 0, 10));
  ASSERT_TRUE(written(*collector, 10, after(10s)));

  LbdProcess follower(LbdProcess::Options{
      .binary = LBCTL_PATH, .args = {"logs", "web", "-f", "--lines", "3", "--log-dir", dir.path()}});
  ASSERT_TRUE(follower.wait_for_log(" out old 9$", after(10s))) << follower.log();
  EXPECT_EQ(texts(follower.lines()), (std::vector<std::string>{"old 7", "old 8", "old 9"}));

  // A new line arrives while it watches.
  feed(*collector, 1, {"new line"});
  ASSERT_TRUE(follower.wait_for_log(" web 1 out new line$", after(10s))) << follower.log();

  // Enough to rotate web.log a few times (each file holds about 400 of these).
  feed(*collector, 0, numbered("burst ", 0, 1500));
  ASSERT_TRUE(written(*collector, 1511, after(10s)));
  EXPECT_TRUE(std::filesystem::exists(dir.path("web.log.2")));
  ASSERT_TRUE(follower.wait_for_log(" out burst 1499$", after(10s))) << follower.log();
  // Every line exactly once, in order: nothing lost or repeated at the rotations.
  std::vector<std::string> expected = {"old 7", "old 8", "old 9", "new line"};
  for (const auto& line : numbered("burst ", 0, 1500)) expected.push_back(line);
  EXPECT_EQ(texts(follower.lines()), expected);

  follower.signal(SIGTERM);
  EXPECT_EQ(follower.wait_exit(after(10s)), ExitStatus::exited(0));
}

TEST(LbctlLogs, FollowEndsQuietlyWhenItsReaderGoes) {
  TempDir dir;
  auto collector = make_collector({.dir = dir.path(), .app = "web"});
  ASSERT_TRUE(collector);
  feed(*collector, 0, {"one line"});
  ASSERT_TRUE(written(*collector, 1, after(10s)));
  // `lbctl logs -f | head -n 1`: head exits after one line; lbctl notices and exits 0.
  auto piped = run_command({"/bin/sh", "-c",
                            "{ '" + std::string(LBCTL_PATH) + "' logs web -f --log-dir '" + dir.path() +
                                "'; echo \"lbctl exit $?\" >&2; } | head -n 1"},
                           after(20s));
  ASSERT_FALSE(piped.timed_out) << "lbctl kept running after its reader went";
  ASSERT_TRUE(piped.exited(0)) << piped.describe();
  EXPECT_NE(piped.out.find(" web 0 out one line"), std::string::npos) << piped.out;
  EXPECT_EQ(piped.err, "lbctl exit 0\n");
}

}  // namespace
}  // namespace lbd::test
