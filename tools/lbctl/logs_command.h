// `lbctl logs`: the captured output of exec-mode apps, read from the log files lbd writes
// (userspace/logs/record.h has the record format). It reads files, not the control socket, so it
// works while lbd is down too.
//
//   lbctl logs [APP] [--worker N] [-f|--follow] [--lines K] [--log-dir DIR]
//
// APP: <dir>/APP.log (or <dir>/APP/APP.log, the layout of a config file's [lbd] log_dir), with
// its rotated files APP.log.1, .2, ... read as far back as --lines needs. Without APP: every app in
// the directory, merged by timestamp. --worker keeps one worker's records (lbd's notes about it
// included). --lines K: the last K records (default 20; 0 for none). --follow: then the new
// records as they are written, through rotations, until SIGINT/SIGTERM or until stdout is closed
// (exit 0 either way). The directory: --log-dir, else $LBD_LOG_DIR, else /var/log/lbd.
// Records are printed as they are in the files, except that control characters an app wrote
// (escape sequences that would drive the terminal) are shown escaped, \x1b; lines that are not
// records are skipped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace lbd::ctl {

inline constexpr const char* kDefaultLogDir = "/var/log/lbd";

struct LogsOptions {
  std::string dir;                 // see default_log_dir()
  std::string app;                 // empty: every app in `dir`
  std::optional<uint32_t> worker;  // only this worker's records
  bool follow = false;
  size_t lines = 20;
};

// Appends `line` with its control characters made visible: C0 (but tab) and DEL as \xNN, the
// C1 controls' UTF-8 (U+0080..U+009F) as \xc2\xNN, and a literal "\x" as "\\x".
void append_escaped(std::string& out, std::string_view line);

// $LBD_LOG_DIR if set and not empty, else kDefaultLogDir.
std::string default_log_dir();

// A usage error in the options ("bad app name ..."), or empty if they are fine.
std::string check_logs_options(const LogsOptions& options);

// Prints what was asked to stdout. The error is the one line lbctl prints ("no logs for app 'x'
// in /var/log/lbd"). A closed stdout is not an error: the reader has seen enough.
Result<void> run_logs(const LogsOptions& options);

}  // namespace lbd::ctl
