// lbd's command line, parsed once at start-up. Every problem is a ConfigError carrying one line
// for the operator ("--workers: expected a number or 'auto', got 'x'").
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "net/address.h"
#include "steering/steering.h"
#include "worker/http.h"

namespace lbd {

// How connections reach the workers. All but `bpf` exist to compare lbd against the classic
// designs with the same worker code (bench/).
enum class Mode {
  kBpf,        // per-worker listeners in a reuseport group, steered by lbd's BPF program
  kReuseport,  // per-worker listeners, the kernel's hash picks (nginx `reuseport`)
  kShared,     // one listener inherited by every worker (classic pre-fork accept)
  kHandoff,    // the supervisor accepts and passes each connection over a Unix socket (Node.js
               // cluster's default)
};
const char* mode_name(Mode mode);

struct SupervisorOptions {
  unsigned workers = 0;                  // 0 = one per CPU in `cpus`
  std::vector<net::Address> listen;
  std::vector<int> cpus;                 // worker i runs on cpus[i % cpus.size()]
  bool pin = true;
  Mode mode = Mode::kBpf;
  SteeringOptions steering;
  HttpLimits http;
  std::chrono::milliseconds idle_timeout{60'000};
  std::chrono::milliseconds shutdown_timeout{10'000};
  unsigned max_restarts = 5;             // crashes of one slot within restart_window...
  std::chrono::milliseconds restart_window{60'000};  // ...after which lbd stops restarting it
  unsigned max_connections = 16384;      // per worker
  int backlog = 4096;
  std::string log_level = "info";
  std::string control_path = "/run/lbd/lbd.sock";
  bool control_path_given = false;  // --control was set: failing to create it is an error
  // --admin: where to serve /metrics, /healthz and /readyz over HTTP; none by default.
  std::optional<net::Address> admin;
};

// What main() should do after parsing.
struct ParsedCommandLine {
  std::optional<SupervisorOptions> options;  // empty: help or version was printed, exit 0
};

// Throws ConfigError on a bad flag or value.
ParsedCommandLine parse_command_line(int argc, char** argv);

// "0-3,6" -> {0,1,2,3,6}; throws ConfigError on anything else.
std::vector<int> parse_cpu_list(const std::string& text);
// The CPUs this process may run on.
std::vector<int> allowed_cpus();

}  // namespace lbd
