// Starting a child process: fork, place the inherited fds at known numbers, pin to a CPU, and
// execute a program. Workers execute the lbd binary on disk with the worker's spec in their
// environment; exec mode (`lbd run`) executes the operator's program with its listeners as fds
// 3.. and systemd's socket-activation variables. Executing (rather than running the worker in
// the forked copy) means a child is always a clean process with only the fds it was given, and a
// reload runs whatever build is on disk now.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "sandbox/confine.h"
#include "worker/worker_spec.h"

namespace lbd {

// Any child: what to execute, with what, where.
struct ProcessLaunch {
  std::string path;                      // the file to execute (absolute, or found on PATH)
  std::vector<std::string> argv;
  std::vector<std::string> env;          // the child's whole environment, "KEY=VALUE"
  std::vector<std::pair<int, int>> fds;  // our fd -> its number in the child; all else closes
  int cpu = -1;                          // pin to this CPU before exec; -1 = no pinning
  std::string cwd;                       // empty: lbd's
  // Exec mode: a process group of its own, so the terminal's ^C reaches lbd, which decides how
  // the program stops (SIGTERM, then SIGKILL after --kill-timeout), and not the program directly.
  bool own_process_group = false;
  // Sent to the child when lbd dies (PR_SET_PDEATHSIG); 0: none. Workers and programs have none:
  // they keep serving without a supervisor until the next one adopts them. `lbd start`'s app
  // supervisors get SIGKILL, so that their own workers stay adoptable.
  int parent_death_signal = 0;
  // Append LISTEN_PID=<the child's pid> to env (systemd's protocol: the variables are meant for
  // the process whose pid they name, so a program's own children ignore them).
  bool listen_pid = false;
  // If exec fails: the child's fd number of a seqpacket socket to send kExecFailed on (errno;
  // worker/channel.h); -1: write "lbd: cannot execute ...: <errno>" to the child's fd 2 instead.
  int exec_failed_fd = -1;
  // Execute this open file (execveat) rather than `path`, which then only names it in messages.
  int exec_fd = -1;
  // Confine the child before exec (sandbox/confine.h): become `run_as` (null: stay as lbd),
  // drop every capability unless `keep_caps`, and install `filter` (null: none). An exec-mode
  // program is confined here; lbd's own worker confines itself once its ring is set up.
  bool confine = false;
  const RunAs* run_as = nullptr;
  bool keep_caps = false;
  const SeccompProgram* filter = nullptr;
};

// Returns the child's pid. If exec fails the child reports it (see exec_failed_fd) and exits
// with status 127.
Result<pid_t> spawn_process(const ProcessLaunch& launch);

struct WorkerLaunch {
  std::string binary;  // the path lbd was started from, for messages
  int binary_fd = -1;  // the file to execute (open_lbd_binary())
  std::string title;   // argv[0] of the worker, what ps shows: "lbd: worker 3"
  int cpu = -1;        // pin to this CPU before exec; -1 = no pinning
  // The supervisor's fds to pass; -1 for none. spawn_worker() renumbers them in the child and
  // writes the child's numbers into the spec it passes.
  int status_fd = -1;
  int slot_table_fd = -1;
  int stats_fd = -1;
  int handoff_fd = -1;
  int handover_in_fd = -1;
  // The supervisor's own end of the status channel, which the worker keeps and never reads: so
  // the channel outlives the supervisor, and the next supervisor can take it back from the worker
  // (pidfd_getfd) with whatever the worker said meanwhile still queued in it.
  int status_escrow_fd = -1;
  std::vector<int> listener_fds;
  WorkerSpec spec;     // everything else the worker needs
};

// An lbd worker. If exec fails, the child reports kExecFailed on its status fd, so
// the supervisor learns why without waiting on it.
// `placed`, if given, receives the spec as the child got it (the child's descriptor numbers).
Result<pid_t> spawn_worker(const WorkerLaunch& launch, WorkerSpec* placed = nullptr);

// The environment lbd was started with, minus the variables lbd sets for its children itself
// (any name in `drop`).
std::vector<std::string> inherited_environment(const std::vector<std::string>& drop);

// lbd's own binary, opened once and executed from the descriptor (execveat) for every worker
// and successor, so that whoever may replace the file at its path, or the folder it is in,
// cannot put other code into a process lbd starts as root (docs/ARCHITECTURE.md, "Privileges").
Result<UniqueFd> open_lbd_binary(const std::string& path);
// Whether lbd may run the open file `fd` (a reload or an upgrade picking up a new build): owned
// by root (or by lbd's own user) and writable by nobody else; otherwise the error says why.
// Checked on the open file, not the path: what passes is what runs.
Result<void> check_trusted_binary(int fd, const std::string& path);

// The absolute path of the running binary, resolved at start-up so later launches execute the
// file now at that path (a new build), not the deleted inode /proc/self/exe may point to.
std::string current_binary_path();

// `program` as execvp would find it: a name with a slash is used as is (a relative one from
// `cwd` when given, where the child will run), otherwise the first executable match on PATH.
// Resolved again for every start, so a reload runs the file on disk now.
Result<std::string> find_program(const std::string& program, const std::string& cwd = {});

// Whether `run_as` may enter `cwd` (when given) and execute `path`, asked of the kernel by a
// child that becomes that user (access(2): every folder on the way, its mode and ACLs), so that
// a program its user cannot run is one clear line when lbd starts or reloads, not a worker that
// exits 127 until lbd gives up on it.
Result<void> check_runnable_as(const RunAs& run_as, const std::string& path, const std::string& cwd);

// What a program's start executes: find_program(), then, when lbd is root and runs it as
// `run_as`, check_runnable_as().
Result<std::string> find_runnable_program(const std::string& program, const std::string& cwd, const RunAs* run_as);

}  // namespace lbd
