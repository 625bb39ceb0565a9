// The supervisor: lbd's main process. It creates every listener (sockets join one reuseport
// group only if one uid created them), loads the steering program, starts one worker per slot,
// marks slots active as workers report ready, restarts crashed workers with backoff, and stops
// gracefully on SIGTERM/SIGINT.
//
// It runs one epoll loop over a signalfd, the workers' status sockets and, in --mode handoff, the
// listeners it accepts on. It never waits on a worker: every exchange with one is a non-blocking
// message or a signal (DESIGN.md invariant 5).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "net/address.h"
#include "steering/slot_table.h"
#include "steering/steering.h"
#include "supervisor/options.h"
#include "supervisor/restart_policy.h"

namespace lbd {

class Supervisor {
 public:
  explicit Supervisor(SupervisorOptions options);
  ~Supervisor();

  // Sets up and serves until stopped. Returns the process exit code: 0 after a requested stop,
  // 1 when lbd could not start or every worker failed.
  int run();

 private:
  using Clock = std::chrono::steady_clock;

  enum class SlotPhase {
    kEmpty,     // no process (before the first start, or waiting for a restart)
    kStarting,  // process started, not ready
    kActive,    // serving
    kDraining,  // told to finish and exit
    kFailed,    // crashed too often; left down
  };

  struct Slot {
    uint32_t index = 0;
    int cpu = -1;
    SlotPhase phase = SlotPhase::kEmpty;
    pid_t pid = 0;
    std::vector<UniqueFd> listeners;  // our copies of the worker's listeners (bpf, reuseport)
    UniqueFd status;                  // our end of the worker's status socket
    UniqueFd handoff;                 // our end of the worker's handoff socket (handoff mode)
    RestartPolicy restarts;
    std::optional<Clock::time_point> restart_at;
    unsigned restart_count = 0;
  };

  Result<void> set_up();
  Result<void> open_shared_listeners();
  Result<void> open_slot_listeners(Slot& slot);
  Result<void> start_worker(Slot& slot);
  void set_state(Slot& slot, uint32_t state);
  void retire_listeners(Slot& slot);
  void drain(Slot& slot);

  void on_signal();
  void on_status(Slot& slot);
  void on_ready(Slot& slot);
  void reap_children();
  void on_exit(Slot& slot, int wait_status);
  void begin_stop(bool graceful);
  void run_timers();
  void accept_for_handoff(uint32_t listener);
  void check_all_ready();
  bool any_process() const;
  int epoll_timeout_ms() const;
  Result<void> watch(int fd, uint64_t tag);
  void unwatch(int fd);

  SlotTable& table();
  std::string listen_summary() const;

  SupervisorOptions options_;
  std::string binary_;
  std::optional<Steering> steering_;    // --mode bpf
  std::optional<SlotTable> plain_table_;  // other modes
  std::vector<net::Address> bound_;     // listen addresses with their real ports
  std::vector<uint32_t> groups_;        // sockarray row per address (bpf)
  std::vector<UniqueFd> shared_listeners_;  // --mode shared and handoff: one per address
  std::vector<Slot> slots_;
  uint32_t handoff_next_ = 0;
  uint64_t handoff_dropped_ = 0;

  UniqueFd epoll_;
  UniqueFd signal_fd_;
  bool stopping_ = false;
  bool announced_ready_ = false;
  Clock::time_point stop_deadline_;
  int exit_code_ = 0;
};

}  // namespace lbd
