#include "support/lbctl.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace lbd::test {

namespace {

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

}  // namespace

std::optional<Credentials> nobody() {
  passwd* pw = getpwnam("nobody");
  if (!pw) return std::nullopt;
  return Credentials{pw->pw_uid, pw->pw_gid};
}

// --- commands ---------------------------------------------------------------------------------

std::vector<std::string> CommandResult::out_lines() const { return split_lines(out); }

std::string CommandResult::describe() const {
  return (timed_out ? std::string("timed out, ") : std::string()) + status.to_string() +
         "\n  stdout: " + (out.empty() ? "(empty)" : out) + "\n  stderr: " + (err.empty() ? "(empty)" : err);
}

CommandResult run_command(const std::vector<std::string>& args, Deadline deadline,
                          std::optional<Credentials> run_as) {
  CommandResult result;
  int out_pipe[2];
  int err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe2: " + std::string(strerror(errno)));
  UniqueFd out_read(out_pipe[0]), out_write(out_pipe[1]);
  if (pipe2(err_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe2: " + std::string(strerror(errno)));
  UniqueFd err_read(err_pipe[0]), err_write(err_pipe[1]);

  // Everything the child touches is built before fork (the test has other threads).
  std::vector<std::string> storage = args;
  std::vector<char*> argv;
  for (auto& a : storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();

  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork: " + std::string(strerror(errno)));
  if (pid == 0) {
    int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(out_write.get(), 1) < 0 ||
        dup2(err_write.get(), 2) < 0) {
      _exit(126);
    }
    if (run_as && (setgroups(0, nullptr) != 0 || setgid(run_as->second) != 0 || setuid(run_as->first) != 0)) {
      static const char kMessage[] = "test: cannot change uid\n";
      (void)!write(2, kMessage, sizeof(kMessage) - 1);
      _exit(126);
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(126);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    execv(argv[0], argv.data());
    static const char kMessage[] = "test: cannot execute the command\n";
    (void)!write(2, kMessage, sizeof(kMessage) - 1);
    _exit(127);
  }
  out_write.reset();
  err_write.reset();

  // Both pipes until they end (the command exited) or the deadline.
  std::string* sinks[2] = {&result.out, &result.err};
  UniqueFd* sources[2] = {&out_read, &err_read};
  while (out_read.valid() || err_read.valid()) {
    pollfd fds[2];
    for (int i = 0; i < 2; i++) fds[i] = {sources[i]->valid() ? sources[i]->get() : -1, POLLIN, 0};
    const int ready = poll(fds, 2, remaining_ms(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0 && Clock::now() >= deadline) {
      result.timed_out = true;
      break;
    }
    for (int i = 0; i < 2; i++) {
      if (!fds[i].revents) continue;
      char chunk[4096];
      const ssize_t n = read(sources[i]->get(), chunk, sizeof(chunk));
      if (n > 0) {
        sinks[i]->append(chunk, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        sources[i]->reset();
      }
    }
  }
  // Its output has ended; it exits now, normally (it might have closed its output early).
  int status = 0;
  if (!result.timed_out) {
    const bool exited = eventually(deadline, [&] { return waitpid(pid, &status, WNOHANG) == pid; }, 1ms);
    if (exited) {
      result.status = ExitStatus::from_wait_status(status);
      return result;
    }
    result.timed_out = true;
  }
  kill(pid, SIGKILL);
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.status = ExitStatus::running();
  return result;
}

CommandResult run_lbctl(const std::string& socket, const std::vector<std::string>& args,
                        Deadline deadline, std::optional<Credentials> run_as) {
  std::vector<std::string> argv = {LBCTL_PATH, "-s", socket};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, deadline, run_as);
}

// --- ControlConnection ------------------------------------------------------------------------

ControlConnection ControlConnection::open(const std::string& socket, int* error) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket.size() >= sizeof(addr.sun_path)) {
    if (error) *error = ENAMETOOLONG;
    return {};
  }
  std::memcpy(addr.sun_path, socket.c_str(), socket.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd || connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (error) *error = errno;
    return {};
  }
  if (error) *error = 0;
  return ControlConnection(std::move(fd));
}

int ControlConnection::send(std::string_view bytes, Deadline deadline) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) return errno;
    pollfd p{fd_.get(), POLLOUT, 0};
    if (poll(&p, 1, remaining_ms(deadline)) == 0 && Clock::now() >= deadline) return ETIMEDOUT;
  }
  return 0;
}

void ControlConnection::shutdown_write() { ::shutdown(fd_.get(), SHUT_WR); }

std::vector<std::string> ControlConnection::Received::lines() const {
  std::vector<std::string> out;
  size_t at = 0;
  size_t newline;
  while ((newline = data.find('\n', at)) != std::string::npos) {
    out.push_back(data.substr(at, newline - at));
    at = newline + 1;
  }
  return out;
}

ControlConnection::Received ControlConnection::read_until_close(Deadline deadline) {
  Received received;
  while (true) {
    char chunk[4096];
    const ssize_t n = recv(fd_.get(), chunk, sizeof(chunk), MSG_DONTWAIT);
    if (n > 0) {
      received.data.append(chunk, static_cast<size_t>(n));
      continue;
    }
    if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
      received.closed = true;
      return received;
    }
    if (errno == EINTR) continue;
    pollfd p{fd_.get(), POLLIN, 0};
    if (poll(&p, 1, remaining_ms(deadline)) == 0 && Clock::now() >= deadline) return received;
  }
}

bool ControlConnection::nothing_received() {
  pollfd p{fd_.get(), POLLIN, 0};
  return poll(&p, 1, 0) == 0;
}

// --- files ------------------------------------------------------------------------------------

void copy_executable(const std::string& from, const std::string& to) {
  namespace fs = std::filesystem;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing);
  fs::permissions(to, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                          fs::perms::others_read | fs::perms::others_exec);
}

void replace_executable_with_file(const std::string& path, const std::string& new_binary) {
  const std::string staged = path + ".new";
  copy_executable(new_binary, staged);
  std::filesystem::rename(staged, path);
}

void replace_executable_with_text(const std::string& path, const std::string& contents) {
  const std::string staged = path + ".new";
  {
    std::ofstream file(staged, std::ios::trunc);
    file << contents;
    if (!file) throw std::runtime_error("cannot write " + staged);
  }
  if (chmod(staged.c_str(), 0755) != 0) throw std::runtime_error("chmod " + staged);
  std::filesystem::rename(staged, path);
}

}  // namespace lbd::test
