// Runs lbd (or a service that embeds it, such as examples/hello_service) as a real process for
// an integration test, and watches it the way an operator would: through its log.
//
//   LbdProcess lbd({"--mode", "reuseport", "--workers", "2", "--listen", "127.0.0.1:0"});
//   auto ready = lbd.wait_ready(after(10s));
//   ASSERT_TRUE(ready) << lbd.log();
//   fetch(ready->address(), http_get("/"), after(2s));
//
// stdout and stderr go through one pipe that a thread reads line by line, so waits are
// "until this line appears, or the deadline". lbd runs in its own process group and dies with
// the test (PR_SET_PDEATHSIG); the destructor stops it (SIGTERM to the supervisor, the one an
// upgrade handed over to if there was one) and waits for it a while, then kills the group, the
// supervisor and every worker pid it saw, and reaps them all (the test process makes itself a child subreaper, so workers
// orphaned by the kill become its children). If the current test has failed by then, the destructor
// prints the captured log, so a CI failure always comes with lbd's side of the story.
// Set LBD_TEST_ECHO=1 to also see the log live on stderr.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "net/address.h"
#include "support/deadline.h"
#include "support/temp_dir.h"

namespace lbd::test {

// How a process ended (or that it has not).
struct ExitStatus {
  enum class Kind { kRunning, kExited, kSignaled };
  Kind kind = Kind::kRunning;
  int value = 0;  // exit code or signal number

  static ExitStatus running() { return {}; }
  static ExitStatus exited(int code) { return {Kind::kExited, code}; }
  static ExitStatus signaled(int sig) { return {Kind::kSignaled, sig}; }
  static ExitStatus from_wait_status(int status);
  bool operator==(const ExitStatus&) const = default;
  // "exited with status 0", "killed by SIGKILL", "still running".
  std::string to_string() const;
};
std::ostream& operator<<(std::ostream& out, const ExitStatus& status);

// What lbd's "ready: N workers serving A, B (mode M, policy P)" line says.
struct Ready {
  unsigned workers = 0;
  std::vector<net::Address> addresses;  // with the real ports
  std::string mode;
  std::string policy;

  const net::Address& address() const { return addresses.at(0); }
};

struct LogMatch {
  size_t line = 0;                  // index into the captured lines
  std::vector<std::string> groups;  // [0] the whole match, then the regex's groups
};

class LbdProcess {
 public:
  struct Options {
    std::string binary = LBD_BINARY_PATH;
    std::vector<std::string> args;
    // Run as this uid/gid (with no supplementary groups) instead of the test's own.
    std::optional<std::pair<uid_t, gid_t>> run_as;
  };

  // lbd with these flags.
  explicit LbdProcess(std::vector<std::string> args);
  explicit LbdProcess(Options options);
  ~LbdProcess();
  LbdProcess(const LbdProcess&) = delete;
  LbdProcess& operator=(const LbdProcess&) = delete;

  pid_t pid() const { return pid_; }

  // Waits for the ready line and parses it; empty if lbd exits or the deadline passes first.
  std::optional<Ready> wait_ready(Deadline deadline);

  // The first line at or after `from_line` that matches `regex` (POSIX extended: write [0-9]
  // for a digit; searched anywhere in the line). Empty if the deadline passes or the output ends first.
  std::optional<LogMatch> wait_for_log(const std::string& regex, Deadline deadline,
                                       size_t from_line = 0);
  // Lines captured so far: pass it to wait_for_log as `from_line` to see only what comes next.
  size_t log_lines() const;
  // Captured lines that match `regex`.
  size_t count_log(const std::string& regex) const;
  // The whole captured output, for failure messages.
  std::string log() const;
  std::vector<std::string> lines() const;

  // Worker `slot`'s pid from its latest "worker N ready" line; 0 if it has not been ready.
  pid_t worker_pid(unsigned slot) const;
  // Waits for "worker N ready" with a pid other than `old_pid`; returns it, or 0 at the deadline.
  pid_t wait_for_worker_restart(unsigned slot, pid_t old_pid, Deadline deadline);

  // Sends `sig` to the supervisor only (workers are the supervisor's business).
  void signal(int sig);
  // Reaps the supervisor; kRunning if it is still running at the deadline.
  ExitStatus wait_exit(Deadline deadline);

 private:
  void read_output();
  void on_line(std::string line);
  void stop_gracefully();
  void kill_everything();

  // How long the destructor lets lbd stop by itself (SIGTERM) before it kills what is left.
  static constexpr std::chrono::seconds kGracefulStop{5};

  std::optional<TempDir> control_dir_;  // before the rest: removed once lbd is gone
  Options options_;
  pid_t pid_ = -1;
  UniqueFd pidfd_;
  UniqueFd output_;    // read end of the stdout+stderr pipe
  UniqueFd stop_reader_;  // eventfd: tells the reader thread to give up on the pipe
  std::optional<ExitStatus> exit_;
  bool killed_by_test_ = false;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::string> lines_;
  std::map<unsigned, pid_t> worker_pids_;  // latest ready pid per slot
  std::set<pid_t> seen_pids_;              // every worker pid ever logged
  pid_t supervisor_ = 0;                   // the supervisor after an upgrade (its log says so)
  bool output_ended_ = false;
  bool echo_ = false;
  std::thread reader_;
};

// --- processes --------------------------------------------------------------------------------

// The command line as ps shows it: arguments joined by spaces ("" if the process is gone).
std::string process_command_line(pid_t pid);
// Resident memory (VmRSS) in bytes; 0 if the process is gone.
size_t process_rss_bytes(pid_t pid);
// The CPUs the process may run on.
std::vector<int> process_cpus(pid_t pid);

// The state letter in /proc/<pid>/stat ('R', 'S', 'T' stopped, 'Z' zombie ...), or 0 if gone.
char process_state(pid_t pid);
// SIGSTOP, then waits until the kernel reports the process stopped. False at the deadline.
bool stop_process(pid_t pid, Deadline deadline);

// Takes a copy of the process's listening socket bound to `port` (pidfd_getfd; needs ptrace
// rights over it, i.e. root). Scans its fds: the fd number is the worker's business.
UniqueFd take_listener(pid_t pid, uint16_t port);

}  // namespace lbd::test
