// lbd's command line, parsed once at start-up. Every problem is a ConfigError carrying one line
// for the operator ("--workers: expected a number or 'auto', got 'x'").
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "config/values.h"
#include "net/address.h"
#include "sandbox/run_as.h"
#include "steering/steering.h"
#include "worker/http.h"

namespace lbd {

// Exec mode (`lbd run -- PROGRAM ARGS`): every worker is the operator's program, handed its
// listeners as fds 3.. with systemd's socket-activation variables (LISTEN_FDS, LISTEN_PID,
// LISTEN_FDNAMES) and NOTIFY_SOCKET for READY=1.
struct ProgramOptions {
  std::vector<std::string> command;  // the program, then its arguments
  std::string cwd;                   // empty: lbd's
  std::vector<std::string> env;      // "KEY=VALUE", over lbd's own environment
  // Ready when it sends READY=1; in --mode bpf, also once it is seen accepting (lbd's probe
  // connection, program_child.cpp); and, if set, this long after it started (set by default in --mode
  // reuseport, where nothing else tells). With wait_ready only READY=1 counts (PM2's --wait-ready).
  std::optional<std::chrono::milliseconds> ready_delay;
  bool wait_ready = false;
  std::chrono::milliseconds ready_timeout{30'000};  // not ready by then: killed, reported
  // Children's stdout and stderr, stamped line by line, go to <log_dir>/<app>.log.
  std::string log_dir = "/var/log/lbd";
  uint64_t log_max_bytes = 10ull << 20;  // rotate at this size...
  unsigned log_files = 5;                // ...keeping this many old files
};

// --drain-grace when --agent is given and it is not: a balancer is there to be told, and draining
// before its next check would fail the connections it sends meanwhile.
inline constexpr std::chrono::milliseconds kDrainGraceWithAgent{10'000};

struct SupervisorOptions {
  // The arguments lbd was started with (after the program name): a successor started by
  // `lbctl upgrade` gets the same, and a record left by an lbd started with others is not taken
  // over (supervisor/state_record.h).
  std::vector<std::string> command_line;
  std::string app = "lbd";               // the name lbctl and the logs use
  std::optional<ProgramOptions> program;  // set: exec mode (`lbd run`)
  uint64_t max_memory = 0;               // bytes; a worker past it is replaced (0: no limit)
  unsigned workers = 0;                  // 0 = one per CPU in `cpus`
  std::vector<net::Address> listen;
  std::vector<int> cpus;                 // worker i runs on cpus[i % cpus.size()]
  bool pin = true;
  Mode mode = Mode::kBpf;
  SteeringOptions steering;
  HttpLimits http;
  std::chrono::milliseconds idle_timeout{60'000};
  std::chrono::milliseconds header_timeout{10'000};  // a request's head, from its first byte
  uint64_t min_body_rate = 1024;                      // bytes/s, after a body's first --header-timeout
  size_t body_memory = BodyBudget{}.limit;            // per worker, all request bodies at once
  std::chrono::milliseconds shutdown_timeout{10'000};
  unsigned max_restarts = 5;             // crashes of one slot within restart_window...
  std::chrono::milliseconds restart_window{60'000};  // ...after which lbd stops restarting it
  unsigned max_connections = 65536;      // per worker
  int backlog = 4096;
  std::string log_level = "info";
  std::string control_path = "/run/lbd/lbd.sock";  // default_control_path(app)
  bool control_path_given = false;  // --control was set: failing to create it is an error
  // --admin: where to serve /metrics, /healthz and /readyz over HTTP; none by default.
  std::optional<net::Address> admin;
  // --agent: where to answer HAProxy's agent-check (supervisor/agent_server.h); none by default.
  std::optional<net::Address> agent;
  // --drain-grace: on drain --all and a graceful stop, how long the workers may keep serving while
  // lbd tells balancers it is leaving (slot_manager.h, SlotManagerConfig::drain_grace).
  std::chrono::milliseconds drain_grace{0};
  // Who the workers (or the program's processes) run as (docs/ARCHITECTURE.md, "Privileges"):
  // --user as given, `lbd run --allow-root`, and what settle_run_as() made of them.
  std::string user;
  bool allow_root = false;
  std::optional<RunAs> run_as;  // none: as lbd itself
  bool demo_routes = false;     // --demo-routes: the bundled app's /work and /sleep
};

// Decides who the children run as, for a supervisor running with effective uid `euid`:
// - `--user` names them (only root can switch users);
// - lbd's own workers, started as root with no --user, run as nobody:nogroup;
// - a program (`lbd run`), started as root with no --user, is refused unless --allow-root.
// Throws ConfigError with one line otherwise.
void settle_run_as(SupervisorOptions& options, uid_t euid);

// What main() should do after parsing.
struct ParsedCommandLine {
  std::optional<SupervisorOptions> options;  // `lbd [flags]` or `lbd run`
  std::optional<std::string> config_file;    // `lbd start FILE`
  bool check_only = false;                    // `lbd start --check FILE`: check it, start nothing
  // `lbd startup ARGS...`: print the systemd unit that runs `lbd ARGS...` (checked like a start).
  std::optional<std::vector<std::string>> startup_args;
  // Neither: help or version was printed, exit 0.
};

// Throws ConfigError on a bad flag or value.
ParsedCommandLine parse_command_line(int argc, char** argv);

// Where an app's control socket is unless --control says otherwise: /run/lbd/<app>.sock
// (plain `lbd` is the app "lbd").
std::string default_control_path(const std::string& app);

}  // namespace lbd
