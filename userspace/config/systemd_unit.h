// `lbd startup [LBD ARGS...]`: the systemd unit that runs lbd with these arguments, the way
// `pm2 startup` prints one for PM2. Type=notify (lbd says READY=1 once every worker serves),
// ExecReload is `lbctl reload`, and Restart=always brings lbd back after a crash, when it takes
// its still-running workers over (docs/ARCHITECTURE.md, section 9) — which is why only lbd
// itself is signalled on stop (KillMode=process): it stops its workers gracefully, and a crash
// leaves them serving for the next lbd. The hardening options are those lbd's privileges allow
// (README, "Under systemd").
#pragma once

#include <string>
#include <vector>

namespace lbd {

struct UnitOptions {
  std::vector<std::string> lbd_args;  // what ExecStart passes to lbd
  std::string lbd_path;               // absolute
  std::string exec_reload;            // lbctl reload [APP]; for `lbd start`, a HUP
  std::string app;                    // "lbd", or `lbd run --name`'s
  std::string working_directory;      // where relative paths in the arguments start
  std::vector<std::string> writable;  // more paths lbd writes (its log directory, ...)
  bool runs_program = false;          // `lbd run`: the program may write where it lives
  int stop_timeout_s = 30;            // TimeoutStopSec: lbd's --drain-grace and --shutdown-timeout, and then some
};

// The unit's name: lbd.service, or lbd-APP.service for an app.
std::string unit_name(const std::string& app);
// The unit file's text.
std::string systemd_unit(const UnitOptions& options);
// One word for ExecStart=: quoted when it needs it, with systemd's own escapes ('%' and '$').
std::string systemd_word(const std::string& word);

}  // namespace lbd
