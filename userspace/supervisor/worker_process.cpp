#include "supervisor/worker_process.h"

#include "steer_abi.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

extern char** environ;

namespace lbd {

namespace {

constexpr size_t kMaxPassedFds = 5 + LBD_MAX_GROUPS;

// In the child, after fork: only async-signal-safe calls from here to execve.
[[noreturn]] void exec_child(const WorkerLaunch& launch, const std::vector<std::pair<int, int>>& moves,
                             int cpu, pid_t parent, char* const* argv, char* const* envp,
                             int child_status_fd) {
  // Lift every fd above all target numbers first, so that placing one cannot clobber another.
  int floor = 3;
  for (const auto& [from, to] : moves) floor = std::max({floor, from + 1, to + 1});
  int lifted[kMaxPassedFds];
  for (size_t i = 0; i < moves.size(); i++) {
    lifted[i] = fcntl(moves[i].first, F_DUPFD_CLOEXEC, floor);
    if (lifted[i] < 0) _exit(126);
  }
  for (size_t i = 0; i < moves.size(); i++) {
    if (dup2(lifted[i], moves[i].second) < 0) _exit(126);  // dup2 clears close-on-exec
  }

  if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof(set), &set);
  }
  // If the supervisor dies, workers drain and exit rather than serve unsupervised.
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) _exit(0);

  // The supervisor blocks signals for its signalfd; a worker starts with none blocked.
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  signal(SIGPIPE, SIG_DFL);

  execve(launch.binary.c_str(), argv, envp);
  int err = errno;
  char message[32];
  int n = snprintf(message, sizeof(message), "EXEC_FAILED=%d", err);
  if (child_status_fd >= 0) send(child_status_fd, message, static_cast<size_t>(n), MSG_NOSIGNAL);
  _exit(127);
}

}  // namespace

std::string current_binary_path() {
  char path[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return {};
  return std::string(path, static_cast<size_t>(n));
}

Result<pid_t> spawn_worker(const WorkerLaunch& launch) {
  // The child's fd numbers: 3 status, 4 slot table, 5 handoff, 6 handover inbox, 7 stats block,
  // 8.. listeners.
  std::vector<std::pair<int, int>> moves;
  WorkerSpec spec = launch.spec;
  int next = 3;
  auto place = [&](int parent_fd) {
    if (parent_fd < 0) {
      next++;
      return -1;
    }
    moves.emplace_back(parent_fd, next);
    return next++;
  };
  spec.status_fd = place(launch.status_fd);
  spec.slot_table_fd = place(launch.slot_table_fd);
  spec.handoff_fd = place(launch.handoff_fd);
  spec.handover_in_fd = place(launch.handover_in_fd);
  spec.stats_fd = place(launch.stats_fd);
  spec.listener_fds.clear();
  for (int fd : launch.listener_fds) spec.listener_fds.push_back(place(fd));
  if (moves.size() > kMaxPassedFds) return Error::from_errno(E2BIG, "too many fds for a worker");

  // Everything the child needs is built before fork: after it, no allocation.
  std::string spec_env = std::string(kWorkerSpecEnv) + "=" + encode_worker_spec(spec);
  std::vector<std::string> env_storage;
  for (char** e = environ; *e; e++) {
    if (std::strncmp(*e, kWorkerSpecEnv, std::strlen(kWorkerSpecEnv)) == 0) continue;
    env_storage.emplace_back(*e);
  }
  env_storage.push_back(spec_env);
  std::vector<char*> envp;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string title = launch.title;
  char* argv[] = {title.data(), nullptr};

  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return Error::from_errno("fork worker");
  if (pid == 0) exec_child(launch, moves, launch.cpu, parent, argv, envp.data(), launch.status_fd);
  return pid;
}

}  // namespace lbd
