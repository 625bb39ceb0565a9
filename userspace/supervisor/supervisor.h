// The supervisor: lbd's main process. It creates every listener (sockets join one reuseport
// group only if one uid created them), loads the steering program, runs one worker per slot,
// and changes the set of workers while serving: restarts crashed workers with backoff, drains,
// reloads slot by slot, scales, and stops gracefully. Operators reach it with signals (nginx's:
// HUP reload, TERM/INT graceful stop, QUIT immediate stop) or with lbctl over the control socket.
//
// A slot is a worker's stable place (its index is what X-Worker says and what the steering
// program chooses). A slot holds at most one *serving* process (the one steered to), at most one
// *replacement* starting to take its place, and any number of *retiring* processes finishing
// their connections. Replacing is always: start the new process, wait until it reports ready,
// swap its listener into the slot (one map update), then retire the old one — so there are never
// fewer serving workers than before (DESIGN.md invariant 3).
//
// Retiring a process: take it out of steering, shut its listener down (the kernel migrates the
// queued and half-open connections, the program sends them to active slots), and tell it to
// drain. Nothing that reached a worker is reset (invariant 1).
//
// One epoll loop; every exchange with a worker is a non-blocking message or a signal, so the
// supervisor never waits on one (invariant 5).
//
// The code is split by role: supervisor.cpp (set-up, loop, signals, stop), slot_lifecycle.cpp
// (starting, readiness, swapping, retiring, exits and crashes), operations.cpp (what lbctl and
// SIGHUP ask for: drain, undrain, reload, restart, scale, policy, status), metrics.cpp (what the
// admin endpoint reports: /metrics and /readyz; the endpoint itself is admin_server.cpp).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <deque>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "common/unique_fd.h"
#include "control/protocol.h"
#include "logs/log_collector.h"
#include "metrics/worker_stats.h"
#include "net/address.h"
#include "net/listener.h"
#include "steering/slot_table.h"
#include "steering/steering.h"
#include "supervisor/admin_server.h"
#include "supervisor/control_server.h"
#include "supervisor/options.h"
#include "supervisor/poller.h"
#include "supervisor/process_stats.h"
#include "supervisor/program_load.h"
#include "supervisor/restart_policy.h"
#include "supervisor/tree_sampler.h"

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
  using ClientId = ControlServer::ClientId;

  enum class Role { kStarting, kServing, kRetiring };

  // What a retiring worker does with idle keep-alive connections (see worker/worker.h).
  enum class Retire { kStop, kDrain, kHandover };

  struct WorkerProcess {
    uint32_t id = 0;  // unique within this lbd; tags the status channel in the poller
    pid_t pid = 0;
    uint32_t slot = 0;
    Role role = Role::kStarting;
    std::vector<UniqueFd> listeners;  // our copies of its listeners (bpf, reuseport)
    UniqueFd status;                  // our end of its status channel
    UniqueFd handoff;                 // --mode handoff: our end of its connection inbox
    UniqueFd handover_sender;         // a replacement: the end its predecessor hands over on
    Clock::time_point started_at;
    std::optional<Clock::time_point> ready_by;  // starting: killed if not ready by then
    std::optional<Clock::time_point> kill_at;   // retiring: killed if still running by then
    uint32_t reported_open = 0;       // retiring: connections it still holds ("OPEN=n")
    bool for_operation = false;       // started by a reload/restart: its readiness completes it
    bool timed_out = false;           // killed for not being ready in time
    bool killed = false;              // SIGKILLed: it must never become ready or serve
    CpuMeter cpu;
    // Exec mode (`lbd run`): the program has no status channel. It may say READY=1 on its own
    // NOTIFY_SOCKET; otherwise it counts as ready at ready_at. Its stdout and stderr come through
    // pipes into the app's log. The supervisor publishes its load for it (program.cpp).
    UniqueFd notify;
    std::optional<Clock::time_point> ready_at;
    // --mode bpf: while it starts, lbd's own connection to its first listener, steered there
    // alone. Once the program has taken it off the queue, it accepts: it is ready (program.cpp).
    struct Probe {
      net::ProbeConnection connection;
      Steering::ProbeRegistration registration;  // refers to steering_, which outlives slots_
      bool established = false;  // seen connected at an earlier look
      uint32_t queued = 0;       // the listener's queue at the last look
    };
    std::optional<Probe> probe;
    unsigned probes_started = 0;
    std::optional<logs::LogPipe> output[2];  // its stdout and stderr, into the app's log
    std::optional<ProgramLoadEstimate> load;  // serving: what it has taken, by our looks
    uint32_t retiring_queue = 0;      // retiring: its queue at the last look, and when it last
    Clock::time_point queue_moved_at;  // shrank (or was seen)
    uint32_t open_connections = 0;    // from the kernel, sampled (process_tree.h)
    uint64_t tree_rss = 0;            // its whole process tree's resident memory, sampled
    std::optional<WorkerStatsBlock> stats;  // what it counts (requests, durations); we keep
                                            // reading it after it exits (fold_into_history)
  };

  // What a slot did beyond its live processes: what its exited processes counted, and its
  // restarts, so that the slot's counters in /metrics keep growing across reloads, restarts and
  // crashes. Indexed by slot and kept when a slot is scaled away, so a slot that comes back
  // continues where it was.
  struct SlotHistory {
    WorkerStatsSnapshot stats;
    double cpu_seconds = 0;
    uint64_t restarts = 0;  // all of the slot's crash restarts (Slot::restart_count: this
                            // incarnation's, for lbctl status)
  };

  struct Slot {
    uint32_t index = 0;
    int cpu = -1;
    bool wanted = true;   // false: drained by the operator, or scaled away
    bool failed = false;  // crashed too often; left down until undrain/reload
    bool removing = false;  // scaled away: the slot goes once its processes have exited
    std::unique_ptr<WorkerProcess> serving;
    std::unique_ptr<WorkerProcess> replacement;
    std::vector<std::unique_ptr<WorkerProcess>> retiring;
    RestartPolicy restarts;
    std::optional<Clock::time_point> restart_at;
    unsigned restart_count = 0;
    // --max-memory: replacements back off when they come in quick succession (a program that is
    // over the limit as soon as it starts must not be replaced every second).
    RestartPolicy memory_replacements{std::numeric_limits<unsigned>::max(), std::chrono::minutes(10),
                                      std::chrono::seconds(2), std::chrono::minutes(5)};
    Clock::time_point memory_check_after;
    std::chrono::milliseconds memory_quiet{0};  // a new process is not looked at before this age
  };

  // A long request (reload, restart, drain --wait, undrain, scale) in progress. One at a time.
  struct Operation {
    control::Verb verb = control::Verb::kReload;
    std::optional<ClientId> client;  // none when started by SIGHUP
    std::deque<uint32_t> pending;    // reload: slots still to replace, in order
    std::set<uint32_t> active;       // slots being replaced, started, or drained
    uint32_t parallel = 1;
    std::chrono::milliseconds timeout{30'000};
    unsigned succeeded = 0;
    std::string failure;             // the first failure; non-empty means the operation failed
    Clock::time_point started_at;
  };

  // --- supervisor.cpp
  Result<void> set_up();
  Result<void> open_shared_listeners();
  void on_signal();
  void accept_for_handoff(uint32_t listener);
  void begin_stop(bool graceful);
  void run_timers();
  int poll_timeout_ms() const;
  bool any_process() const;
  SlotTable& table();
  std::string listen_summary() const;

  // --- slot_lifecycle.cpp
  Slot& add_slot();
  Result<std::unique_ptr<WorkerProcess>> spawn(Slot& slot, bool with_handover_inbox);
  Result<void> start_serving(Slot& slot);
  Result<void> start_replacement(Slot& slot, std::chrono::milliseconds ready_timeout);
  void on_status(uint32_t process_id);
  void on_ready(Slot& slot, WorkerProcess& process);
  void retire(Slot& slot, std::unique_ptr<WorkerProcess> process, Retire how,
              std::chrono::milliseconds timeout);
  void tell_to_drain(WorkerProcess& process, Retire how, std::chrono::milliseconds timeout,
                     int successor_inbox);
  void stop_listening(WorkerProcess& process);
  void kill_now(WorkerProcess& process);
  void check_memory(Clock::time_point now);
  void check_all_ready();
  void reap_children();
  void on_exit(Slot& slot, WorkerProcess& process, int wait_status, double cpu_seconds);
  void fold_into_history(const Slot& slot, const WorkerProcess& process, double cpu_seconds);
  void on_crash(Slot& slot, pid_t pid, bool was_ready, int wait_status);
  void update_state(Slot& slot);
  void remove_scaled_away_slots();
  bool has_process(const Slot& slot) const;
  WorkerProcess* find_process(uint32_t id, Slot** slot_out);
  std::optional<Slot*> slot_at(uint32_t index);

  // --- operations.cpp
  void on_request(ClientId client, const control::Request& request);
  nlohmann::json status();
  void start_reload(std::optional<ClientId> client, control::Verb verb, std::deque<uint32_t> slots,
                    uint32_t parallel, std::chrono::milliseconds timeout);
  void drain_slots(const std::vector<uint32_t>& slots, std::chrono::milliseconds timeout);
  void advance_operation();
  void operation_progress(const std::string& message);
  void operation_slot_failed(uint32_t slot, const std::string& why);
  void finish_operation();
  std::chrono::milliseconds drain_timeout(const control::Request& request) const;

  // --- program.cpp (exec mode)
  Result<void> open_listeners(WorkerProcess& process, std::vector<int>& fds);
  Result<void> launch_program(Slot& slot, WorkerProcess& process);
  void on_notify(uint32_t process_id);
  void on_output(uint32_t index);
  void close_output(WorkerProcess& process);
  void publish_program_loads(Clock::time_point now);
  void publish_program_load(Slot& slot);
  Result<void> start_probe(Slot& slot, WorkerProcess& process);
  void check_probes();
  void fall_back_to_ready_delay(Slot& slot, WorkerProcess& process, const std::string& why);
  void sample_program_trees(Clock::time_point now, bool now_even_if_sampled_lately = false);
  std::vector<WorkerProcess*> program_processes();
  void apply_tree_sample(const TreeSampler::Sample& sample);
  bool is_program() const { return options_.program.has_value(); }
  void watch_retiring_queues(Clock::time_point now);
  // How long a new worker has to get ready when no one said: lbd run's --ready-timeout.
  std::chrono::milliseconds ready_timeout() const {
    return is_program() ? options_.program->ready_timeout : std::chrono::milliseconds(30'000);
  }

  // --- metrics.cpp
  std::string metrics_text();
  std::string not_ready_because() const;
  WorkerStatsSnapshot slot_stats(const Slot& slot) const;

  SupervisorOptions options_;
  std::string binary_;
  std::optional<Steering> steering_;        // --mode bpf
  std::optional<SlotTable> plain_table_;    // other modes
  std::vector<net::Address> bound_;         // listen addresses with their real ports
  std::vector<uint32_t> groups_;            // sockarray row per address (bpf)
  std::vector<UniqueFd> shared_listeners_;  // --mode shared and handoff: one per address
  std::vector<std::unique_ptr<Slot>> slots_;
  uint32_t next_process_id_ = 1;
  uint32_t handoff_next_ = 0;
  uint64_t handoff_dropped_ = 0;
  uint64_t reloads_ = 0;
  uint64_t reload_failures_ = 0;
  std::vector<SlotHistory> history_ = std::vector<SlotHistory>(LBD_MAX_SLOTS);

  std::unique_ptr<logs::LogCollector> logs_;  // exec mode: the app's log file
  std::unique_ptr<TreeSampler> tree_sampler_;  // exec mode: process trees, sampled on a thread
  Clock::time_point next_load_publish_;
  Clock::time_point next_tree_sample_;
  Clock::time_point next_memory_check_;
  Clock::time_point next_log_check_;
  uint64_t memory_replacements_ = 0;

  std::optional<Poller> poller_;
  UniqueFd signal_fd_;
  std::optional<ControlServer> control_;
  std::optional<AdminServer> admin_;
  std::optional<Operation> op_;
  bool stopping_ = false;
  bool announced_ready_ = false;
  Clock::time_point started_at_;
  Clock::time_point stop_deadline_;
  Clock::time_point next_control_sweep_;
  int exit_code_ = 0;
};

}  // namespace lbd
