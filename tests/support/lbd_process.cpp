#include "support/lbd_process.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <regex.h>
#include <sstream>
#include <stdexcept>

#include "net/listener.h"

namespace lbd::test {

namespace {

// Debian 12's <sys/pidfd.h> lacks extern "C", so call the kernel directly.
int pidfd_open(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }
int pidfd_getfd(int pidfd, int fd) { return static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, fd, 0)); }

// "[lbd] worker 2 ready: pid 1234, cpu 0"; an exec-mode app says "[lbd web] ..."
const char kWorkerReady[] = R"(\[lbd[^]]*\] worker ([0-9]+) ready: pid ([0-9]+))";
// "[lbd] worker 2 (pid 1234) crashed: ..." and other lines naming a worker's pid
const char kWorkerPid[] = R"(\[lbd[^]]*\] worker ([0-9]+) \(pid ([0-9]+)\))";
const char kReadyLine[] = R"(\[lbd[^]]*\] ready: ([0-9]+) workers serving (.+) \(mode ([^ ]+), policy ([^ ]+)\)$)";

// A POSIX extended regular expression (<regex.h>: small, and quiet under the sanitizers, unlike
// std::regex with GCC 12).
class Pattern {
 public:
  explicit Pattern(const std::string& text) {
    if (int err = regcomp(&re_, text.c_str(), REG_EXTENDED); err != 0) {
      char message[256];
      regerror(err, &re_, message, sizeof(message));
      ADD_FAILURE() << "bad log pattern '" << text << "': " << message;
      valid_ = false;
    }
  }
  ~Pattern() {
    if (valid_) regfree(&re_);
  }
  Pattern(const Pattern&) = delete;
  Pattern& operator=(const Pattern&) = delete;

  // The whole match and each group, or empty if `line` does not match.
  std::optional<std::vector<std::string>> search(const std::string& line) const {
    if (!valid_) return std::nullopt;
    regmatch_t m[10];
    if (regexec(&re_, line.c_str(), 10, m, 0) != 0) return std::nullopt;
    std::vector<std::string> groups;
    for (size_t i = 0; i <= re_.re_nsub && i < 10; i++) {
      groups.push_back(m[i].rm_so < 0 ? std::string()
                                      : line.substr(static_cast<size_t>(m[i].rm_so),
                                                    static_cast<size_t>(m[i].rm_eo - m[i].rm_so)));
    }
    return groups;
  }

 private:
  regex_t re_{};
  bool valid_ = true;
};

std::vector<std::string> split_addresses(const std::string& text) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at <= text.size()) {
    size_t comma = text.find(", ", at);
    out.push_back(text.substr(at, comma == std::string::npos ? std::string::npos : comma - at));
    if (comma == std::string::npos) break;
    at = comma + 2;
  }
  return out;
}

}  // namespace

// --- ExitStatus -------------------------------------------------------------------------------

ExitStatus ExitStatus::from_wait_status(int status) {
  if (WIFEXITED(status)) return exited(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return signaled(WTERMSIG(status));
  return running();
}

std::string ExitStatus::to_string() const {
  switch (kind) {
    case Kind::kRunning: return "still running";
    case Kind::kExited: return "exited with status " + std::to_string(value);
    case Kind::kSignaled: {
      const char* name = sigabbrev_np(value);
      return std::string("killed by ") + (name ? std::string("SIG") + name : std::to_string(value));
    }
  }
  return "?";
}

std::ostream& operator<<(std::ostream& out, const ExitStatus& status) {
  return out << status.to_string();
}

// --- LbdProcess -------------------------------------------------------------------------------

LbdProcess::LbdProcess(std::vector<std::string> args) : LbdProcess(Options{LBD_BINARY_PATH, std::move(args), {}}) {}

LbdProcess::LbdProcess(Options options) : options_(std::move(options)) {
  // lbd's own mode (flags first, not a subcommand) gets a control socket in a directory of its
  // own unless the test names one: the default, /run/lbd/lbd.sock as root, is one per machine,
  // and ctest runs tests side by side. (As another user, lbd could not create it there.)
  const auto& args = options_.args;
  const bool own_mode = !args.empty() && args[0].starts_with("-") &&
                        (options_.binary == LBD_BINARY_PATH || options_.binary == HELLO_SERVICE_PATH);
  if (own_mode && !options_.run_as && std::find(args.begin(), args.end(), "--control") == args.end()) {
    control_dir_.emplace();
    options_.args.push_back("--control");
    options_.args.push_back(control_dir_->path("lbd.sock"));
  }
  // Workers whose supervisor dies become our children, not init's, so the destructor can reap
  // them: a test leaves no process behind.
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  const char* echo = getenv("LBD_TEST_ECHO");
  echo_ = echo && *echo && strcmp(echo, "0") != 0;

  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2: " + std::string(strerror(errno)));
  output_.reset(pipe_fds[0]);
  UniqueFd write_end(pipe_fds[1]);
  stop_reader_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));

  // Everything the child touches is prepared before fork: after it, only async-signal-safe calls.
  std::vector<std::string> argv_storage;
  argv_storage.push_back(options_.binary);
  for (const auto& a : options_.args) argv_storage.push_back(a);
  std::vector<char*> argv;
  for (auto& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const bool drop = options_.run_as.has_value();
  const uid_t uid = drop ? options_.run_as->first : 0;
  const gid_t gid = drop ? options_.run_as->second : 0;

  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork: " + std::string(strerror(errno)));
  if (pid_ == 0) {
    int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(write_end.get(), 1) < 0 ||
        dup2(write_end.get(), 2) < 0) {
      _exit(126);
    }
    setpgid(0, 0);  // its own group: the destructor kills lbd and its workers together
    if (drop && (setgroups(0, nullptr) != 0 || setgid(gid) != 0 || setuid(uid) != 0)) {
      static const char kMessage[] = "lbd test: cannot drop privileges\n";
      (void)!write(2, kMessage, sizeof(kMessage) - 1);
      _exit(126);
    }
    // After the uid change, which clears it: lbd dies with the test, its workers with lbd.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(126);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    execv(argv[0], argv.data());
    static const char kMessage[] = "lbd test: cannot execute the binary\n";
    (void)!write(2, kMessage, sizeof(kMessage) - 1);
    _exit(127);
  }
  setpgid(pid_, pid_);  // also from here, so the group exists before either side runs on
  pidfd_.reset(pidfd_open(pid_));
  write_end.reset();
  reader_ = std::thread([this] { read_output(); });
}

LbdProcess::~LbdProcess() {
  kill_everything();
  if (::testing::Test::HasFailure()) {
    std::cerr << "----- log of " << options_.binary << " (pid " << pid_ << ", "
              << (killed_by_test_ ? std::string("killed by the test") : exit_->to_string()) << ") -----\n"
              << log() << "----- end of log -----\n";
  }
}

void LbdProcess::stop_gracefully() {
  pid_t supervisor = 0;
  {
    std::lock_guard lock(mutex_);
    supervisor = supervisor_ ? supervisor_ : (exit_ ? 0 : pid_);
  }
  // Only a process still in lbd's group is still ours (pids are reused).
  if (supervisor <= 0 || pid_ <= 0 || getpgid(supervisor) != pid_) return;
  UniqueFd supervisor_pidfd(static_cast<int>(syscall(SYS_pidfd_open, supervisor, 0)));
  // A worker a test left stopped (SIGSTOP) could not stop by itself: the group goes on first.
  kill(-pid_, SIGCONT);
  if (!supervisor_pidfd || kill(supervisor, SIGTERM) != 0) return;
  pollfd exited{supervisor_pidfd.get(), POLLIN, 0};
  if (poll(&exited, 1, static_cast<int>(std::chrono::milliseconds(kGracefulStop).count())) == 0) {
    std::cerr << "lbd test: " << options_.binary << " (pid " << supervisor << ") still running "
              << kGracefulStop.count() << " s after SIGTERM; killing it\n";
  }
  int status = 0;
  if (supervisor == pid_ && waitpid(pid_, &status, WNOHANG) == pid_) {
    std::lock_guard lock(mutex_);
    exit_ = ExitStatus::from_wait_status(status);
  }
}

void LbdProcess::kill_everything() {
  // A graceful stop first: lbd takes its own way out (its state record and steering pins go,
  // and under the sanitizers its leak check runs); what is still there afterwards is killed.
  stop_gracefully();
  if (pid_ > 0 && !exit_) {
    // The group is ours while its leader is unreaped, so this cannot hit anyone else.
    killed_by_test_ = true;
    kill(-pid_, SIGKILL);
    kill(pid_, SIGKILL);
  }
  std::set<pid_t> workers;
  {
    std::lock_guard lock(mutex_);
    workers = seen_pids_;
  }
  for (pid_t worker : workers) {
    // Only a pid still in lbd's process group is still ours (pids are reused).
    if (getpgid(worker) == pid_) kill(worker, SIGKILL);
  }
  if (pid_ > 0 && !exit_) {
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    exit_ = ExitStatus::from_wait_status(status);
  }
  if (pid_ > 0) {
    kill(-pid_, SIGKILL);  // stragglers of a supervisor that exited by itself
    // Workers orphaned by the kill were handed to us (we are a child subreaper): reap them.
    const Deadline deadline = after(2s);
    int status = 0;
    while (true) {
      pid_t reaped = waitpid(-pid_, &status, WNOHANG);
      if (reaped < 0 && errno != EINTR) break;  // ECHILD: none left
      if (reaped == 0) {
        if (Clock::now() >= deadline) break;
        std::this_thread::sleep_for(1ms);
      }
    }
  }
  if (reader_.joinable()) {
    {
      // The pipe ends when the last worker holding it is gone: normally at once.
      std::unique_lock lock(mutex_);
      changed_.wait_until(lock, after(2s), [&] { return output_ended_; });
    }
    uint64_t one = 1;
    (void)!write(stop_reader_.get(), &one, sizeof(one));
    reader_.join();
  }
}

void LbdProcess::read_output() {
  std::string partial;
  char chunk[8192];
  while (true) {
    pollfd fds[2] = {{output_.get(), POLLIN, 0}, {stop_reader_.get(), POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents) break;
    ssize_t n = read(output_.get(), chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    partial.append(chunk, static_cast<size_t>(n));
    size_t newline;
    while ((newline = partial.find('\n')) != std::string::npos) {
      on_line(partial.substr(0, newline));
      partial.erase(0, newline + 1);
    }
  }
  if (!partial.empty()) on_line(std::move(partial));
  std::lock_guard lock(mutex_);
  output_ended_ = true;
  changed_.notify_all();
}

void LbdProcess::on_line(std::string line) {
  if (echo_) std::cerr << "  | " << line << "\n";
  static const Pattern worker_ready(kWorkerReady);
  static const Pattern worker_pid(kWorkerPid);
  static const Pattern successor(R"(upgrade: pid ([0-9]+) took over)");
  std::lock_guard lock(mutex_);
  if (auto m = successor.search(line)) supervisor_ = static_cast<pid_t>(std::stol((*m)[1]));
  if (auto m = worker_ready.search(line)) {
    const auto slot = static_cast<unsigned>(std::stoul((*m)[1]));
    const auto pid = static_cast<pid_t>(std::stol((*m)[2]));
    worker_pids_[slot] = pid;
    seen_pids_.insert(pid);
  } else if (auto m2 = worker_pid.search(line)) {
    seen_pids_.insert(static_cast<pid_t>(std::stol((*m2)[2])));
  }
  lines_.push_back(std::move(line));
  changed_.notify_all();
}

std::optional<LogMatch> LbdProcess::wait_for_log(const std::string& regex, Deadline deadline,
                                                 size_t from_line) {
  const Pattern pattern(regex);
  std::unique_lock lock(mutex_);
  size_t next = from_line;
  while (true) {
    for (; next < lines_.size(); next++) {
      if (auto groups = pattern.search(lines_[next])) return LogMatch{next, std::move(*groups)};
    }
    if (output_ended_) return std::nullopt;
    if (changed_.wait_until(lock, deadline) == std::cv_status::timeout && next == lines_.size()) {
      return std::nullopt;
    }
  }
}

std::optional<Ready> LbdProcess::wait_ready(Deadline deadline) {
  auto match = wait_for_log(kReadyLine, deadline);
  if (!match) return std::nullopt;
  Ready ready;
  ready.workers = static_cast<unsigned>(std::stoul(match->groups[1]));
  try {
    for (const auto& text : split_addresses(match->groups[2])) {
      ready.addresses.push_back(net::Address::parse(text));
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << "cannot parse the addresses in the ready line '" << match->groups[0]
                  << "': " << e.what();
    return std::nullopt;
  }
  ready.mode = match->groups[3];
  ready.policy = match->groups[4];
  return ready;
}

size_t LbdProcess::log_lines() const {
  std::lock_guard lock(mutex_);
  return lines_.size();
}

size_t LbdProcess::count_log(const std::string& regex) const {
  const Pattern pattern(regex);
  std::lock_guard lock(mutex_);
  size_t n = 0;
  for (const auto& line : lines_) n += pattern.search(line) ? 1 : 0;
  return n;
}

std::string LbdProcess::log() const {
  std::lock_guard lock(mutex_);
  std::string text;
  for (const auto& line : lines_) text += line + "\n";
  return text;
}

std::vector<std::string> LbdProcess::lines() const {
  std::lock_guard lock(mutex_);
  return lines_;
}

pid_t LbdProcess::worker_pid(unsigned slot) const {
  std::lock_guard lock(mutex_);
  auto it = worker_pids_.find(slot);
  return it == worker_pids_.end() ? 0 : it->second;
}

pid_t LbdProcess::wait_for_worker_restart(unsigned slot, pid_t old_pid, Deadline deadline) {
  std::unique_lock lock(mutex_);
  auto restarted = [&] {
    auto it = worker_pids_.find(slot);
    return it != worker_pids_.end() && it->second != old_pid;
  };
  if (!changed_.wait_until(lock, deadline, [&] { return restarted() || output_ended_; })) return 0;
  return restarted() ? worker_pids_[slot] : 0;
}

void LbdProcess::signal(int sig) {
  if (pid_ > 0 && !exit_) kill(pid_, sig);
}

ExitStatus LbdProcess::wait_exit(Deadline deadline) {
  if (exit_) return *exit_;
  while (true) {
    int status = 0;
    pid_t reaped = waitpid(pid_, &status, WNOHANG);
    if (reaped == pid_) {
      exit_ = ExitStatus::from_wait_status(status);
      break;
    }
    if (reaped < 0 && errno != EINTR) {
      ADD_FAILURE() << "waitpid(" << pid_ << "): " << strerror(errno);
      return ExitStatus::running();
    }
    if (Clock::now() >= deadline) return ExitStatus::running();
    pollfd p{pidfd_.get(), POLLIN, 0};
    poll(&p, 1, std::max(1, remaining_ms(deadline)));
  }
  // Let the reader catch the last lines (the workers are gone too, normally).
  std::unique_lock lock(mutex_);
  changed_.wait_until(lock, std::min(deadline, after(1s)), [&] { return output_ended_; });
  return *exit_;
}

// --- processes --------------------------------------------------------------------------------

std::string process_command_line(pid_t pid) {
  std::ifstream file("/proc/" + std::to_string(pid) + "/cmdline");
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  while (!text.empty() && text.back() == '\0') text.pop_back();
  for (char& ch : text) {
    if (ch == '\0') ch = ' ';
  }
  return text;
}

size_t process_rss_bytes(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoul(line.substr(6)) * 1024;  // "VmRSS:  123 kB"
  }
  return 0;
}

std::vector<int> process_cpus(pid_t pid) {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(pid, sizeof(set), &set) != 0) return cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}

char process_state(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return 0;
  // "pid (comm) S ...": comm may hold spaces and parentheses, so look after the last ')'.
  size_t close = text.rfind(')');
  if (close == std::string::npos || close + 2 >= text.size()) return 0;
  return text[close + 2];
}

bool stop_process(pid_t pid, Deadline deadline) {
  if (kill(pid, SIGSTOP) != 0) return false;
  return eventually(deadline, [&] { return process_state(pid) == 'T'; }, 1ms);
}

UniqueFd take_listener(pid_t pid, uint16_t port) {
  UniqueFd pidfd(pidfd_open(pid));
  if (!pidfd) return {};
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = opendir(dir.c_str());
  if (!d) return {};
  UniqueFd found;
  while (dirent* entry = readdir(d)) {
    if (entry->d_name[0] == '.') continue;
    UniqueFd fd(pidfd_getfd(pidfd.get(), atoi(entry->d_name)));
    if (!fd) continue;
    int listening = 0;
    socklen_t len = sizeof(listening);
    if (getsockopt(fd.get(), SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) continue;
    auto address = net::local_address(fd.get());
    if (address && address->port() == port) {
      found = std::move(fd);
      break;
    }
  }
  closedir(d);
  return found;
}

}  // namespace lbd::test
