// The config file of `lbd start FILE` (TOML): one or more apps, each run by its own supervisor as
// `lbd run <flags> -- COMMAND ARGS...`, with its own reuseport group, port and control socket.
//
// This module turns the file into validated AppConfigs and each AppConfig into the argv of
// `lbd run`. Every value is checked here with the same rules (the same parsers) as the flags, so a
// file that loads always yields a command line `lbd run` accepts. A bad file is a ConfigError
// whose one-line message names the file, the line and the key:
//
//   lbd.toml:7: app 'web': key 'workrs' is not known (expected one of: name, command, ...)
//   lbd.toml:3:15: syntax error: ...
//
// The schema, every key, is documented in examples/lbd.toml. What it cannot check (a port
// someone else holds, a program that will not start) is each app's supervisor's to report.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lbd::config {

// One [[app]] table, with the [lbd] defaults already applied. Empty strings and empty optionals
// are "not set": no flag is passed and `lbd run` uses its own default.
struct AppConfig {
  std::string name;                  // [A-Za-z0-9_][A-Za-z0-9_.-]*, at most 64, unique in the file
  std::string command;               // the program, looked up in PATH like execvp does
  std::vector<std::string> args;     // its arguments, in order
  std::vector<std::pair<std::string, std::string>> env;  // for the children, in file order
  std::string cwd;                   // always set: the config file's directory unless given
  std::vector<std::string> listen;   // canonical ADDR:PORT ("0.0.0.0:8080", "[::]:8080"); >= 1
  std::string instances;             // "max" or a number 1..LBD_MAX_SLOTS; empty: not set
  std::string cpus;                  // "0-3,6" as written
  std::string policy;                // rr | least | hash
  std::string mode;                  // bpf | reuseport
  std::optional<bool> pin;           // false: --no-pin
  std::optional<uint64_t> max_memory_bytes;
  // On stop or drain: how long in-flight work may take before a worker is killed. `lbd run`'s
  // --kill-timeout, which is also its --shutdown-timeout (one setting, two names).
  std::optional<double> kill_timeout_s;
  std::optional<double> ready_delay_s;
  std::optional<double> ready_timeout_s;
  std::optional<bool> wait_ready;    // true: --wait-ready
  std::optional<double> restart_window_s;
  std::optional<unsigned> max_restarts;
  std::string log_level;             // lbd's own log level for this app's supervisor
  std::string log_dir;               // this app's own log directory (log.dir); see app_log_dir()
  std::optional<uint64_t> log_max_bytes;
  std::optional<unsigned> log_files;
  std::string admin;                 // canonical ADDR:PORT of the admin HTTP endpoint
  std::string agent;                 // canonical ADDR:PORT of the HAProxy agent-check (--agent)
  std::optional<double> drain_grace_s;  // --drain-grace; 0 allowed (drain at once)
  std::string user;                  // USER[:GROUP] its processes run as (--user)
  std::optional<bool> allow_root;    // true: --allow-root
  int line = 0;                      // where the app's table starts, for messages
};

inline constexpr const char* kDefaultControlDir = "/run/lbd";

struct FileConfig {
  // [lbd] control_dir: app NAME's control socket is control_dir/NAME.sock (what lbctl NAME uses).
  std::string control_dir = kDefaultControlDir;
  // [lbd] log_dir: where an app without its own log.dir writes NAME.log. Empty: not set.
  std::string log_dir;
  std::vector<AppConfig> apps;       // in file order, at least one
};

// Reads and validates a config file. Relative paths in it (cwd, log directories, control_dir) are
// resolved against the file's directory, made absolute. Throws ConfigError.
FileConfig load_config_file(const std::string& path);

// The same from text. `path` names the file in messages; relative paths in the file are resolved
// against `base_dir`, by default the directory part of `path` (or "." when it has none).
FileConfig parse_config(std::string_view text, const std::string& path,
                        std::optional<std::string> base_dir = std::nullopt);

// control_dir/NAME.sock
std::string control_socket_path(const AppConfig& app, const FileConfig& file);
// The app's log.dir, else [lbd] log_dir, else empty (lbd run's default). lbd run writes
// <dir>/<name>.log there, so apps can share one directory.
std::string app_log_dir(const AppConfig& app, const FileConfig& file);

// The argv after "lbd": {"run", "--name", "web", ..., "--", "gunicorn", "app:app"}. Only flags
// that are set are passed; --control is always passed (each app needs its own socket).
std::vector<std::string> lbd_run_arguments(const AppConfig& app, const FileConfig& file);

}  // namespace lbd::config
