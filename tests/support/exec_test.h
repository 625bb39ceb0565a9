// The fixture for exec-mode tests (`lbd run -- PROGRAM`): lbd runs a program as its workers,
// with its control socket and the app's log in a private temp dir.
//
//   ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "reuseport", "-i", "2"}, {SERVER}));
//   fetch(address(), http_get("/"), after(2s));
//   log_records()   // the app's log, one record per line
#pragma once

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "support/control_test.h"

namespace lbd::test {

// A third-party program the tests run unchanged (node, gunicorn) is installed.
inline bool on_path(const std::string& program) {
  return run_command({"/bin/sh", "-c", "command -v " + program}, after(std::chrono::seconds(5))).exited(0);
}

class ExecTest : public ControlTest {
 protected:
  static constexpr const char* kApp = "app";

  // As root, the program runs as nobody (lbd refuses to run it as root unless told to), so
  // every exec-mode test also shows that the program works unprivileged and under the steering
  // guard. A test that needs another user passes its own --user or --allow-root in FLAGS.
  static std::vector<std::string> user_flags(const std::vector<std::string>& flags) {
    const bool named = std::find_if(flags.begin(), flags.end(), [](const std::string& f) {
                         return f == "--user" || f == "-u" || f == "--allow-root";
                       }) != flags.end();
    if (geteuid() != 0 || named) return {};
    return {"--user", "nobody"};
  }

  // lbd run --name app --listen 127.0.0.1:0 --control ... --log-dir ... FLAGS -- COMMAND
  static std::vector<std::string> run_args(const std::vector<std::string>& flags,
                                           const std::vector<std::string>& command,
                                           const std::string& control, const std::string& log_dir) {
    std::vector<std::string> args = {"run", "--name", kApp, "--listen", "127.0.0.1:0",
                                     "--control", control, "--log-dir", log_dir};
    for (const auto& flag : user_flags(flags)) args.push_back(flag);
    args.insert(args.end(), flags.begin(), flags.end());
    args.push_back("--");
    args.insert(args.end(), command.begin(), command.end());
    return args;
  }

  void start_program(const std::vector<std::string>& flags, const std::vector<std::string>& command) {
    start(run_args(flags, command, socket_path(), log_dir()));
  }

  std::string log_dir() const { return dir_.path("logs"); }
  std::string log_file() const { return log_dir() + "/" + kApp + ".log"; }

  // The app's log file, a line per record: "<time> app <worker> <out|err|lbd> <text>".
  std::vector<std::string> log_records() const {
    std::vector<std::string> lines;
    std::ifstream in(log_file());
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }

  // Records whose text (after "<time> app <worker> <stream> ") contains `needle`.
  size_t count_records(const std::string& needle) const {
    size_t n = 0;
    for (const auto& line : log_records()) n += line.find(needle) != std::string::npos ? 1 : 0;
    return n;
  }
};

}  // namespace lbd::test
