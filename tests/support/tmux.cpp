#include "support/tmux.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>
#include <stdexcept>

#include "support/lbctl.h"

namespace lbd::test {

namespace {

constexpr const char* kSession = "test";

std::optional<std::string> find_in_path(const std::string& name) {
  const char* path = getenv("PATH");
  std::istringstream dirs(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

}  // namespace

std::string shell_quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

bool TmuxSession::available() { return find_in_path("tmux").has_value(); }

TmuxSession::TmuxSession(std::string socket_path, const std::vector<std::string>& command, int columns, int lines)
    : tmux_(find_in_path("tmux").value_or("tmux")), socket_path_(std::move(socket_path)) {
  // tmux runs the session's command with sh -c: one string, every word quoted.
  std::string shell_command;
  for (const auto& word : command) shell_command += (shell_command.empty() ? "" : " ") + shell_quote(word);
  CommandResult started = run_command(tmux_command({"new-session", "-d", "-s", kSession, "-x", std::to_string(columns),
                                                    "-y", std::to_string(lines), shell_command}),
                                      after(10s));
  if (!started.exited(0)) throw std::runtime_error("tmux new-session: " + started.describe());
  CommandResult pid = run_command(tmux_command({"display-message", "-p", "-t", kSession, "#{pid}"}), after(10s));
  if (pid.exited(0)) server_pid_ = static_cast<pid_t>(std::atoi(pid.out.c_str()));
}

TmuxSession::~TmuxSession() {
  (void)run_command(tmux_command({"kill-server"}), after(10s));
  if (server_pid_ <= 0) return;
  // The server daemonised; its parent, the first tmux client, is gone, so it is ours to reap
  // (child subreaper) unless it has gone to init. Either way it is not left running.
  eventually(after(5s), [&] {
    const pid_t reaped = waitpid(server_pid_, nullptr, WNOHANG);
    return reaped == server_pid_ || (reaped < 0 && kill(server_pid_, 0) != 0);
  }, 5ms);
}

std::vector<std::string> TmuxSession::tmux_command(std::vector<std::string> args) const {
  args.insert(args.begin(), {tmux_, "-S", socket_path_});
  return args;
}

std::string TmuxSession::screen() const {
  CommandResult r = run_command(tmux_command({"capture-pane", "-p", "-t", kSession}), after(10s));
  return r.exited(0) ? r.out : std::string();
}

void TmuxSession::send_keys(const std::vector<std::string>& keys) const {
  std::vector<std::string> args = {"send-keys", "-t", kSession};
  args.insert(args.end(), keys.begin(), keys.end());
  CommandResult r = run_command(tmux_command(args), after(10s));
  if (!r.exited(0)) throw std::runtime_error("tmux send-keys: " + r.describe());
}

bool TmuxSession::running() const {
  return run_command(tmux_command({"has-session", "-t", kSession}), after(10s)).exited(0);
}

}  // namespace lbd::test
