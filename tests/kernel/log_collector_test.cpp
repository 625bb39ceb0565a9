// LogCollector (userspace/logs/log_collector.h) with real pipes, real child processes and real
// files, driven from an epoll loop the way the supervisor drives it:
//
//   - two children write 100,000 numbered lines each, at once, in odd-sized write()s: the file
//     holds all 200,000 as whole records, each child's in order;
//   - rotation: no file passes max_bytes, each rotated file is full, the file count is what the
//     size limit implies, nothing is lost with enough files kept, the oldest go with few kept;
//   - a log "disk" that does not take the data (a FIFO nobody reads): the loop keeps reading the
//     children without blocking, whole lines are dropped and counted, and each gap in the file is
//     bridged by an `lbd` record saying how many lines it lost;
//   - long lines come out in pieces (out, out+, ...), stderr and lbd's notes are tagged, a last
//     line without '\n' is kept at EOF or when a pipe is given up early, options are checked.
#include "logs/log_collector.h"
#include "support/log_collector.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "support/deadline.h"
#include "support/temp_dir.h"

namespace lbd::logs {
namespace {

using test::after;
using test::Clock;
using test::Deadline;
using test::TempDir;
using namespace std::chrono_literals;
using lbd::test::make_collector;

// Child `child`'s line number n. Lengths vary, so lines straddle the odd-sized writes differently.
std::string line_text(uint32_t child, uint64_t n) {
  return "child " + std::to_string(child) + " line " + std::to_string(n) + " " +
         std::string(n % 41, static_cast<char>('a' + n % 26));
}

std::string child_output(uint32_t child, uint64_t lines) {
  std::string out;
  for (uint64_t n = 0; n < lines; n++) out += line_text(child, n) + '\n';
  return out;
}

// Forked children that write prepared bytes into a pipe and exit. The destructor kills and reaps
// whatever is left, so a failed test leaves no process behind.
class Children {
 public:
  ~Children() {
    for (pid_t pid : pids_) {
      kill(pid, SIGKILL);
      while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
      }
    }
  }

  // Writes `bytes` to `fd` in write()s of odd sizes (1 byte to 64 KiB + 1), then exits. `bytes`
  // is built before the fork: the child only calls write() and _exit().
  void spawn_writer(const std::string& bytes, int fd) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0) << strerror(errno);
    if (pid == 0) {
      static constexpr size_t kSizes[] = {1, 7, 100, 4093, 333, 65537, 2, 9001, 17};
      size_t at = 0;
      for (size_t i = 0; at < bytes.size(); i++) {
        const size_t size = std::min(kSizes[i % std::size(kSizes)], bytes.size() - at);
        const ssize_t n = write(fd, bytes.data() + at, size);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) _exit(1);
        at += static_cast<size_t>(n);
      }
      _exit(0);
    }
    pids_.push_back(pid);
  }

  // Reaps every child; true if all exited with status 0 before the deadline.
  bool all_exited_cleanly(Deadline deadline) {
    bool clean = true;
    while (!pids_.empty()) {
      int status = 0;
      const pid_t pid = pids_.back();
      if (!test::eventually(deadline, [&] { return waitpid(pid, &status, WNOHANG) == pid; }, 1ms)) return false;
      pids_.pop_back();
      clean = clean && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
    return clean;
  }

 private:
  std::vector<pid_t> pids_;
};

// Worker `worker`'s stdout pipe with a child writing `bytes` into it. The parent's copy of the
// write end is closed at once, as the supervisor does, so the pipe ends when the child does.
void spawn_into_pipe(LogCollector& collector, Children& children, uint32_t worker, const std::string& bytes,
                     std::vector<LogPipe>& pipes) {
  auto made = collector.make_child_pipes(worker);
  ASSERT_TRUE(made) << made.error().message();
  children.spawn_writer(bytes, made->out_write.get());
  made->out_write.reset();
  made->err_write.reset();
  pipes.push_back(std::move(made->out));
  pipes.push_back(std::move(made->err));
}

struct Drive {
  bool finished = false;             // every pipe reached EOF before the deadline
  Clock::duration slowest{};         // the longest single on_readable call
  size_t calls = 0;
};

// The supervisor's part: an epoll loop calling on_readable until every pipe has ended.
Drive drive(LogCollector& collector, std::vector<LogPipe>& pipes, Deadline deadline) {
  Drive result;
  UniqueFd epoll(epoll_create1(EPOLL_CLOEXEC));
  for (uint32_t i = 0; i < pipes.size(); i++) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u32 = i;
    if (epoll_ctl(epoll.get(), EPOLL_CTL_ADD, pipes[i].fd(), &event) != 0) {
      ADD_FAILURE() << "epoll_ctl: " << strerror(errno);
      return result;
    }
  }
  size_t open = pipes.size();
  while (open > 0) {
    epoll_event events[8];
    const int n = epoll_wait(epoll.get(), events, 8, test::remaining_ms(deadline));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 && Clock::now() >= deadline) return result;
    for (int i = 0; i < n; i++) {
      LogPipe& pipe = pipes[events[i].data.u32];
      const auto start = Clock::now();
      const PipeState state = collector.on_readable(pipe);
      result.slowest = std::max(result.slowest, Clock::now() - start);
      result.calls++;
      if (state == PipeState::kClosed) {
        epoll_ctl(epoll.get(), EPOLL_CTL_DEL, pipe.fd(), nullptr);
        open--;
      }
    }
  }
  result.finished = true;
  return result;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The lines of a file; a file must end with a complete line.
std::vector<std::string> file_lines(const std::string& path) {
  const std::string text = read_file(path);
  EXPECT_TRUE(text.empty() || text.back() == '\n') << path << " ends in a torn line";
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// app.log's rotated files, oldest first, then app.log itself.
std::vector<std::string> log_files(const std::string& dir, const std::string& app) {
  std::vector<std::string> files;
  const std::string base = dir + "/" + app + ".log";
  for (unsigned n = 1; std::filesystem::exists(base + "." + std::to_string(n)); n++) {
    files.insert(files.begin(), base + "." + std::to_string(n));
  }
  if (std::filesystem::exists(base)) files.push_back(base);
  return files;
}

// Every record of an app, oldest first, across its files.
std::vector<std::string> all_records(const std::string& dir, const std::string& app) {
  std::vector<std::string> records;
  for (const auto& file : log_files(dir, app)) {
    for (auto& line : file_lines(file)) records.push_back(std::move(line));
  }
  return records;
}

// Checks that `records` are whole `out` records of `app`, each worker's numbered lines in order
// starting at its first line; returns each worker's count of lines seen. `gaps_bridged_by_notes`:
// a run of lines may be missing only where an lbd note says how many were dropped.
std::map<uint32_t, uint64_t> check_in_order(const std::vector<std::string>& records, const std::string& app,
                                            std::map<uint32_t, uint64_t> first = {},
                                            bool gaps_bridged_by_notes = false) {
  std::map<uint32_t, uint64_t> next = first;  // the line number expected next, per worker
  std::map<uint32_t, uint64_t> seen;
  for (const auto& line : records) {
    auto record = parse_record(line);
    if (!record) {
      ADD_FAILURE() << "not a whole record: '" << line.substr(0, 200) << "'";
      return seen;
    }
    EXPECT_EQ(record->app, app);
    if (record->stream == "lbd" && gaps_bridged_by_notes) {
      const std::string expected_prefix = "dropped ";
      const std::string expected_suffix = " lines from worker " + std::to_string(record->worker) + " (log writer behind)";
      std::string text(record->text);
      if (!text.starts_with(expected_prefix) || !text.ends_with(expected_suffix)) {
        ADD_FAILURE() << "unexpected lbd record: " << line;
        return seen;
      }
      next[record->worker] += std::stoull(text.substr(expected_prefix.size()));
      continue;
    }
    if (record->stream != "out") {
      ADD_FAILURE() << "unexpected stream: " << line;
      return seen;
    }
    const uint64_t n = next[record->worker]++;
    if (record->text != line_text(record->worker, n)) {
      ADD_FAILURE() << "worker " << record->worker << ": expected line " << n << ", got '" << record->text << "'";
      return seen;
    }
    seen[record->worker]++;
  }
  return seen;
}

TEST(LogCollector, TwoChildrenAtOnceGiveAllTheirLinesWholeAndInOrder) {
  TempDir dir;
  constexpr uint64_t kLines = 100'000;
  // A file and a queue larger than everything written: this test is about whole lines, not
  // about rotation or drops.
  auto collector =
      make_collector({.dir = dir.path(), .app = "web", .max_bytes = 1 << 30, .max_buffered_bytes = 64 << 20});
  ASSERT_TRUE(collector);

  Children children;
  std::vector<LogPipe> pipes;
  for (uint32_t worker : {0u, 1u}) spawn_into_pipe(*collector, children, worker, child_output(worker, kLines), pipes);
  ASSERT_FALSE(HasFatalFailure());

  const Drive drove = drive(*collector, pipes, after(60s));
  ASSERT_TRUE(drove.finished) << "the children's pipes did not end";
  EXPECT_TRUE(children.all_exited_cleanly(after(10s)));
  collector.reset();  // flushes and joins the writer

  const auto records = all_records(dir.path(), "web");
  EXPECT_EQ(records.size(), 2 * kLines);
  const auto seen = check_in_order(records, "web");
  EXPECT_EQ(seen, (std::map<uint32_t, uint64_t>{{0, kLines}, {1, kLines}}));
  EXPECT_EQ(log_files(dir.path(), "web").size(), 1u) << "one file holds them all";
}

// The number of files greedy packing of `records` into files of at most max_bytes gives: what
// rotation at the size limit must produce.
size_t files_for(const std::vector<std::string>& records, uint64_t max_bytes) {
  size_t files = 1;
  uint64_t size = 0;
  for (const auto& record : records) {
    const uint64_t bytes = record.size() + 1;
    if (size + bytes > max_bytes) {
      files++;
      size = 0;
    }
    size += bytes;
  }
  return files;
}

TEST(LogCollector, RotatesAtTheSizeLimitWithoutLosingALine) {
  TempDir dir;
  constexpr uint64_t kLines = 30'000;
  constexpr uint64_t kMaxBytes = 256 * 1024;
  auto collector = make_collector(
      {.dir = dir.path(), .app = "api", .max_bytes = kMaxBytes, .keep_files = 100, .max_buffered_bytes = 64 << 20});
  ASSERT_TRUE(collector);

  Children children;
  std::vector<LogPipe> pipes;
  for (uint32_t worker : {0u, 1u}) spawn_into_pipe(*collector, children, worker, child_output(worker, kLines), pipes);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(drive(*collector, pipes, after(60s)).finished);
  EXPECT_TRUE(children.all_exited_cleanly(after(10s)));
  collector.reset();

  const auto files = log_files(dir.path(), "api");
  const auto records = all_records(dir.path(), "api");
  EXPECT_EQ(check_in_order(records, "api"), (std::map<uint32_t, uint64_t>{{0, kLines}, {1, kLines}}));
  // About 4 MB in 256 KiB files: rotated many times, exactly as often as the limit implies.
  EXPECT_GT(files.size(), 10u);
  EXPECT_EQ(files.size(), files_for(records, kMaxBytes));
  for (size_t i = 0; i < files.size(); i++) {
    const uint64_t size = std::filesystem::file_size(files[i]);
    EXPECT_LE(size, kMaxBytes) << files[i];
    if (i + 1 < files.size()) {
      // Rotated only when the next record would not fit: each rotated file is full.
      const auto next_lines = file_lines(files[i + 1]);
      ASSERT_FALSE(next_lines.empty()) << files[i + 1];
      EXPECT_GT(size + next_lines.front().size() + 1, kMaxBytes) << files[i] << " was rotated before it was full";
    }
  }
}

TEST(LogCollector, KeepsOnlyTheNewestFiles) {
  TempDir dir;
  constexpr uint64_t kLines = 30'000;
  constexpr uint64_t kMaxBytes = 64 * 1024;
  auto collector = make_collector(
      {.dir = dir.path(), .app = "api", .max_bytes = kMaxBytes, .keep_files = 2, .max_buffered_bytes = 64 << 20});
  ASSERT_TRUE(collector);
  Children children;
  std::vector<LogPipe> pipes;
  spawn_into_pipe(*collector, children, 0, child_output(0, kLines), pipes);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(drive(*collector, pipes, after(60s)).finished);
  collector.reset();

  const std::string base = dir.path("api.log");
  EXPECT_TRUE(std::filesystem::exists(base + ".1"));
  EXPECT_TRUE(std::filesystem::exists(base + ".2"));
  EXPECT_FALSE(std::filesystem::exists(base + ".3"));
  for (const auto& file : log_files(dir.path(), "api")) EXPECT_LE(std::filesystem::file_size(file), kMaxBytes);
  // What is left is the newest lines, in order, up to the last one.
  const auto records = all_records(dir.path(), "api");
  ASSERT_FALSE(records.empty());
  auto first = parse_record(records.front());
  ASSERT_TRUE(first);
  const std::string text(first->text);
  const uint64_t first_line = std::stoull(text.substr(std::string("child 0 line ").size()));
  EXPECT_GT(first_line, 0u);
  EXPECT_EQ(check_in_order(records, "api", {{0, first_line}}), (std::map<uint32_t, uint64_t>{{0, kLines - first_line}}));
}

TEST(LogCollector, ASlowDiskMakesLinesDropNotTheLoopBlock) {
  TempDir dir;
  // The "disk": a FIFO that nobody reads for now. The writer thread blocks in write() once its
  // 64 KiB buffer is full, exactly like a writer stuck on a slow disk.
  const std::string fifo = dir.path("web.log");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0) << strerror(errno);
  UniqueFd fifo_reader(open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  ASSERT_TRUE(fifo_reader) << strerror(errno);

  constexpr uint64_t kLines = 100'000;
  auto collector = make_collector({.dir = dir.path(), .app = "web", .max_buffered_bytes = 64 * 1024});
  ASSERT_TRUE(collector);
  Children children;
  std::vector<LogPipe> pipes;
  spawn_into_pipe(*collector, children, 0, child_output(0, kLines), pipes);
  ASSERT_FALSE(HasFatalFailure());

  // The child gets all its output out and exits while the writer is stuck: lbd kept reading.
  const Drive drove = drive(*collector, pipes, after(60s));
  ASSERT_TRUE(drove.finished) << "the loop stalled behind the log writer";
  EXPECT_TRUE(children.all_exited_cleanly(after(10s)));
  EXPECT_LT(drove.slowest, 200ms) << "on_readable waited on something";
  const uint64_t dropped = collector->dropped_lines();
  EXPECT_GT(dropped, kLines / 2) << "the writer cannot have taken most of it";
  EXPECT_FALSE(collector->take_error().has_value());

  // Now the disk catches up: read the FIFO to its end (the writer closes it when stopped).
  ASSERT_EQ(fcntl(fifo_reader.get(), F_SETFL, 0), 0);
  std::string written;
  std::thread reader([&] {
    char buffer[65536];
    for (ssize_t n; (n = read(fifo_reader.get(), buffer, sizeof(buffer))) != 0;) {
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) break;
      written.append(buffer, static_cast<size_t>(n));
    }
  });
  const uint64_t dropped_before_stop = collector->dropped_lines();
  collector.reset();
  reader.join();
  EXPECT_EQ(dropped_before_stop, dropped) << "nothing new was read, so nothing more can drop";

  std::vector<std::string> records;
  std::istringstream in(written);
  for (std::string line; std::getline(in, line);) records.push_back(line);
  size_t notes = 0;
  uint64_t reported = 0;
  for (const auto& line : records) {
    auto record = parse_record(line);
    if (record && record->stream == "lbd") {
      notes++;
      reported += std::stoull(std::string(record->text.substr(8)));
    }
  }
  EXPECT_GE(notes, 1u);
  EXPECT_EQ(reported, dropped) << "every dropped line is reported once";
  // Every gap in the numbering is exactly bridged by the note that reports it.
  const auto seen = check_in_order(records, "web", {}, /*gaps_bridged_by_notes=*/true);
  EXPECT_EQ(seen.at(0) + dropped, kLines);
}

TEST(LogCollector, LongLinesStderrNotesAndALastLineWithoutNewline) {
  TempDir dir;
  auto collector = make_collector({.dir = dir.path(), .app = "svc", .max_line_bytes = 1024});
  ASSERT_TRUE(collector);
  auto pipes = collector->make_child_pipes(7);
  ASSERT_TRUE(pipes) << pipes.error().message();
  const std::string long_line(2500, 'L');
  const std::string out = "short\n" + long_line + "\nno newline at the end";
  ASSERT_EQ(write(pipes->out_write.get(), out.data(), out.size()), static_cast<ssize_t>(out.size()));
  ASSERT_EQ(write(pipes->err_write.get(), "oops\n", 5), 5);
  pipes->out_write.reset();
  pipes->err_write.reset();
  std::vector<LogPipe> watched;
  watched.push_back(std::move(pipes->out));
  watched.push_back(std::move(pipes->err));
  ASSERT_TRUE(drive(*collector, watched, after(10s)).finished);
  collector->note(7, "exited with status 3");
  EXPECT_EQ(collector->dropped_lines(), 0u);
  collector.reset();

  std::vector<std::pair<std::string, std::string>> out_records, other_records;  // (stream, text)
  for (const auto& line : all_records(dir.path(), "svc")) {
    auto record = parse_record(line);
    ASSERT_TRUE(record) << line;
    EXPECT_EQ(record->worker, 7u);
    auto& list = record->stream.starts_with("out") ? out_records : other_records;
    list.emplace_back(record->stream, record->text);
  }
  EXPECT_EQ(out_records, (std::vector<std::pair<std::string, std::string>>{
                             {"out", "short"},
                             {"out", long_line.substr(0, 1024)},
                             {"out+", long_line.substr(1024, 1024)},
                             {"out+", long_line.substr(2048)},
                             {"out", "no newline at the end"}}));
  EXPECT_EQ(other_records, (std::vector<std::pair<std::string, std::string>>{
                               {"err", "oops"}, {"lbd", "exited with status 3"}}));
}

TEST(LogCollector, FlushKeepsWhatAPipeGivenUpEarlyHeld) {
  TempDir dir;
  auto collector = make_collector({.dir = dir.path(), .app = "svc"});
  ASSERT_TRUE(collector);
  auto pipes = collector->make_child_pipes(2);
  ASSERT_TRUE(pipes) << pipes.error().message();
  // The write end stays open (a grandchild still holds it): no EOF will come.
  const std::string out = "whole\nhalf a li";
  ASSERT_EQ(write(pipes->out_write.get(), out.data(), out.size()), static_cast<ssize_t>(out.size()));
  collector->flush(pipes->out);
  collector.reset();
  const auto records = all_records(dir.path(), "svc");
  ASSERT_EQ(records.size(), 2u);
  EXPECT_TRUE(records[0].ends_with(" svc 2 out whole")) << records[0];
  EXPECT_TRUE(records[1].ends_with(" svc 2 out half a li")) << records[1];
}

TEST(LogCollector, ContinuesAnExistingFileAndCreatesTheDirectory) {
  TempDir dir;
  const std::string nested = dir.path("a/b/c");
  for (const char* text : {"first run", "second run"}) {
    auto collector = make_collector({.dir = nested, .app = "web"});
    ASSERT_TRUE(collector);
    collector->note(0, text);
  }
  const auto records = all_records(nested, "web");
  ASSERT_EQ(records.size(), 2u);
  EXPECT_TRUE(records[0].ends_with(" web 0 lbd first run"));
  EXPECT_TRUE(records[1].ends_with(" web 0 lbd second run"));
  struct stat st {};
  ASSERT_EQ(stat(nested.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
}

TEST(LogCollector, BadOptions) {
  TempDir dir;
  EXPECT_THROW((void)LogCollector::create({.dir = dir.path(), .app = "../etc/passwd"}), ConfigError);
  EXPECT_THROW((void)LogCollector::create({.dir = dir.path(), .app = ""}), ConfigError);
  EXPECT_THROW((void)LogCollector::create({.dir = "", .app = "web"}), ConfigError);
  EXPECT_THROW((void)LogCollector::create({.dir = dir.path(), .app = "web", .max_bytes = 1000}), ConfigError);
  EXPECT_THROW((void)LogCollector::create({.dir = dir.path(), .app = "web", .max_buffered_bytes = 1000}), ConfigError);
  // The kernel's refusals are errors, not exceptions: a file where the directory should be.
  std::ofstream(dir.path("file")) << "x";
  auto under_file = LogCollector::create({.dir = dir.path("file/logs"), .app = "web"});
  ASSERT_FALSE(under_file);
  EXPECT_NE(under_file.error().message().find(dir.path("file")), std::string::npos) << under_file.error().message();
}

}  // namespace
}  // namespace lbd::logs
