// A slot's processes over their life: started, ready, swapped in, retired, exited or crashed.
// See supervisor.h for the model.
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <algorithm>

#include "common/log.h"
#include "net/fd_passing.h"
#include "net/listener.h"
#include "supervisor/notify.h"
#include "supervisor/supervisor.h"
#include "supervisor/worker_process.h"

namespace lbd {

namespace {

// How long a worker may take from exec to "READY=1" when it is not part of a reload (which has
// its own timeout).
constexpr std::chrono::seconds kStartTimeout{30};
// A retiring worker is killed this long after its drain timeout if it has not exited by then.
constexpr std::chrono::seconds kKillGrace{2};

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = sigabbrev_np(WTERMSIG(status));
    return "was killed by signal " + std::to_string(WTERMSIG(status)) +
           (name ? std::string(" (SIG") + name + ")" : std::string());
  }
  return "ended (status " + std::to_string(status) + ")";
}

Result<std::pair<UniqueFd, UniqueFd>> seqpacket_pair() {
  int pair[2];
  // Non-blocking both ways: the supervisor never waits on a worker, and the worker drives its
  // end from its ring.
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) != 0) {
    return Error::from_errno("socketpair");
  }
  return std::pair{UniqueFd(pair[0]), UniqueFd(pair[1])};
}

}  // namespace

Supervisor::Slot& Supervisor::add_slot() {
  const auto index = static_cast<uint32_t>(slots_.size());
  auto slot = std::make_unique<Slot>(Slot{
      index, options_.pin ? options_.cpus[index % options_.cpus.size()] : -1, true, false, false,
      nullptr, nullptr, {}, RestartPolicy(options_.max_restarts, options_.restart_window), {}, 0});
  store_field(table().slot(index).cpu, slot->cpu >= 0 ? static_cast<uint32_t>(slot->cpu) : ~0u);
  slots_.push_back(std::move(slot));
  update_state(*slots_.back());
  if (steering_) steering_->set_slot_count(static_cast<uint32_t>(slots_.size()));
  return *slots_.back();
}

std::optional<Supervisor::Slot*> Supervisor::slot_at(uint32_t index) {
  if (index >= slots_.size()) return std::nullopt;
  return slots_[index].get();
}

bool Supervisor::has_process(const Slot& slot) const {
  return slot.serving || slot.replacement || !slot.retiring.empty();
}

Supervisor::WorkerProcess* Supervisor::find_process(uint32_t id, Slot** slot_out) {
  for (auto& slot : slots_) {
    for (WorkerProcess* p : {slot->serving.get(), slot->replacement.get()}) {
      if (p && p->id == id) {
        *slot_out = slot.get();
        return p;
      }
    }
    for (auto& p : slot->retiring) {
      if (p->id == id) {
        *slot_out = slot.get();
        return p.get();
      }
    }
  }
  return nullptr;
}

// --- starting -------------------------------------------------------------------------------

Result<std::unique_ptr<Supervisor::WorkerProcess>> Supervisor::spawn(Slot& slot, bool with_handover_inbox) {
  auto p = std::make_unique<WorkerProcess>();
  p->id = next_process_id_++;
  p->slot = slot.index;
  if (is_program()) {
    LBD_TRY(launch_program(slot, *p));
    spdlog::debug("worker {}: started pid {}", slot.index, p->pid);
    return p;
  }

  WorkerLaunch launch;
  launch.binary = binary_;
  launch.title = "lbd: worker " + std::to_string(slot.index);
  launch.cpu = slot.cpu;
  launch.spec.slot = slot.index;
  launch.spec.cpu = slot.cpu;
  launch.spec.http = options_.http;
  launch.spec.idle_timeout = options_.idle_timeout;
  launch.spec.drain_timeout = options_.shutdown_timeout;
  launch.spec.max_connections = options_.max_connections;
  launch.spec.log_level = options_.log_level;
  launch.spec.reconcile_queue = options_.mode == Mode::kBpf;
  launch.spec.publish_at_start = !with_handover_inbox;  // a replacement waits for "SERVING"
  launch.slot_table_fd = table().fd();
  auto stats = WorkerStatsBlock::create();
  if (!stats) return stats.error();
  p->stats.emplace(std::move(*stats));
  launch.stats_fd = p->stats->fd();

  auto status = seqpacket_pair();
  if (!status) return status.error().wrap("status channel");
  launch.status_fd = status->second.get();

  std::optional<std::pair<UniqueFd, UniqueFd>> handoff, handover;
  switch (options_.mode) {
    case Mode::kBpf:
    case Mode::kReuseport:
      LBD_TRY(open_listeners(*p, launch.listener_fds));
      break;
    case Mode::kShared:
      for (const auto& fd : shared_listeners_) launch.listener_fds.push_back(fd.get());
      break;
    case Mode::kHandoff: {
      launch.spec.accept_mode = AcceptMode::kHandoff;
      auto pair = seqpacket_pair();
      if (!pair) return pair.error().wrap("handoff channel");
      handoff.emplace(std::move(*pair));
      launch.handoff_fd = handoff->second.get();
      break;
    }
  }
  if (with_handover_inbox) {
    auto pair = seqpacket_pair();
    if (!pair) return pair.error().wrap("handover channel");
    handover.emplace(std::move(*pair));
    launch.handover_in_fd = handover->second.get();
  }

  auto pid = spawn_worker(launch);
  if (!pid) return pid.error();
  p->pid = *pid;
  p->status = std::move(status->first);
  if (handoff) p->handoff = std::move(handoff->first);
  if (handover) p->handover_sender = std::move(handover->first);
  p->started_at = Clock::now();
  p->ready_by = p->started_at + kStartTimeout;
  LBD_TRY(poller_->watch(p->status.get(), Source::kStatus, p->id));
  spdlog::debug("worker {}: started pid {}", slot.index, p->pid);
  return p;
}

Result<void> Supervisor::start_serving(Slot& slot) {
  auto p = spawn(slot, false);
  if (!p) return p.error();
  slot.serving = std::move(*p);
  update_state(slot);
  return {};
}

Result<void> Supervisor::start_replacement(Slot& slot, std::chrono::milliseconds ready_timeout) {
  auto p = spawn(slot, true);
  if (!p) return p.error();
  (*p)->ready_by = (*p)->started_at + ready_timeout;
  (*p)->for_operation = true;
  slot.replacement = std::move(*p);
  return {};
}

// --- messages from workers --------------------------------------------------------------------

void Supervisor::on_status(uint32_t process_id) {
  Slot* slot = nullptr;
  WorkerProcess* p = find_process(process_id, &slot);
  if (!p || !p->status) return;
  while (true) {
    auto message = net::receive_message(p->status.get());
    if (!message) {
      if (message.error().code() == std::errc::resource_unavailable_try_again) return;
    }
    if (!message || message->end) {  // the worker exited; SIGCHLD says how
      poller_->unwatch(p->status.get());
      p->status.reset();
      return;
    }
    const std::string& text = message->text;
    if (text == "READY=1") {
      on_ready(*slot, *p);
      if (!find_process(process_id, &slot)) return;
    } else if (text.starts_with("OPEN=")) {
      p->reported_open = static_cast<uint32_t>(atoi(text.c_str() + 5));
    } else if (text.starts_with("EXEC_FAILED=")) {
      int err = atoi(text.c_str() + strlen("EXEC_FAILED="));
      spdlog::error("worker {}: cannot execute {}: {}", slot->index, binary_, strerror(err));
    }
  }
}

void Supervisor::on_ready(Slot& slot, WorkerProcess& p) {
  if (p.role != Role::kStarting || p.killed) return;
  p.probe.reset();  // its listener leaves the probe place, so that it can go into the slot
  if (steering_) {
    for (uint32_t g = 0; g < groups_.size(); g++) {
      // Into the slot; for a replacement this is the swap: from now on the slot's connections
      // go to the new worker.
      if (auto ok = steering_->set_socket(groups_[g], slot.index, p.listeners[g].get()); !ok) {
        // A worker that cannot be steered to must not take the slot: put back what was
        // swapped, and let it go (its exit is reported like a failure to start).
        spdlog::error("worker {}: {}; stopping pid {}", slot.index, ok.error().message(), p.pid);
        WorkerProcess* old = &p == slot.replacement.get() ? slot.serving.get() : nullptr;
        for (uint32_t back = 0; old && back < g && back < old->listeners.size(); back++) {
          (void)steering_->set_socket(groups_[back], slot.index, old->listeners[back].get());
        }
        kill_now(p);
        return;
      }
    }
  }
  p.role = Role::kServing;
  p.ready_by.reset();
  p.ready_at.reset();
  // It owns the slot's load entry now (a replacement waited for this; the worker it replaces
  // stops writing the entry when it is told to drain, just below). A program's entry is ours to
  // write, once it has the slot (below).
  if (!is_program() && (!p.status || !net::send_message(p.status.get(), "SERVING"))) {
    spdlog::warn("worker {}: cannot tell pid {} that it serves", slot.index, p.pid);
  }
  const std::string cpu = slot.cpu >= 0 ? std::to_string(slot.cpu) : std::string("any");
  if (&p == slot.replacement.get()) {
    std::unique_ptr<WorkerProcess> old = std::move(slot.serving);
    slot.serving = std::move(slot.replacement);
    if (old) {
      spdlog::info("worker {} ready: pid {}, cpu {}; replaces pid {}", slot.index, p.pid, cpu, old->pid);
      retire(slot, std::move(old), Retire::kHandover, options_.shutdown_timeout);
    } else {
      spdlog::info("worker {} ready: pid {}, cpu {}", slot.index, p.pid, cpu);
    }
    p.handover_sender.reset();  // the old worker holds its own copy now
  } else {
    spdlog::info("worker {} ready: pid {}, cpu {}", slot.index, p.pid, cpu);
  }
  if (is_program()) publish_program_load(slot);  // at once: not stalled until the next look
  update_state(slot);
  if (p.for_operation && op_ && op_->active.count(slot.index) &&
      (op_->verb == control::Verb::kReload || op_->verb == control::Verb::kRestart)) {
    op_->active.erase(slot.index);
    op_->succeeded++;
    operation_progress("slot " + std::to_string(slot.index) + ": pid " + std::to_string(p.pid) + " serving");
  }
  check_all_ready();
}

void Supervisor::check_all_ready() {
  if (announced_ready_) return;
  for (const auto& slot : slots_) {
    if (slot->failed) continue;
    if (!slot->serving || slot->serving->role != Role::kServing) return;
  }
  auto active = std::count_if(slots_.begin(), slots_.end(), [](const auto& s) { return !s->failed; });
  if (active == 0) return;  // every worker failed: lbd says so and exits (run())
  announced_ready_ = true;
  spdlog::info("ready: {} workers serving {} (mode {}, policy {})", active, listen_summary(),
               mode_name(options_.mode),
               policy_name(steering_ ? steering_->policy() : options_.steering.policy));
  notify_service_manager("READY=1");
}

// --- retiring ---------------------------------------------------------------------------------

// Shuts the process's listeners down (its queued and half-open connections migrate to active
// slots) and drops our copies.
void Supervisor::stop_listening(WorkerProcess& p) {
  for (UniqueFd& fd : p.listeners) {
    if (auto ok = net::stop_listening(fd.get()); !ok) {
      spdlog::warn("worker {}: {}", p.slot, ok.error().message());
    }
  }
  p.listeners.clear();
}

void Supervisor::retire(Slot& slot, std::unique_ptr<WorkerProcess> p, Retire how,
                        std::chrono::milliseconds timeout) {
  if (!p) return;
  p->role = Role::kRetiring;
  p->ready_by.reset();
  p->probe.reset();
  update_state(slot);  // out of steering before its listener goes
  if (is_program()) {
    // The program stops its own listener on SIGTERM (tell_to_drain). We keep our copy while
    // its queue empties (watch_retiring_queues): not shutdown() at once, since its accept would
    // fail with EINVAL, which many programs treat as fatal; shut down only if the queue stops
    // moving (the program is stopped, stuck, or has closed its own copy).
    p->queue_moved_at = Clock::now();
  } else {
    stop_listening(*p);
  }
  p->handoff.reset();  // --mode handoff: no new connections for it
  const int successor = how == Retire::kHandover && slot.serving && slot.serving->handover_sender
                            ? slot.serving->handover_sender.get()
                            : -1;
  tell_to_drain(*p, how, timeout, successor);
  p->kill_at = Clock::now() + timeout + kKillGrace;
  slot.retiring.push_back(std::move(p));
  update_state(slot);
}

void Supervisor::tell_to_drain(WorkerProcess& p, Retire how, std::chrono::milliseconds timeout,
                               int successor_inbox) {
  const char* mode = how == Retire::kHandover ? "handover" : how == Retire::kDrain ? "drain" : "stop";
  const std::string command = fmt::format("DRAIN {} {}", mode, timeout.count());
  if (!p.status || !net::send_message(p.status.get(), command, successor_inbox)) {
    kill(p.pid, SIGTERM);  // no channel: the signal means the same, without a handover
  }
}

void Supervisor::kill_now(WorkerProcess& p) {
  p.killed = true;
  p.probe.reset();
  // A program's process group: what it forked goes too. (lbd's workers fork nothing.)
  kill(is_program() ? -p.pid : p.pid, SIGKILL);
}

// --max-memory: a worker past the limit is replaced like `lbctl restart`: the new one starts,
// and only once it is ready is the old one drained, so no request fails and no fewer workers
// serve meanwhile. Checked every second; for a program, over its whole process tree.
void Supervisor::check_memory(Clock::time_point now) {
  if (!options_.max_memory || stopping_ || now < next_memory_check_) return;
  next_memory_check_ = now + std::chrono::seconds(1);
  for (auto& slot : slots_) {
    WorkerProcess* p = slot->serving.get();
    // Not during a reload or restart, which replaces workers anyway (and would skip a slot
    // whose replacement is already starting).
    if (!p || p->role != Role::kServing || slot->replacement || !slot->wanted || op_) continue;
    uint64_t rss = p->tree_rss;
    if (!is_program()) {
      auto usage = read_process_usage(p->pid);
      rss = usage ? usage->rss_bytes : 0;
    }
    // After a replacement the slot's next look waits 2 s, then 4, 8 ... up to 5 min while
    // replacements keep coming within 10 minutes of each other; counted from the decision and
    // from the start of the process that serves now (a slow start must not eat the wait).
    if (rss <= options_.max_memory || now < slot->memory_check_after || now - p->started_at < slot->memory_quiet) {
      continue;
    }
    const auto quiet = *slot->memory_replacements.on_crash(now);
    slot->memory_check_after = now + quiet;
    slot->memory_quiet = quiet;
    const unsigned recent = slot->memory_replacements.recent_crashes(now);
    const double age_s = std::chrono::duration<double>(now - p->started_at).count();
    if (recent > 1) {
      spdlog::warn("worker {} (pid {}) uses {} MiB, over --max-memory {} MiB {:.0f} s after it started; replacing "
                   "it ({} replacements in 10 min; next look in {} s: is the limit below what the program needs?)",
                   slot->index, p->pid, rss >> 20, options_.max_memory >> 20, age_s, recent,
                   std::chrono::duration_cast<std::chrono::seconds>(quiet).count());
    } else {
      spdlog::warn("worker {} (pid {}) uses {} MiB, over --max-memory {} MiB; replacing it", slot->index, p->pid,
                   rss >> 20, options_.max_memory >> 20);
    }
    if (auto ok = start_replacement(*slot, ready_timeout()); !ok) {
      spdlog::error("worker {}: cannot start its replacement: {}", slot->index, ok.error().message());
      continue;
    }
    slot->replacement->for_operation = false;
    memory_replacements_++;
  }
}

// --- exits ------------------------------------------------------------------------------------

void Supervisor::reap_children() {
  while (true) {
    int status = 0;
    rusage usage{};  // the child's CPU time, all of it: /proc forgets it once it is reaped
    pid_t pid = wait4(-1, &status, WNOHANG, &usage);
    if (pid <= 0) break;
    const double cpu_seconds = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                               static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
    for (auto& slot : slots_) {
      WorkerProcess* found = nullptr;
      for (WorkerProcess* p : {slot->serving.get(), slot->replacement.get()}) {
        if (p && p->pid == pid) found = p;
      }
      for (auto& p : slot->retiring) {
        if (p->pid == pid) found = p.get();
      }
      if (found) {
        on_exit(*slot, *found, status, cpu_seconds);
        break;
      }
    }
  }
  remove_scaled_away_slots();
}

void Supervisor::on_exit(Slot& slot, WorkerProcess& p, int wait_status, double cpu_seconds) {
  const pid_t pid = p.pid;
  p.probe.reset();
  if (p.status) poller_->unwatch(p.status.get());
  if (is_program()) {
    close_output(p);
    logs_->note(slot.index, "pid " + std::to_string(pid) + " " + describe_exit(wait_status));
    // What it left running in its process group goes with it: asked to finish, if it was
    // draining (its children may still be answering); at once, if it crashed.
    const bool retiring_now = std::any_of(slot.retiring.begin(), slot.retiring.end(),
                                          [&](const auto& r) { return r.get() == &p; });
    kill(-pid, retiring_now ? SIGTERM : SIGKILL);
  }
  stop_listening(p);  // a dead worker's queue moves on now, not when we get round to it
  fold_into_history(slot, p, cpu_seconds);

  auto retiring = std::find_if(slot.retiring.begin(), slot.retiring.end(),
                               [&](const auto& r) { return r.get() == &p; });
  if (retiring != slot.retiring.end()) {
    spdlog::info("worker {} (pid {}) {}", slot.index, pid, describe_exit(wait_status));
    slot.retiring.erase(retiring);
  } else if (&p == slot.replacement.get()) {
    const std::string ended =
        p.timed_out ? "was not ready within " +
                          fmt::format("{:.1f}", std::chrono::duration<double>(Clock::now() - p.started_at).count()) +
                          " s (killed)"
                    : describe_exit(wait_status) + " before it was ready";
    const std::string why = "new worker pid " + std::to_string(pid) + " " + ended + "; pid " +
                            (slot.serving ? std::to_string(slot.serving->pid) : std::string("-")) +
                            " keeps serving";
    spdlog::error("worker {}: {}", slot.index, why);
    slot.replacement.reset();
    operation_slot_failed(slot.index, "slot " + std::to_string(slot.index) + ": " + why);
  } else if (&p == slot.serving.get()) {
    const bool was_ready = p.role == Role::kServing;
    if (p.for_operation && !was_ready) {
      operation_slot_failed(slot.index, "slot " + std::to_string(slot.index) + ": new worker pid " +
                                            std::to_string(pid) + " " +
                                            (p.timed_out ? std::string("was not ready in time (killed)")
                                                         : describe_exit(wait_status) + " before it was ready"));
    }
    slot.serving.reset();
    on_crash(slot, pid, was_ready, wait_status);
  }
  update_state(slot);
}

// The process's final numbers join its slot's history, in the same turn of the loop that forgets
// the process: a scrape sees them in one place or the other, never in both or neither.
void Supervisor::fold_into_history(const Slot& slot, const WorkerProcess& p, double cpu_seconds) {
  SlotHistory& history = history_[slot.index];
  if (p.stats) history.stats += p.stats->read();
  history.cpu_seconds += cpu_seconds;
}

void Supervisor::on_crash(Slot& slot, pid_t pid, bool was_ready, int wait_status) {
  const char* what = was_ready ? "crashed" : "failed to start";
  if (stopping_) {
    spdlog::info("worker {} (pid {}) {}", slot.index, pid, describe_exit(wait_status));
    return;
  }
  if (slot.replacement) {
    // A reload was replacing it anyway: the replacement takes the slot when it is ready.
    spdlog::warn("worker {} (pid {}) {}: {}; its replacement pid {} takes over", slot.index, pid,
                 what, describe_exit(wait_status), slot.replacement->pid);
    slot.serving = std::move(slot.replacement);
    slot.serving->handover_sender.reset();
    return;
  }
  if (!slot.wanted) {
    spdlog::warn("worker {} (pid {}) {}: {}", slot.index, pid, what, describe_exit(wait_status));
    return;
  }
  auto delay = slot.restarts.on_crash(Clock::now());
  if (!delay) {
    slot.failed = true;
    spdlog::error("worker {} (pid {}) {}: {}; it crashed {} times within {} s, not restarting it",
                  slot.index, pid, what, describe_exit(wait_status), options_.max_restarts,
                  options_.restart_window.count() / 1000.0);
    check_all_ready();
    return;
  }
  spdlog::warn("worker {} (pid {}) {}: {}; restarting in {} ms", slot.index, pid, what,
               describe_exit(wait_status), delay->count());
  slot.restart_at = Clock::now() + *delay;
}

// The slot's state in the shared table, derived from its processes: the steering program
// chooses only ACTIVE slots.
void Supervisor::update_state(Slot& slot) {
  uint32_t state = LBD_SLOT_EMPTY;
  if (!slot.wanted || stopping_) {
    state = has_process(slot) ? LBD_SLOT_DRAINING : LBD_SLOT_EMPTY;
  } else if (slot.serving && slot.serving->role == Role::kServing) {
    state = LBD_SLOT_ACTIVE;
  } else if (slot.serving) {
    state = LBD_SLOT_STARTING;
  }
  store_field(table().slot(slot.index).state, state);
}

// Scaled-away slots leave once their last process has exited, from the end of the list (a
// slot's index is its identity, so only the highest can go).
void Supervisor::remove_scaled_away_slots() {
  while (!slots_.empty() && slots_.back()->removing && !has_process(*slots_.back())) {
    store_field(table().slot(slots_.back()->index).state, static_cast<uint32_t>(LBD_SLOT_EMPTY));
    slots_.pop_back();
  }
  if (steering_) steering_->set_slot_count(static_cast<uint32_t>(slots_.size()));
}

}  // namespace lbd
