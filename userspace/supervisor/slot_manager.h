// The slots and their processes, as a state machine with no I/O.
//
// A slot is a worker's stable place (its index is what X-Worker says and what the steering
// program chooses). A slot holds at most one *serving* process (the one steered to), at most one
// *replacement* starting to take its place, and any number of *retiring* processes finishing
// their connections. Replacing is always: start the new process, wait until it reports ready,
// swap its listener into the slot, then retire the old one, so there are never fewer serving
// workers than before (docs/ARCHITECTURE.md, invariant 3).
//
// Events come in as calls (a process is ready, a process exited, time passed, an operator asked
// for something, a memory sample); what must happen goes out through SlotEffects (spawn, swap a
// listener into steering, retire, kill, set a slot's state, reply to a client). The manager never
// reads a clock, a file or a socket: every call carries `now`, and the supervisor's shell
// (supervisor.cpp) does the I/O. So every sequence (a reload whose new worker dies, a crash
// during a reload, scale-down while draining, the crash-loop guard, memory backoff) is unit-tested
// with a fake SlotEffects in microseconds (tests/unit/slot_manager_test.cpp).
//
// Its whole state is plain data, saved to JSON and restored by a successor (save/restore).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "control/protocol.h"
#include "supervisor/restart_policy.h"
#include "worker/channel.h"

namespace lbd {

using ProcessId = uint32_t;  // unique within one lbd, kept across a supervisor upgrade
using ClientId = uint32_t;   // one control-socket connection
using Clock = std::chrono::steady_clock;

enum class ProcessRole { kStarting, kServing, kRetiring };

// The slot states the steering program reads (bpf/steer_abi.h, LBD_SLOT_*), as the manager
// decides them.
enum class SlotState : uint32_t { kEmpty = 0, kStarting = 1, kActive = 2, kDraining = 3 };

struct SlotManagerConfig {
  uint32_t workers = 1;
  std::vector<int> cpus = {0};  // slot i runs on cpus[i % size] when pinned
  bool pin = true;
  unsigned max_restarts = 5;
  std::chrono::milliseconds restart_window{60'000};
  // How long a draining worker may finish its connections, on drain, reload and graceful stop.
  std::chrono::milliseconds shutdown_timeout{10'000};
  // How long after that a draining process that has not exited is killed: lbd's own worker closes
  // what is left at its timeout and needs a moment to exit; a program gets SIGKILL at the timeout
  // itself (--kill-timeout means what it says).
  std::chrono::milliseconds kill_grace{2'000};
  // How long a new process may take to become ready (a reload may say otherwise).
  std::chrono::milliseconds ready_timeout{30'000};
  uint64_t max_memory = 0;  // bytes; 0: no limit
  // What a reload runs, for its first progress line: the lbd binary, or the program.
  std::string reload_source;
  // Leaving a balancer (docs/ARCHITECTURE.md, "Behind a balancer"): on `drain --all` and a
  // graceful stop, how long the workers keep serving while lbd reports itself not ready, so that
  // the balancer in front stops sending before anything closes. 0: drain at once.
  std::chrono::milliseconds drain_grace{0};
  // The grace ends early once a balancer has been told (an agent check or a /readyz probe answered
  // "not ready") and then no new connection arrived for this long.
  std::chrono::milliseconds drain_quiet{1'000};
};

// What the manager asks of the world. The supervisor's shell carries these out; tests record
// them. Calls happen in the order the effects must happen, and an effect never calls back into
// the manager (the shell reports what follows as a later event).
class SlotEffects {
 public:
  virtual ~SlotEffects() = default;

  // Starts a process for `slot`. A replacement will take the place of the slot's serving
  // process (lbd's worker then gets an inbox for the connections its predecessor hands over).
  virtual Result<pid_t> spawn(ProcessId id, uint32_t slot, int cpu, bool replacement) = 0;
  // Puts the process's listeners into the slot's place in steering; for a replacement this is
  // the swap. On error nothing changed (what was swapped is put back): it must not serve.
  virtual Result<void> swap_in(ProcessId id, uint32_t slot, std::optional<ProcessId> previous) = 0;
  // It owns the slot now, and its predecessor (if any) has been told to retire: lbd's worker is
  // told so (it publishes the slot's load from now on); a program's load is published for it at
  // once.
  virtual void serving(ProcessId id) = 0;
  // Already out of steering: shut its listeners so the kernel migrates what is queued, and tell
  // it to finish (`how`, within `timeout`); `successor` receives its idle connections.
  virtual void retire(ProcessId id, DrainMode how, std::chrono::milliseconds timeout,
                      std::optional<ProcessId> successor) = 0;
  // lbd is stopping: a process already retiring closes its idle connections now.
  virtual void hurry(ProcessId id, std::chrono::milliseconds timeout) = 0;
  virtual void kill(ProcessId id) = 0;

  virtual void slot_added(uint32_t slot, int cpu) = 0;
  virtual void set_slot_count(uint32_t count) = 0;
  virtual void set_slot_state(uint32_t slot, SlotState state) = 0;

  // Replies on the control socket; a client that has gone is skipped.
  virtual void progress(ClientId client, const std::string& message) = 0;
  virtual void finish_ok(ClientId client, const nlohmann::json& result) = 0;
  virtual void finish_error(ClientId client, const std::string& message) = 0;

  // Every wanted slot serves (once per run): `active` workers.
  virtual void all_ready(size_t active) = 0;
  // lbd stops (called on each stop request; `graceful` false the second time).
  virtual void stopping(bool graceful) = 0;
};

struct ProcessRecord {
  ProcessId id = 0;
  pid_t pid = 0;
  uint32_t slot = 0;
  ProcessRole role = ProcessRole::kStarting;
  Clock::time_point started_at;
  std::optional<Clock::time_point> ready_by;  // starting: killed if not ready by then
  std::optional<Clock::time_point> kill_at;   // retiring: killed if still running by then
  bool for_operation = false;  // started by a reload/restart: its readiness completes it
  bool timed_out = false;      // killed for not being ready in time
  bool killed = false;         // SIGKILLed: it must never become ready or serve
};

struct SlotRecord {
  uint32_t index = 0;
  int cpu = -1;
  bool wanted = true;     // false: drained by the operator, or scaled away
  bool failed = false;    // crashed too often; left down until undrain/reload
  bool removing = false;  // scaled away: the slot goes once its processes have exited
  std::optional<ProcessRecord> serving;
  std::optional<ProcessRecord> replacement;
  std::vector<ProcessRecord> retiring;
  RestartPolicy restarts;
  std::optional<Clock::time_point> restart_at;
  unsigned restart_count = 0;  // crash restarts of this slot since it was (re)started by hand
  // --max-memory: replacements back off when they come in quick succession (a program that is
  // over the limit as soon as it starts must not be replaced every second).
  RestartPolicy memory_replacements{std::numeric_limits<unsigned>::max(), std::chrono::minutes(10),
                                    std::chrono::seconds(2), std::chrono::minutes(5)};
  Clock::time_point memory_check_after;
  std::chrono::milliseconds memory_quiet{0};  // a new process is not looked at before this age

  size_t process_count() const { return (serving ? 1 : 0) + (replacement ? 1 : 0) + retiring.size(); }
  bool has_process() const { return process_count() > 0; }
  // Serving and steered to.
  bool active() const { return wanted && serving && serving->role == ProcessRole::kServing; }
};

class SlotManager {
 public:
  SlotManager(SlotManagerConfig config, SlotEffects& effects);

  // --- start and stop
  // Creates the configured slots and starts a process in each. An error: lbd cannot start
  // (the caller kills what did start, kill_all()).
  Result<void> start(Clock::time_point now);
  void stop(bool graceful, Clock::time_point now);
  void kill_all();

  // --- what the processes say
  void on_ready(ProcessId id, Clock::time_point now);
  // `ended` says how, for the log: "exited with status 0", "was killed by signal 9 (SIGKILL)".
  void on_exit(ProcessId id, const std::string& ended, Clock::time_point now);
  // --max-memory: the serving process's resident memory (its whole tree, for a program).
  void on_memory_sample(ProcessId id, uint64_t rss_bytes, Clock::time_point now);

  // --- leaving a balancer (SlotManagerConfig::drain_grace)
  // True while lbd says it is not ready but its workers still serve, waiting for the balancer.
  bool leaving() const { return leaving_.has_value(); }
  // A balancer was just answered "not ready" (the shell calls this for every such answer).
  void on_balancer_told(Clock::time_point now);
  // New connections (or requests) arrived since the shell last looked.
  void on_traffic(Clock::time_point now);

  // --- time: restarts, start and drain deadlines, the stop deadline
  void tick(Clock::time_point now);
  std::optional<Clock::time_point> next_deadline() const;

  // --- what operators ask for (lbctl, SIGHUP). Each answers the client through the effects,
  // at once or when the operation ends.
  void drain(ClientId client, const control::Request& request, Clock::time_point now);
  void undrain(ClientId client, const control::Request& request, Clock::time_point now);
  // client none: SIGHUP. timeout none: the configured ready timeout.
  void reload(std::optional<ClientId> client, uint32_t parallel,
              std::optional<std::chrono::milliseconds> timeout, Clock::time_point now);
  void restart(ClientId client, uint32_t slot, std::optional<std::chrono::milliseconds> timeout,
               Clock::time_point now);
  void scale(ClientId client, uint32_t workers, Clock::time_point now);

  // --- what the shell reads
  const std::vector<SlotRecord>& slots() const { return slots_; }
  const ProcessRecord* find(ProcessId id) const;
  std::vector<const ProcessRecord*> processes() const;
  bool stopping() const { return stopping_; }
  bool finished() const;    // stopping, and every process has exited
  bool all_failed() const;  // every slot crashed too often: lbd exits
  std::optional<control::Verb> operation() const;
  // "no such slot: 7 (slots are 0-3)" when `index` names no slot (or one being scaled away);
  // empty when it does. What every verb that names a slot answers.
  std::string no_such_slot(uint32_t index) const;
  // Why /readyz says 503, or empty when some worker is active.
  std::string not_ready_because() const;
  // Some slot's worker is serving and steered to.
  bool has_active_slot() const;
  uint64_t reloads() const { return reloads_; }
  uint64_t reload_failures() const { return reload_failures_; }
  uint64_t memory_replacements() const { return memory_replacements_; }
  // Crash restarts of a slot over lbd's life (kept when a slot is scaled away and comes back).
  uint64_t total_restarts(uint32_t slot) const { return slot < total_restarts_.size() ? total_restarts_[slot] : 0; }

  // --- handing the state to a successor (an upgrade) or to the next lbd (after a crash)
  nlohmann::json save() const;
  // Restores what save() wrote. Operations in progress are not part of it.
  static Result<SlotManager> restore(const nlohmann::json& saved, SlotManagerConfig config,
                                     SlotEffects& effects);
  // After restore: tells the effects every slot's CPU and state, as start() would have.
  void announce_restored_slots();
  // A new supervisor is in charge: it says "ready" (all_ready) once every slot serves again,
  // as a starting one does.
  void announce_ready_again();
  // After a takeover: every slot that is wanted and has nothing to serve it, nor a restart coming
  // (its lbd died while stopping, say), starts one now.
  void resume_after_takeover(Clock::time_point now);
  // Kills a process (it will never become ready or serve); its exit follows as an event.
  void kill(ProcessId id);

 private:
  // A long request (reload, restart, drain --wait, undrain, scale) in progress. One at a time.
  struct Operation {
    control::Verb verb = control::Verb::kReload;
    std::optional<ClientId> client;  // none when started by SIGHUP
    std::deque<uint32_t> pending;    // reload: slots still to replace, in order
    std::set<uint32_t> active;       // slots being replaced, started, or drained
    uint32_t parallel = 1;
    std::chrono::milliseconds timeout{30'000};
    unsigned succeeded = 0;
    std::string failure;  // the first failure; non-empty means the operation failed
    Clock::time_point started_at;
  };

  SlotRecord& add_slot();
  Result<ProcessRecord> spawn(SlotRecord& slot, bool replacement, std::chrono::milliseconds ready_timeout,
                              Clock::time_point now);
  Result<void> start_serving(SlotRecord& slot, Clock::time_point now);
  Result<void> start_replacement(SlotRecord& slot, std::chrono::milliseconds ready_timeout, Clock::time_point now);
  void retire(SlotRecord& slot, ProcessRecord process, DrainMode how, std::chrono::milliseconds timeout,
              Clock::time_point now);
  void kill_now(ProcessRecord& process);
  void on_crash(SlotRecord& slot, pid_t pid, bool was_ready, const std::string& ended, Clock::time_point now);
  void update_state(SlotRecord& slot);
  void remove_scaled_away_slots();
  void check_all_ready();
  void drain_slots(const std::vector<uint32_t>& targets, std::chrono::milliseconds timeout, Clock::time_point now);

  bool busy(ClientId client);
  bool check_slot(ClientId client, uint32_t index);
  void begin_operation(control::Verb verb, std::optional<ClientId> client, Clock::time_point now);
  void advance_operation(Clock::time_point now);
  void operation_progress(const std::string& message);
  void operation_slot_failed(uint32_t slot, const std::string& why);
  void finish_operation(Clock::time_point now);

  // Leaving a balancer: what waits for the grace to end (a drain --all or a stop), and what the
  // balancer has been seen to do since it began.
  struct Leaving {
    bool for_stop = false;            // a graceful stop; else a drain --all
    std::optional<ClientId> client;   // the drain's client
    control::Request request;         // the drain request (its timeout and --wait)
    Clock::time_point started_at;
    Clock::time_point ends_by;        // the grace's end at the latest
    std::optional<Clock::time_point> told_at;  // a balancer was first answered "not ready"
    Clock::time_point last_traffic;   // a new connection last arrived
  };
  // Starts the grace; false when there is none to give (no grace configured, nothing serving).
  bool begin_leaving(bool for_stop, std::optional<ClientId> client, const control::Request& request,
                     Clock::time_point now);
  // When the grace ends, given what was seen; tick() acts on it.
  Clock::time_point leaving_ends(const Leaving& leaving) const;
  void finish_leaving(Clock::time_point now);
  // drain as asked, at once (after the grace, for --all).
  void drain_now(ClientId client, const control::Request& request, Clock::time_point now);
  void retire_all_for_stop(Clock::time_point now);

  SlotRecord* slot_at(uint32_t index);
  // The process and where it sits: serving, replacement, or retiring[i].
  struct Place {
    SlotRecord* slot = nullptr;
    ProcessRecord* process = nullptr;
  };
  Place locate(ProcessId id);

  SlotManagerConfig config_;
  SlotEffects* effects_;
  std::vector<SlotRecord> slots_;
  std::vector<uint64_t> total_restarts_;
  ProcessId next_process_id_ = 1;
  std::optional<Operation> op_;
  std::optional<Leaving> leaving_;
  bool stopping_ = false;
  bool announced_ready_ = false;
  Clock::time_point stop_deadline_;
  uint64_t reloads_ = 0;
  uint64_t reload_failures_ = 0;
  uint64_t memory_replacements_ = 0;
};

const char* process_role_name(ProcessRole role);

}  // namespace lbd
