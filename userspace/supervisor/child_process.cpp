#include "supervisor/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace lbd {

namespace {

// The system calls themselves: Debian 12's glibc declares the wrappers in a header that C++
// cannot link against (no extern "C").
int open_pidfd(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }
int send_signal(int pidfd, int signal) { return static_cast<int>(syscall(SYS_pidfd_send_signal, pidfd, signal, nullptr, 0)); }

}  // namespace

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = sigabbrev_np(WTERMSIG(status));
    return "was killed by signal " + std::to_string(WTERMSIG(status)) +
           (name ? std::string(" (SIG") + name + ")" : std::string());
  }
  return "ended (status " + std::to_string(status) + ")";
}

Result<ChildProcess> ChildProcess::own(pid_t pid) {
  UniqueFd pidfd(open_pidfd(pid));
  if (!pidfd) {
    const int err = errno;
    ::kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    return Error::from_errno(err, "pidfd_open for pid " + std::to_string(pid));
  }
  if (fcntl(pidfd.get(), F_SETFD, FD_CLOEXEC) != 0) return Error::from_errno("pidfd close-on-exec");
  return ChildProcess(pid, std::move(pidfd), false);
}

ChildProcess ChildProcess::adopt(pid_t pid, UniqueFd pidfd) { return ChildProcess(pid, std::move(pidfd), true); }

bool ChildProcess::signal(int signal) const {
  if (reaped_ || !pidfd_) return false;
  return send_signal(pidfd_.get(), signal) == 0;
}

void ChildProcess::signal_group(int signal) const {
  if (reaped_) return;
  ::kill(-pid_, signal);
}

void ChildProcess::kill_and_reap(bool group) {
  if (group) signal_group(SIGKILL);
  signal(SIGKILL);
  if (!adopted_ && !reaped_) {
    siginfo_t info{};
    waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &info, WEXITED);
  }
  reaped_ = true;
}

std::optional<bool> ChildProcess::stop_change() {
  if (reaped_ || adopted_ || !pidfd_) return std::nullopt;
  siginfo_t info{};
  // No WEXITED: an exit stays for reap(), which the pidfd calls for.
  if (waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &info, WSTOPPED | WCONTINUED | WNOHANG) != 0 ||
      info.si_pid == 0) {
    return std::nullopt;
  }
  if (info.si_code == CLD_STOPPED) return true;
  if (info.si_code == CLD_CONTINUED) return false;
  return std::nullopt;
}

std::optional<ChildProcess::Exit> ChildProcess::reap() {
  if (reaped_) return std::nullopt;
  if (adopted_) {
    pollfd exited{pidfd_.get(), POLLIN, 0};
    if (poll(&exited, 1, 0) != 1) return std::nullopt;
    reaped_ = true;
    return Exit{"exited (started by an earlier lbd: its exit status is not ours to read)", std::nullopt, 0};
  }
  siginfo_t info{};
  rusage usage{};  // the child's CPU time, all of it: /proc forgets it once it is reaped
  // The raw system call: glibc's waitid has no rusage argument, the kernel's does.
  if (syscall(SYS_waitid, P_PIDFD, pidfd_.get(), &info, WEXITED | WNOHANG, &usage) != 0 || info.si_pid == 0) {
    return std::nullopt;
  }
  reaped_ = true;
  // The wait status wait() would have given: exit code in the second byte, or the signal in the
  // low seven bits (and 0x80 for a core dump).
  int status = 0;
  if (info.si_code == CLD_EXITED) {
    status = (info.si_status & 0xff) << 8;
  } else {
    status = (info.si_status & 0x7f) | (info.si_code == CLD_DUMPED ? 0x80 : 0);
  }
  const double cpu = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                     static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  return Exit{describe_exit(status), status, cpu};
}

}  // namespace lbd
