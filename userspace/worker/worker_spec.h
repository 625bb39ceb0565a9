// What a worker process is told when the supervisor starts it: its slot, its CPU, which inherited
// file descriptors are its listeners and channels, and the HTTP settings. The supervisor passes it
// as JSON in the LBD_WORKER_SPEC environment variable when it executes the worker, so a worker is
// always a fresh program (a reload picks up a new build on disk).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sandbox/run_as.h"
#include "worker/http.h"

namespace lbd {

inline constexpr const char* kWorkerSpecEnv = "LBD_WORKER_SPEC";

// How connections reach the worker (--mode).
enum class AcceptMode {
  kSteered,   // bpf / reuseport / shared: the worker accepts on its listener(s)
  kHandoff,   // the supervisor accepts and passes each connection over a Unix socket
};

struct WorkerSpec {
  uint32_t slot = 0;
  int cpu = -1;  // informational: the supervisor pinned the process before executing it
  AcceptMode accept_mode = AcceptMode::kSteered;
  std::vector<int> listener_fds;  // one per listen address (kSteered)
  int handoff_fd = -1;            // kHandoff: SOCK_SEQPACKET carrying one fd per message
  int handover_in_fd = -1;        // idle keep-alive connections from the worker this one replaces
  int slot_table_fd = -1;         // the shared slot table (BPF map or memfd)
  int stats_fd = -1;              // this process's stats block (metrics/worker_stats.h); -1: none,
                                  // the worker then counts into a block nobody reads
  int status_fd = -1;             // SOCK_SEQPACKET with the supervisor: typed messages
                                  // (worker/channel.h)
  int status_escrow_fd = -1;      // the supervisor's end of the status channel: kept open, never
                                  // read, so a supervisor that dies leaves it to the next one
  bool reconcile_queue = false;   // --mode bpf: correct the load counters from TCP_INFO
  // A worker started to replace another writes its slot-table entry only once the supervisor
  // says "SERVING" (after the swap); until then the entry is its predecessor's.
  bool publish_at_start = true;
  HttpLimits http;
  std::chrono::milliseconds idle_timeout{60'000};
  std::chrono::milliseconds header_timeout{10'000};  // a request head must arrive within this
  uint64_t min_body_rate = 1024;                      // bytes/s a body must average, after --header-timeout
  size_t body_memory = BodyBudget{}.limit;            // request bodies held at once, all connections
  std::chrono::milliseconds drain_timeout{10'000};
  unsigned max_connections = 65536;
  std::string log_level = "info";
  // Who the worker becomes once its ring and listeners are set up (sandbox/confine.h); none: it
  // keeps lbd's uid. Either way it drops every capability and installs the steering guard.
  std::optional<RunAs> run_as;
  bool demo_routes = false;  // --demo-routes: the bundled app's /work and /sleep
};

std::string encode_worker_spec(const WorkerSpec& spec);
// Throws ConfigError when the text is not a spec this build understands.
WorkerSpec decode_worker_spec(const std::string& text);

}  // namespace lbd
