// A program on a real terminal, for tests of full-screen tools (`lbctl top`): a private tmux
// server (its own socket, in the test's temp dir) with one session of a fixed size running the
// command. The test reads the screen as text and types keys, as an operator would.
//
//   if (!TmuxSession::available()) GTEST_SKIP() << "needs tmux";
//   TmuxSession tmux(dir.path("tmux.sock"), {LBCTL_PATH, "-s", socket, "top"}, 160, 40);
//   eventually(after(5s), [&] { return tmux.screen().find("SLOT") != std::string::npos; });
//   tmux.send_keys({"j", "d"});
//
// The session ends when the command exits; the destructor kills the server in any case and
// reaps it (the test process is a child subreaper: see lbd_process.h).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "support/deadline.h"

namespace lbd::test {

class TmuxSession {
 public:
  // tmux is installed (on $PATH).
  static bool available();

  // Starts the server and the session; throws std::runtime_error if tmux refuses.
  TmuxSession(std::string socket_path, const std::vector<std::string>& command, int columns, int lines);
  ~TmuxSession();
  TmuxSession(const TmuxSession&) = delete;
  TmuxSession& operator=(const TmuxSession&) = delete;

  // What the screen shows now, one line per row (`capture-pane -p`); "" once the session is gone.
  std::string screen() const;
  // Types keys: "j", "q", or tmux key names such as "Up", "C-c".
  void send_keys(const std::vector<std::string>& keys) const;
  // The session still exists (its command has not exited).
  bool running() const;

 private:
  std::vector<std::string> tmux_command(std::vector<std::string> args) const;

  std::string tmux_;         // the tmux binary
  std::string socket_path_;  // -S: this server only
  pid_t server_pid_ = -1;
};

// `text` quoted for sh: 'it'\''s'.
std::string shell_quote(const std::string& text);

}  // namespace lbd::test
