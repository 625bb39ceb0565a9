#include "supervisor/launch.h"

#include "worker/channel.h"

#include "steer_abi.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

extern char** environ;

namespace lbd {

namespace {

constexpr size_t kMaxPassedFds = 9 + LBD_MAX_GROUPS;
constexpr char kListenPid[] = "LISTEN_PID=";
constexpr size_t kListenPidDigits = 20;

// Async-signal-safe: the decimal digits of `value` into `out` (NUL-terminated).
void format_decimal(unsigned long value, char* out) {
  char digits[24];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value > 0);
  for (int i = 0; i < n; i++) out[i] = digits[n - 1 - i];
  out[n] = '\0';
}

void write_text(int fd, const char* text) {
  ssize_t ignored = write(fd, text, strlen(text));
  (void)ignored;
}

// "lbd: cannot <what> <subject>: ENOENT" on the child's stderr (the app's log in exec mode).
// strerrorname_np: a constant string, no locale lookup (strerror may take locks).
void report_failure(const char* what, const char* subject, int err) {
  const char* name = strerrorname_np(err);
  for (const char* part : {"lbd: cannot ", what, " ", subject, ": ", name ? name : "error", "\n"}) write_text(2, part);
}

// In the child, after fork: only async-signal-safe calls from here to execve (the supervisor
// may have other threads, e.g. the log writer).
[[noreturn]] void exec_child(const ProcessLaunch& launch, pid_t parent, char* const* argv,
                             char* const* envp, char* listen_pid_value) {
  // Lift every fd above all target numbers first, so that placing one cannot clobber another.
  int floor = 3;
  for (const auto& [from, to] : launch.fds) floor = std::max({floor, from + 1, to + 1});
  int lifted[kMaxPassedFds];
  for (size_t i = 0; i < launch.fds.size(); i++) {
    lifted[i] = fcntl(launch.fds[i].first, F_DUPFD_CLOEXEC, floor);
    if (lifted[i] < 0) _exit(126);
  }
  // The file to execute, lifted too: placing the fds may reuse its number.
  const int exec_fd = launch.exec_fd >= 0 ? fcntl(launch.exec_fd, F_DUPFD_CLOEXEC, floor) : -1;
  if (launch.exec_fd >= 0 && exec_fd < 0) _exit(126);
  for (size_t i = 0; i < launch.fds.size(); i++) {
    if (dup2(lifted[i], launch.fds[i].second) < 0) _exit(126);  // dup2 clears close-on-exec
  }

  if (launch.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(launch.cpu, &set);
    sched_setaffinity(0, sizeof(set), &set);
  }
  if (launch.own_process_group) setpgid(0, 0);
  if (launch.parent_death_signal) {
    prctl(PR_SET_PDEATHSIG, launch.parent_death_signal);
    if (getppid() != parent) _exit(0);  // it died before the prctl
  }

  // The supervisor blocks signals for its signalfd and ignores SIGPIPE; a child starts with the
  // defaults (ignored signals would survive exec).
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  signal(SIGPIPE, SIG_DFL);

  if (launch.confine) {
    if (ConfineFailure failed = confine(launch.run_as, launch.keep_caps, launch.filter)) {
      report_failure("confine the program:", failed.step, failed.err);
      _exit(126);
    }
  }

  if (listen_pid_value) format_decimal(static_cast<unsigned long>(getpid()), listen_pid_value);
  if (!launch.cwd.empty() && chdir(launch.cwd.c_str()) != 0) {
    report_failure("change directory to", launch.cwd.c_str(), errno);
    _exit(127);
  }

  if (exec_fd >= 0) {
    execveat(exec_fd, "", argv, envp, AT_EMPTY_PATH);
    // A script ("#!") is run by its interpreter from /dev/fd/N, which close-on-exec has closed by
    // then (ENOENT): only for one, the descriptor stays open across the exec.
    if (errno == ENOENT && fcntl(exec_fd, F_SETFD, 0) == 0) execveat(exec_fd, "", argv, envp, AT_EMPTY_PATH);
  } else {
    execve(launch.path.c_str(), argv, envp);
  }
  const int err = errno;
  if (launch.exec_failed_fd >= 0) {
    const ChannelRecord record =
        encode_channel_message({.command = ChannelCommand::kExecFailed, .value = static_cast<uint32_t>(err)});
    send(launch.exec_failed_fd, &record, sizeof(record), MSG_NOSIGNAL);
  } else {
    report_failure("execute", launch.path.c_str(), err);
  }
  _exit(127);
}

}  // namespace

Result<pid_t> spawn_process(const ProcessLaunch& launch) {
  if (launch.fds.size() > kMaxPassedFds) return Error::from_errno(E2BIG, "too many fds for a child");
  // Everything the child needs is built before fork: after it, no allocation.
  std::vector<std::string> env_storage = launch.env;
  if (launch.listen_pid) {
    env_storage.emplace_back(kListenPid);
    env_storage.back().append(kListenPidDigits, '0');  // the child writes its pid over these
  }
  std::vector<char*> envp;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);
  char* listen_pid_value = launch.listen_pid ? env_storage.back().data() + strlen(kListenPid) : nullptr;
  std::vector<std::string> argv_storage = launch.argv;
  std::vector<char*> argv;
  for (auto& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);

  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return Error::from_errno("fork");
  if (pid == 0) exec_child(launch, parent, argv.data(), envp.data(), listen_pid_value);
  if (launch.own_process_group) setpgid(pid, pid);  // also here: no race with a kill(-pid) soon after
  return pid;
}

std::vector<std::string> inherited_environment(const std::vector<std::string>& drop) {
  std::vector<std::string> env;
  for (char** e = environ; *e; e++) {
    std::string_view entry(*e);
    const std::string_view name = entry.substr(0, entry.find('='));
    if (std::find(drop.begin(), drop.end(), name) != drop.end()) continue;
    env.emplace_back(entry);
  }
  return env;
}

Result<pid_t> spawn_worker(const WorkerLaunch& launch, WorkerSpec* placed) {
  // The child's fd numbers: 3 status, 4 slot table, 5 handoff, 6 handover inbox, 7 stats block,
  // 8 the supervisor's end of the status channel (kept, never read), 9.. listeners.
  ProcessLaunch process;
  WorkerSpec spec = launch.spec;
  int next = 3;
  auto place = [&](int parent_fd) {
    if (parent_fd < 0) {
      next++;
      return -1;
    }
    process.fds.emplace_back(parent_fd, next);
    return next++;
  };
  spec.status_fd = place(launch.status_fd);
  spec.slot_table_fd = place(launch.slot_table_fd);
  spec.handoff_fd = place(launch.handoff_fd);
  spec.handover_in_fd = place(launch.handover_in_fd);
  spec.stats_fd = place(launch.stats_fd);
  spec.status_escrow_fd = place(launch.status_escrow_fd);
  spec.listener_fds.clear();
  for (int fd : launch.listener_fds) spec.listener_fds.push_back(place(fd));

  process.path = launch.binary;
  process.exec_fd = launch.binary_fd;
  process.argv = {launch.title};
  process.env = inherited_environment({kWorkerSpecEnv});
  process.env.push_back(std::string(kWorkerSpecEnv) + "=" + encode_worker_spec(spec));
  process.cpu = launch.cpu;
  process.exec_failed_fd = spec.status_fd;
  if (placed) *placed = spec;
  return spawn_process(process);
}

Result<UniqueFd> open_lbd_binary(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Error::from_errno("open " + path);
  struct stat st{};
  if (fstat(fd.get(), &st) != 0) return Error::from_errno("fstat " + path);
  if (!S_ISREG(st.st_mode)) return Error::from_errno(EACCES, path + " is not a regular file");
  return fd;
}

Result<void> check_trusted_binary(int fd, const std::string& path) {
  struct stat st{};
  if (fstat(fd, &st) != 0) return Error::from_errno("fstat " + path);
  if (st.st_uid != 0 && st.st_uid != geteuid()) {
    return Error::invalid(path + " is owned by uid " + std::to_string(st.st_uid) +
                          ", not root: lbd will not run it (chown root it, if it is yours)");
  }
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    return Error::invalid(path + " is writable by " + ((st.st_mode & S_IWOTH) ? "every user" : "its group") +
                          ": lbd will not run it (chmod go-w it)");
  }
  return {};
}

std::string current_binary_path() {
  char path[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return {};
  return std::string(path, static_cast<size_t>(n));
}

Result<std::string> find_program(const std::string& program, const std::string& cwd) {
  auto executable = [](const std::string& path) {
    struct stat st{};
    return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
  };
  if (program.empty()) return Error::from_errno(ENOENT, "no program given");
  if (program.find('/') != std::string::npos) {
    // Absolute, so that the child's chdir(cwd) before exec cannot change what it names.
    std::string path = program[0] != '/' && !cwd.empty() ? cwd + "/" + program : program;
    if (path[0] != '/') {
      char here[PATH_MAX];
      if (getcwd(here, sizeof(here))) path = std::string(here) + "/" + path;
    }
    if (executable(path)) return path;
    const int err = access(path.c_str(), F_OK) == 0 ? EACCES : ENOENT;
    return Error::from_errno(err, "cannot execute " + path);
  }
  const char* path_env = getenv("PATH");
  std::string_view dirs = path_env && *path_env ? path_env : "/usr/local/bin:/usr/bin:/bin";
  while (true) {
    const size_t colon = dirs.find(':');
    const std::string_view dir = dirs.substr(0, colon);
    const std::string candidate = (dir.empty() ? std::string(".") : std::string(dir)) + "/" + program;
    if (executable(candidate)) return candidate;
    if (colon == std::string_view::npos) break;
    dirs.remove_prefix(colon + 1);
  }
  return Error::from_errno(ENOENT, "cannot execute " + program + " (not found on PATH)");
}

Result<std::string> find_runnable_program(const std::string& program, const std::string& cwd, const RunAs* run_as) {
  auto path = find_program(program, cwd);
  if (!path || !run_as || geteuid() != 0) return path;
  if (auto runnable = check_runnable_as(*run_as, *path, cwd); !runnable) return runnable.error();
  return path;
}

Result<void> check_runnable_as(const RunAs& run_as, const std::string& path, const std::string& cwd) {
  // What the child found: which step failed (0: none) and its errno.
  struct Verdict {
    int step = 0;
    int err = 0;
  };
  enum Step { kBecomeUser = 1, kEnterCwd, kExecute };
  int ends[2];
  if (pipe2(ends, O_CLOEXEC) != 0) return Error::from_errno("pipe");
  UniqueFd read_end(ends[0]);
  UniqueFd write_end(ends[1]);
  const pid_t pid = fork();
  if (pid < 0) return Error::from_errno("fork");
  if (pid == 0) {
    // The child only asks: it never executes anything. Async-signal-safe calls only.
    Verdict v;
    if (syscall(SYS_setgroups, run_as.groups.size(), run_as.groups.data()) != 0 ||
        syscall(SYS_setresgid, run_as.gid, run_as.gid, run_as.gid) != 0 ||
        syscall(SYS_setresuid, run_as.uid, run_as.uid, run_as.uid) != 0) {
      v = {kBecomeUser, errno};
    } else if (!cwd.empty() && access(cwd.c_str(), X_OK) != 0) {
      v = {kEnterCwd, errno};
    } else if (access(path.c_str(), X_OK) != 0) {
      v = {kExecute, errno};
    }
    ssize_t ignored = write(write_end.get(), &v, sizeof(v));
    (void)ignored;
    _exit(0);
  }
  write_end.reset();
  Verdict v;
  ssize_t n;
  do {
    n = read(read_end.get(), &v, sizeof(v));
  } while (n < 0 && errno == EINTR);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (n != static_cast<ssize_t>(sizeof(v))) return Error::from_errno(EIO, "check what " + run_as.user + " may run");
  switch (v.step) {
    case kBecomeUser:
      return Error::from_errno(v.err, "check what " + run_as.describe() + " may run: cannot become that user");
    case kEnterCwd:
      return Error::from_errno(v.err, "--cwd " + cwd + ": " + run_as.user + " cannot enter it");
    case kExecute:
      return Error::from_errno(v.err, "cannot execute " + path + " as " + run_as.user +
                                          (v.err == EACCES ? " (the file, or a folder on its path, does not let "
                                                             "that user in)"
                                                           : ""));
    default:
      return {};
  }
}

}  // namespace lbd
