// One child process, owned through a pidfd (the one owner type for a process, as UniqueFd is for
// a descriptor). The pidfd is what the poller watches (it becomes readable when the process
// exits), what signals go through (pidfd_send_signal cannot reach a recycled pid), and what it is
// reaped with (waitid(P_PIDFD)). So a process is never signalled after it has been reaped.
//
// A process lbd did not start itself (one a predecessor started: after `lbctl upgrade`, or after
// the supervisor before us died) is *adopted*: its exit is seen through the pidfd, but only its
// parent can reap it, so how it ended is not known.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "common/result.h"
#include "common/unique_fd.h"

namespace lbd {

class ChildProcess {
 public:
  // Takes ownership of `pid`, a child of ours that has not been reaped. If no pidfd can be
  // opened for it, it is killed and reaped, and the error says why.
  static Result<ChildProcess> own(pid_t pid);
  // A process that is not our child, known by `pidfd` (its parent's, passed to us).
  static ChildProcess adopt(pid_t pid, UniqueFd pidfd);

  ChildProcess(ChildProcess&&) noexcept = default;
  ChildProcess& operator=(ChildProcess&&) noexcept = default;

  pid_t pid() const { return pid_; }
  int pidfd() const { return pidfd_.get(); }
  bool adopted() const { return adopted_; }
  bool reaped() const { return reaped_; }

  // Sends `signal`; false if the process has exited (or was reaped).
  bool signal(int signal) const;
  // Sends `signal` to the process group it leads (exec mode: what a program forked goes too).
  // Only until it is reaped: while it exists, even as a zombie, no other group can have its id.
  // (An adopted process's parent reaps it: only while it surely runs.)
  void signal_group(int signal) const;

  struct Exit {
    std::string description;        // "exited with status 0", "was killed by signal 9 (SIGKILL)"
    std::optional<int> wait_status;  // as wait() gives it; none when adopted
    double cpu_seconds = 0;          // user + system over its life (0 when adopted: not ours to reap)
    bool exited_zero() const { return wait_status && *wait_status == 0; }
  };
  // For a start that failed half-way: SIGKILL (to its group too, if `group`) and wait for it.
  void kill_and_reap(bool group);

  // Once its pidfd is readable: reaps it (our child) and says how it ended. Nothing while it
  // still runs.
  std::optional<Exit> reap();

  // Whether our child was stopped (true) or continued (false) since the last call: the kernel
  // tells a parent both, with SIGCHLD. None if neither, or if it is not our child (adopted).
  std::optional<bool> stop_change();

 private:
  ChildProcess(pid_t pid, UniqueFd pidfd, bool adopted) : pid_(pid), pidfd_(std::move(pidfd)), adopted_(adopted) {}

  pid_t pid_ = 0;
  UniqueFd pidfd_;
  bool adopted_ = false;
  bool reaped_ = false;
};

// "exited with status 1", "was killed by signal 9 (SIGKILL)": a wait status as the log says it.
std::string describe_exit(int wait_status);

}  // namespace lbd
