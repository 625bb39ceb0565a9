// The supervisor: lbd's main process. It creates every listener (sockets join one reuseport
// group only if one uid created them), loads the steering program, runs one worker per slot,
// and changes the set of workers while serving: restarts crashed workers with backoff, drains,
// reloads slot by slot, scales, and stops gracefully. Operators reach it with signals (nginx's:
// HUP reload, TERM/INT graceful stop, QUIT immediate stop) or with lbctl over the control socket.
//
// It is a shell around the slot manager (slot_manager.h), the state machine that decides what
// happens to slots and processes: the shell runs the poller, the signals, the control and admin
// servers, turns what it sees into the manager's events, and carries out the manager's effects
// through each process's Child (child.h). One epoll loop; every exchange with a worker is a
// non-blocking message or a signal, so the supervisor never waits on one (docs/ARCHITECTURE.md,
// invariant 5).
//
// The code is split by role: supervisor.cpp (set-up, the loop, signals, exec mode's looks),
// slot_effects.cpp (the manager's effects, and processes' exits), control_verbs.cpp (the control
// socket's verbs, one handler each, and the status answer), metrics.cpp (/metrics and /readyz;
// the endpoint itself is admin_server.cpp).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "control/protocol.h"
#include "control/status.h"
#include "metrics/worker_stats.h"
#include "supervisor/admin_server.h"
#include "supervisor/agent_server.h"
#include "supervisor/child.h"
#include "supervisor/control_server.h"
#include "config/options.h"
#include "supervisor/slot_manager.h"
#include "supervisor/tree_sampler.h"

namespace lbd {

class Supervisor final : private SlotEffects {
 public:
  explicit Supervisor(SupervisorOptions options);
  ~Supervisor() override;

  // Sets up and serves until stopped. Returns the process exit code: 0 after a requested stop,
  // 1 when lbd could not start or every worker failed.
  int run();

 private:
  // A verb of the control socket: its handler, and whether it is served while lbd stops.
  struct VerbHandler {
    control::Verb verb;
    bool while_stopping;
    void (Supervisor::*handle)(ClientId, const control::Request&);
  };
  static const VerbHandler kVerbs[];

  // What a slot's exited processes counted, so that the slot's counters in /metrics keep growing
  // across reloads, restarts and crashes. Indexed by slot and kept when a slot is scaled away,
  // so a slot that comes back continues where it was.
  struct SlotHistory {
    WorkerStatsSnapshot stats;
    double cpu_seconds = 0;
  };

  // --- supervisor.cpp
  Result<void> set_up();
  Result<void> start_fresh();
  Result<void> open_control(UniqueFd adopted);
  Result<void> open_admin(UniqueFd adopted);
  Result<void> open_agent(UniqueFd adopted);
  // What /readyz and the agent say; an answer of "not ready" tells the slot manager a balancer
  // knows (leaving a balancer, slot_manager.h).
  std::string readiness_for_balancer();
  std::string agent_line();
  // While lbd is leaving its balancer: whether new connections still arrive (every 100 ms).
  void watch_traffic_while_leaving(Clock::time_point now);
  Result<void> set_up_exec_mode();
  SlotManagerConfig manager_config() const;
  Result<void> open_shared_listeners();
  // "workers run as nobody:nogroup (uid 65534, gid 65534), with no capabilities", for the log.
  std::string run_as_summary() const;
  // Before a reload of lbd's own workers: the build on disk now, if it can be trusted (owned by
  // root, writable by no one else); otherwise the reload is refused, in the log and to `client`.
  bool pick_up_binary(std::optional<ClientId> client);
  void on_signal();
  void on_child_readable(Source source, uint32_t index);
  void accept_for_handoff(uint32_t listener);
  void run_timers(Clock::time_point now);
  int poll_timeout_ms() const;
  std::string listen_summary() const;
  Child* child(ProcessId id);
  bool is_program() const { return options_.program.has_value(); }
  void look_at_programs(Clock::time_point now);
  void look_soon();
  void notice_stops();
  void sample_program_trees(Clock::time_point now, bool now_even_if_sampled_lately = false);
  void sample_memory(Clock::time_point now);

  // --- slot_effects.cpp: what the slot manager asks for, and exits
  Result<pid_t> spawn(ProcessId id, uint32_t slot, int cpu, bool replacement) override;
  Result<void> swap_in(ProcessId id, uint32_t slot, std::optional<ProcessId> previous) override;
  void serving(ProcessId id) override;
  void retire(ProcessId id, DrainMode how, std::chrono::milliseconds timeout,
              std::optional<ProcessId> successor) override;
  void hurry(ProcessId id, std::chrono::milliseconds timeout) override;
  void kill(ProcessId id) override;
  void slot_added(uint32_t slot, int cpu) override;
  void set_slot_count(uint32_t count) override;
  void set_slot_state(uint32_t slot, SlotState state) override;
  void progress(ClientId client, const std::string& message) override;
  void finish_ok(ClientId client, const nlohmann::json& result) override;
  void finish_error(ClientId client, const std::string& message) override;
  void all_ready(size_t active) override;
  void stopping(bool graceful) override;
  void on_child_exit(ProcessId id);

  // --- takeover.cpp: the state record; taking over from a predecessor; upgrading
  nlohmann::json record() const;
  void save_record();
  void forget_record();
  Result<std::optional<nlohmann::json>> record_to_take_over();
  Result<void> take_over(const nlohmann::json& record, const FdTaker& taker, bool upgrading);
  Result<void> take_over_recorded(const nlohmann::json& record, const FdTaker& taker, bool upgrading);
  void take_charge();
  // What another lbd serves on now stays when this one goes: the control socket's file and the
  // programs' notify directory (after an upgrade, or when a takeover failed and the lbd before
  // keeps serving).
  void leave_shared_files();
  std::optional<UniqueFd> upgrade_channel_from_environment();
  Result<void> take_over_from_predecessor(UniqueFd channel);
  std::string why_no_upgrade() const;
  void upgrade(std::optional<ClientId> client, std::chrono::milliseconds timeout);

  // --- control_verbs.cpp
  void on_request(ClientId client, const control::Request& request);
  void verb_status(ClientId client, const control::Request& request);
  void verb_policy(ClientId client, const control::Request& request);
  void verb_stop(ClientId client, const control::Request& request);
  void verb_drain(ClientId client, const control::Request& request);
  void verb_undrain(ClientId client, const control::Request& request);
  void verb_reload(ClientId client, const control::Request& request);
  void verb_restart(ClientId client, const control::Request& request);
  void verb_scale(ClientId client, const control::Request& request);
  void verb_upgrade(ClientId client, const control::Request& request);
  void verb_send(ClientId client, const control::Request& request);
  control::StatusReport status();

  // --- metrics.cpp
  std::string metrics_text();
  WorkerStatsSnapshot slot_stats(const SlotRecord& slot);
  // /metrics answers from these, read from /proc once a second by the timers (with --admin), so
  // that a flood of scrapes costs no /proc reads and cannot slow the loop.
  struct UsageSample {
    double cpu_seconds = 0;
    uint64_t rss_bytes = 0;
    double cpu_busy = 0;  // CPU use since the sample before, as a fraction of one CPU (the agent's weight)
  };
  void sample_usage(Clock::time_point now);
  std::map<ProcessId, UsageSample> usage_samples_;
  Clock::time_point next_usage_sample_;
  Clock::time_point last_usage_sample_;

  SupervisorOptions options_;
  SharedResources shared_;  // after options_, which it refers to
  std::optional<SlotManager> slots_;
  std::map<ProcessId, std::unique_ptr<Child>> children_;  // after shared_, which they refer to
  std::vector<SlotHistory> history_;

  std::unique_ptr<TreeSampler> tree_sampler_;  // exec mode: process trees, sampled on a thread
  Clock::time_point next_look_;
  Clock::time_point next_tree_sample_;
  // Exec mode's sampling slows down while nothing happens (kTreeSampleIntervalIdle).
  uint64_t steered_seen_ = 0;
  bool trees_hold_connections_ = false;
  Clock::time_point trees_busy_until_;
  Clock::time_point next_memory_sample_;
  Clock::time_point next_log_check_;
  Clock::time_point next_control_sweep_;

  UniqueFd signal_fd_;
  std::optional<ControlServer> control_;
  std::optional<AdminServer> admin_;
  std::optional<AgentServer> agent_;
  uint64_t last_traffic_count_ = 0;     // the slot table's arrival counters, summed (leaving)
  Clock::time_point next_traffic_look_ = Clock::time_point::max();
  Clock::time_point started_at_;
  bool notified_stopping_ = false;

  // The state record (state_record.h) and taking over.
  std::string record_path_;      // empty: none kept (no control socket, --mode handoff, no pins)
  std::string no_record_why_;    // why record_path_ is empty, for the upgrade's refusal
  std::string pin_dir_;          // where the steering maps are pinned
  bool record_dirty_ = false;    // something it says may have changed
  bool record_write_failed_ = false;
  std::string last_record_;      // as last handed to the writer
  uint64_t last_record_version_ = 0;
  std::unique_ptr<StateRecordWriter> record_writer_;
  bool took_over_ = false;       // this lbd took its processes over from another
  pid_t takeover_from_ = 0;
  Clock::time_point takeover_started_;
  // Recorded processes not taken over: why, and (if it still runs) the pid and start time that
  // name it, so that take_charge() can stop it.
  struct Lost {
    ProcessId id;
    std::string why;
    pid_t pid = 0;
    uint64_t start_time = 0;
  };
  std::vector<Lost> lost_;
  Clock::time_point next_record_retry_;  // a failed write is tried again from then
  bool handed_over_ = false;     // a successor is in charge: this lbd exits and touches nothing
  bool upgrading_ = false;       // the record being written is for a successor to take over now
  uint32_t handoff_next_ = 0;
  uint64_t handoff_dropped_ = 0;
};

}  // namespace lbd
