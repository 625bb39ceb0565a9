// One process of a slot, as the supervisor's shell sees it, behind one interface whatever runs
// there: lbd's own worker (worker_child.cpp) or an exec-mode program (program_child.cpp). The
// slot manager decides when a process is started, steered to, retired and killed; a Child does
// it for its kind of process, and says when it is ready. The differences live here and nowhere
// else:
//
//                  lbd's worker                         a program (`lbd run`)
//   starts         the lbd binary, spec in its env      the operator's command, systemd's
//                                                       socket activation (fd 3..)
//   is ready       says kReady on its status channel    READY=1 on NOTIFY_SOCKET, or seen
//                                                       accepting (a probe), or --ready-delay
//   load           publishes its own, shared memory     published for it from its listener's
//                                                       queue (program_load.h)
//   drains         kDrain on its status channel         SIGTERM; lbd watches its queue empty
//   is killed      SIGKILL                              SIGKILL to its process group
//   messages       kMessage on its status channel       a line into its pipe, LBD_MESSAGE_FD
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "config/options.h"
#include "logs/log_collector.h"
#include "metrics/worker_stats.h"
#include "net/address.h"
#include "sandbox/confine.h"
#include "steering/slot_table.h"
#include "steering/steering.h"
#include "supervisor/child_process.h"
#include "supervisor/notify.h"
#include "supervisor/poller.h"
#include "supervisor/process_stats.h"
#include "supervisor/slot_manager.h"
#include "supervisor/state_record.h"
#include "supervisor/tree_sampler.h"

namespace lbd {

// What every child uses of the supervisor's: the options, the steering and its table, the
// listen addresses, the poller and (exec mode) the app's log. The supervisor owns it, and it
// outlives every child.
struct SharedResources {
  const SupervisorOptions& options;
  std::string binary;                       // lbd's own, for its workers: the path...
  UniqueFd binary_fd;                       // ...and the file they execute (open_lbd_binary())
  std::optional<Steering> steering;         // --mode bpf
  std::optional<SlotTable> plain_table;     // other modes
  std::vector<net::Address> bound;          // listen addresses with their real ports
  std::vector<uint32_t> groups;             // sockarray row per address (bpf)
  std::vector<UniqueFd> shared_listeners;   // --mode shared and handoff: one per address
  std::optional<Poller> poller;
  std::unique_ptr<logs::LogCollector> logs;  // exec mode: the app's log file
  std::optional<SeccompProgram> steering_guard;  // exec mode: built at the first start
  std::optional<NotifyDirectory> notify_dir;     // exec mode: the programs' NOTIFY_SOCKETs

  explicit SharedResources(const SupervisorOptions& o) : options(o) {}
  SlotTable& table() { return steering ? steering->table() : *plain_table; }
  // One listener per address, in the address's reuseport group, attached to the steering
  // program (--mode bpf: it enters the slot only once its process is ready).
  Result<std::vector<UniqueFd>> open_listeners();
};

// What a child reports from an event or a look.
enum class ChildNews { kNothing, kReady };

class Child {
 public:
  virtual ~Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  ProcessId id() const { return id_; }
  uint32_t slot() const { return slot_; }
  pid_t pid() const { return process_.pid(); }
  ChildProcess& process() { return process_; }

  // --- the slot manager's effects, for this process
  // Puts its listeners into the slot's place (--mode bpf; elsewhere nothing to do). On failure
  // what was swapped goes back to `previous`'s listeners.
  virtual Result<void> swap_in(Child* previous);
  // Attaches the steering program to listen address `group`'s reuseport group through this
  // process's listener (a takeover makes this build's program the group's).
  Result<void> attach_steering(uint32_t group);
  virtual void serving() = 0;
  // Its listeners stop and it finishes its connections (`how`, within `timeout`). `successor`:
  // the process that now serves its slot and takes its idle connections (kHandover).
  virtual void retire(DrainMode how, std::chrono::milliseconds timeout, Child* successor) = 0;
  virtual void hurry(std::chrono::milliseconds timeout) = 0;
  virtual void kill() = 0;
  // An operator's message (`lbctl send`): one line, checked already (common/message_text.h).
  // Never waits (docs/ARCHITECTURE.md, invariant 5): when its channel is full (it is not reading)
  // or gone, it does not get the message, and the error says why.
  virtual Result<void> deliver_message(const std::string& text) = 0;

  // --- events
  // One of its descriptors is readable (a status channel, a notify socket, an output pipe).
  virtual ChildNews on_readable(Source source, uint32_t stream) = 0;
  // Its pidfd is readable: it has exited. Called before it is reaped.
  virtual void on_exit() = 0;
  // After it is reaped, with how it ended.
  virtual void after_reap(const std::string& /*ended*/) {}
  // Exec mode looks at each program every 10 ms, less often while all are quiet (its probe,
  // queue and load; supervisor/program_load.h).
  virtual ChildNews look(Clock::time_point /*now*/) { return ChildNews::kNothing; }
  // Whether the last look found nothing moving: serving, nothing steered to it since the look
  // before, nothing in its queue.
  virtual bool quiet() const { return false; }
  // It was stopped (SIGSTOP, SIGTSTP...) or continued (SIGCONT), as the kernel tells its parent.
  virtual void stop_changed(bool /*stopped*/) {}
  // Exec mode: what the tree sampler found under it.
  virtual void apply_tree(const TreeSampler::Tree& /*tree*/) {}

  // --- handing over (state_record.h)
  // What a successor needs to take this process over: its kind, pid and start time, and its
  // descriptors, each by its number here and in the process.
  virtual nlohmann::json record() const = 0;

  // --- what status and metrics show
  // Its connections while it drains (the slot's table entry belongs to the serving one then).
  virtual uint32_t draining_connections() const = 0;
  // Resident memory: the process's, or a program's whole tree's.
  // Its resident memory: the process tree's, sampled, where the child has one (a program),
  // else its own from /proc.
  uint64_t resident_bytes() const;
  virtual std::optional<uint64_t> tree_rss() const { return std::nullopt; }
  // The descriptor its predecessor hands idle connections on (lbd's worker, when it replaces).
  virtual int handover_inbox() const { return -1; }
  // --mode handoff: where the supervisor passes it new connections.
  virtual int handoff_inbox() const { return -1; }
  const std::optional<WorkerStatsBlock>& stats() const { return stats_; }
  CpuMeter& cpu_meter() { return cpu_; }
  bool is_retiring() const { return retiring_; }

 protected:
  Child(ProcessId id, uint32_t slot, SharedResources& shared, ChildProcess process)
      : id_(id), slot_(slot), shared_(shared), process_(std::move(process)) {}
  // Shuts its listeners down (its queued and half-open connections migrate to active slots)
  // and drops our copies.
  void stop_listening();

  // The record's common part, and the listeners as (ours, the process's) numbers.
  nlohmann::json record_base(const char* kind) const;

  const ProcessId id_;
  const uint32_t slot_;
  SharedResources& shared_;
  ChildProcess process_;
  std::vector<UniqueFd> listeners_;  // our copies of its listeners (bpf, reuseport)
  std::vector<int> child_listener_fds_;  // the same listeners' numbers in the process
  uint64_t start_time_ = 0;              // process_start_time(pid), for the record
  std::optional<WorkerStatsBlock> stats_;
  CpuMeter cpu_;
  bool retiring_ = false;
};

// Starts lbd's own worker for a slot (worker_child.cpp). `replacement`: it will take the place of
// the slot's serving worker and receive its idle connections.
Result<std::unique_ptr<Child>> start_worker_child(ProcessId id, uint32_t slot, int cpu, bool replacement,
                                                  SharedResources& shared);

// Starts the operator's program for a slot (program_child.cpp). `workers`: LB_WORKERS.
Result<std::unique_ptr<Child>> start_program_child(ProcessId id, uint32_t slot, int cpu, uint32_t workers,
                                                   SharedResources& shared);

// Takes over a process a predecessor ran, from its part of the state record: checks that the
// pid is still that process (its start time), takes its descriptors (`taker`), and watches them.
// A process the record does not describe well enough is an error: the caller lets it go.
Result<std::unique_ptr<Child>> adopt_child(const nlohmann::json& record, const ProcessRecord& process,
                                           const FdTaker& taker, SharedResources& shared);
Result<std::unique_ptr<Child>> adopt_worker_child(const nlohmann::json& record, const ProcessRecord& process,
                                                  ChildProcess owned, const FdTaker& taker, SharedResources& shared);
Result<std::unique_ptr<Child>> adopt_program_child(const nlohmann::json& record, const ProcessRecord& process,
                                                   ChildProcess owned, const FdTaker& taker, SharedResources& shared);

}  // namespace lbd
