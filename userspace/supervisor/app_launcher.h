// `lbd start FILE.toml`: one lbd for several apps. Each app the file declares runs as its own
// `lbd run` supervisor process (its own reuseport group, steering program, control socket
// control_dir/NAME.sock and log), started by this one, which only starts, watches and stops them:
// a failing app cannot take the others down, and every lbctl verb works per app unchanged.
//
// All or nothing at start: the file is checked whole before anything runs (a bad file names the
// file, line and key), and if any app fails to become ready (port in use, a program that will
// not start) the others are stopped and lbd exits 1. After that, signals go to every app: HUP
// reloads each, TERM/INT stop each gracefully, QUIT stops at once. An app that exits on its own
// is reported; lbd keeps the others running and exits when none is left.
#pragma once

#include <string>

namespace lbd {

// Returns the process exit code. Throws ConfigError for a bad file.
int run_apps(const std::string& config_path);
// Only reads and checks the file; prints one line about it. Throws ConfigError for a bad file.
int check_apps(const std::string& config_path);

}  // namespace lbd
