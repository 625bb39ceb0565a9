// What one lbd leaves for the next to take its workers over without stopping them
// (docs/ARCHITECTURE.md, section 9): its successor after `lbctl upgrade`, or the lbd started with
// the same arguments after it died (kill -9, the OOM killer, a bug).
//
// The record is a JSON file next to the control socket (/run/lbd/APP.state), rewritten whenever
// what it says changes: the command line, the boot, the listen addresses, the slot manager's
// state, each slot's history, and for each process its pid, its start time and where the
// descriptors a successor needs are. Each such descriptor is named twice: its number in the
// supervisor (a live predecessor hands it over) and in the process itself (each worker keeps the
// supervisor's end of its status channel, each program the read ends of its output pipes and the
// write end of its message pipe, and both their listeners), so that a successor can take it even when the supervisor is dead
// (pidfd_getfd). The steering program's maps are pinned on the BPF filesystem. The record an
// upgrade writes also names the control clients accepted and not yet answered and the admin
// connections, which only the live predecessor holds (ControlServer::waiting_clients,
// AdminServer::held_clients).
//
// A record from another boot, another command line or another version is ignored with one line.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "common/unique_fd.h"

namespace lbd {

inline constexpr int kStateRecordVersion = 1;

// Next to the control socket: /run/lbd/web.sock -> /run/lbd/web.state. Empty without a control
// socket (no record, no takeover).
std::string state_record_path(const std::string& control_path);
// Where the steering maps are pinned for the lbd whose record is at `record_path`.
std::string steering_pin_dir(const std::string& record_path);

// This boot's id (/proc/sys/kernel/random/boot_id): pids and pins mean nothing across boots.
std::string boot_id();
// When `pid` started, in clock ticks since boot (/proc/PID/stat): with the pid, it names a
// process for good (a pid may be reused, not with the same start time).
std::optional<uint64_t> process_start_time(pid_t pid);
// `pid` is the process that started at `start_time`, and has not exited (a zombie has).
bool process_runs(pid_t pid, uint64_t start_time);

// Written whole or not at all (a temporary file, then rename).
Result<void> write_state_record(const std::string& path, const std::string& text);

// Writes the record on a thread of its own: the supervisor's loop must not wait for the disk
// (docs/ARCHITECTURE.md, invariant 5; a VM's disk was seen to stall a rename for half a minute).
// The loop hands over the newest text; versions that came in between are skipped. The thread
// never logs (lbd's logger is not thread-safe): a write's error is kept for the loop to report.
class StateRecordWriter {
 public:
  explicit StateRecordWriter(std::string path);
  ~StateRecordWriter();  // writes what is pending, then stops
  StateRecordWriter(const StateRecordWriter&) = delete;
  StateRecordWriter& operator=(const StateRecordWriter&) = delete;

  // The record as it is now; returns its version.
  uint64_t submit(std::string text);
  // Waits until `version` (or a later one) is written, or `timeout` passes: false then, or if
  // its write failed.
  bool wait_written(uint64_t version, std::chrono::milliseconds timeout);
  // Drops what is pending, waits for a write in progress, and removes the record: nothing is
  // left to take over.
  void remove();
  // The last failed write's error (once), and whether the last write succeeded.
  std::optional<Error> take_error();

 private:
  void run(std::stop_token stop);

  const std::string path_;
  std::mutex mutex_;
  std::condition_variable_any changed_;
  std::string pending_;           // guarded by mutex_
  uint64_t pending_version_ = 0;  // guarded by mutex_; 0: nothing pending
  uint64_t written_version_ = 0;  // guarded by mutex_
  uint64_t failed_version_ = 0;   // guarded by mutex_
  std::optional<Error> error_;    // guarded by mutex_
  uint64_t next_version_ = 1;     // the loop's alone
  std::jthread thread_;           // last: it starts once everything it uses exists
};
// Nothing if there is no file; an error if it is not JSON.
Result<std::optional<nlohmann::json>> read_state_record(const std::string& path);

// A descriptor a successor needs, by its number in the supervisor and in the process that
// holds it (-1: not there), and what it is (device and inode of the open file, from the
// supervisor's copy): a number alone could name another file by the time it is taken (a program
// closes its listener and opens a connection that gets the number), so what is taken is checked.
struct FdRef {
  int supervisor = -1;
  int child = -1;
  uint64_t device = 0;
  uint64_t inode = 0;  // 0: not known, so not taken from the process
};
// The reference to the supervisor's `fd`, kept by the process as `child_fd`.
FdRef fd_ref(int fd, int child_fd);
nlohmann::json to_json(const FdRef& ref);
FdRef fd_ref_from_json(const nlohmann::json& j);

// Takes recorded descriptors: from the predecessor while it lives (an upgrade), or from the
// process that keeps a copy (after the predecessor died).
class FdTaker {
 public:
  // `predecessor`: a pidfd of the lbd that wrote the record, or -1 when it is dead.
  explicit FdTaker(int predecessor) : predecessor_(predecessor) {}
  // `holder`: a pidfd of the process that keeps the child's copy, `holder_pid` its pid. The
  // predecessor's copy first, then the holder's at its recorded number, then wherever the holder
  // keeps that file now (a program may have moved it: Python's socket.fromfd dups it); each is
  // checked to be the recorded file.
  Result<UniqueFd> take(const FdRef& ref, int holder, pid_t holder_pid = 0) const;
  bool from_predecessor() const { return predecessor_ >= 0; }

 private:
  int predecessor_;
};

// pidfd_getfd: a copy of descriptor `fd` of the process `pidfd` refers to, close-on-exec.
Result<UniqueFd> copy_fd_of(int pidfd, int fd);

}  // namespace lbd
