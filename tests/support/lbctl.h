// Driving lbd's control plane from a test, the two ways an operator's tools do:
//
//   run_lbctl(socket, {"reload"}, after(30s))        the real lbctl binary (LBCTL_PATH): exit
//                                                     status, stdout and stderr, bounded in time
//   ControlConnection::open(socket)                   raw bytes on the control socket, for what
//                                                     lbctl would never send (garbage, huge lines)
//
// and the file juggling a deploy does (copy a binary, swap a new one in with rename()).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/unique_fd.h"
#include "support/deadline.h"
#include "support/lbd_process.h"

namespace lbd::test {

// A uid and gid to run a command as (with no supplementary groups).
using Credentials = std::pair<uid_t, gid_t>;
// The `nobody` user, if this system has one.
std::optional<Credentials> nobody();

// How a command ended and what it printed.
struct CommandResult {
  ExitStatus status;       // kRunning: it was killed at the deadline
  bool timed_out = false;  // killed at the deadline
  std::string out;
  std::string err;

  bool exited(int code) const { return status == ExitStatus::exited(code); }
  // stdout lines (without the newline).
  std::vector<std::string> out_lines() const;
  // "exited with status 1; stdout: ...; stderr: ...", for failure messages.
  std::string describe() const;
};

// Runs `argv` (argv[0] is the path) with stdin from /dev/null, collects stdout and stderr, and
// waits for it to exit; at the deadline it is killed (SIGKILL) and `timed_out` is set.
CommandResult run_command(const std::vector<std::string>& argv, Deadline deadline,
                          std::optional<Credentials> run_as = std::nullopt);

// lbctl -s SOCKET ARGS...
CommandResult run_lbctl(const std::string& socket, const std::vector<std::string>& args,
                        Deadline deadline, std::optional<Credentials> run_as = std::nullopt);

// A raw client of the control socket.
class ControlConnection {
 public:
  ControlConnection() = default;
  // Connects; on failure the connection is invalid and `error` (when given) holds the errno.
  static ControlConnection open(const std::string& socket, int* error = nullptr);

  bool valid() const { return fd_.valid(); }

  // Sends every byte, or stops at the first error (lbd may close the connection while we are
  // still sending: EPIPE / ECONNRESET). Returns 0, or the errno, or ETIMEDOUT at the deadline.
  int send(std::string_view bytes, Deadline deadline);
  void shutdown_write();

  // Reads until lbd closes the connection or the deadline passes.
  struct Received {
    std::string data;
    bool closed = false;  // lbd closed the connection (EOF, or a reset after its answer)
    // The newline-terminated lines received.
    std::vector<std::string> lines() const;
  };
  Received read_until_close(Deadline deadline);
  // Nothing received yet and the connection is still open.
  bool nothing_received();

 private:
  explicit ControlConnection(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

// Copies an executable file (mode 0755).
void copy_executable(const std::string& from, const std::string& to);
// Puts a new executable at `path` the way a deploy does: writes `path`.new, then rename()s it
// over `path` (a running binary cannot be written in place: ETXTBSY).
void replace_executable_with_file(const std::string& path, const std::string& new_binary);
void replace_executable_with_text(const std::string& path, const std::string& contents);

}  // namespace lbd::test
