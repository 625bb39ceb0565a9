// What the slot manager asks for, carried out on real processes, sockets and the slot table; and
// a child's exit, turned into the manager's event.
#include <algorithm>

#include "common/log.h"
#include "steer_abi.h"
#include "supervisor/notify.h"
#include "supervisor/process_stats.h"
#include "supervisor/supervisor.h"

namespace lbd {

Result<pid_t> Supervisor::spawn(ProcessId id, uint32_t slot, int cpu, bool replacement) {
  record_dirty_ = true;
  Result<std::unique_ptr<Child>> started = Error::from_errno(EINVAL, "start");
  if (is_program()) {
    // A program learns the number of slots (LB_WORKERS) when it starts.
    const auto& slots = slots_->slots();
    const auto workers = std::count_if(slots.begin(), slots.end(), [](const auto& s) { return !s.removing; });
    started = start_program_child(id, slot, cpu, static_cast<uint32_t>(workers), shared_);
  } else {
    started = start_worker_child(id, slot, cpu, replacement, shared_);
  }
  if (!started) return started.error();
  std::unique_ptr<Child>& c = *started;
  if (auto watched = shared_.poller->watch(c->process().pidfd(), Source::kExit, id); !watched) {
    c->process().kill_and_reap(is_program());
    return watched.error();
  }
  const pid_t pid = c->pid();
  children_[id] = std::move(c);
  if (is_program()) look_soon();  // its probe
  return pid;
}

Result<void> Supervisor::swap_in(ProcessId id, uint32_t /*slot*/, std::optional<ProcessId> previous) {
  Child* c = child(id);
  if (!c) return Error::from_errno(ESRCH, "no such process");
  return c->swap_in(previous ? child(*previous) : nullptr);
}

void Supervisor::serving(ProcessId id) {
  record_dirty_ = true;
  if (Child* c = child(id)) c->serving();
}

void Supervisor::retire(ProcessId id, DrainMode how, std::chrono::milliseconds timeout,
                        std::optional<ProcessId> successor) {
  record_dirty_ = true;
  if (Child* c = child(id)) c->retire(how, timeout, successor ? child(*successor) : nullptr);
  if (is_program()) look_soon();  // its queue
}

void Supervisor::hurry(ProcessId id, std::chrono::milliseconds timeout) {
  if (Child* c = child(id)) c->hurry(timeout);
}

void Supervisor::kill(ProcessId id) {
  record_dirty_ = true;
  if (Child* c = child(id)) c->kill();
}

void Supervisor::slot_added(uint32_t slot, int cpu) {
  store_field(shared_.table().slot(slot).cpu, cpu >= 0 ? static_cast<uint32_t>(cpu) : ~0u);
}

void Supervisor::set_slot_count(uint32_t count) {
  record_dirty_ = true;
  if (shared_.steering) shared_.steering->set_slot_count(count);
}

void Supervisor::set_slot_state(uint32_t slot, SlotState state) {
  record_dirty_ = true;
  store_field(shared_.table().slot(slot).state, static_cast<uint32_t>(state));
}

void Supervisor::progress(ClientId client, const std::string& message) {
  if (control_) control_->progress(client, message);
}

void Supervisor::finish_ok(ClientId client, const nlohmann::json& result) {
  if (control_) control_->finish_ok(client, result);
}

void Supervisor::finish_error(ClientId client, const std::string& message) {
  if (control_) control_->finish_error(client, message);
}

void Supervisor::all_ready(size_t active) {
  spdlog::info("ready: {} workers serving {} (mode {}, policy {})", active, listen_summary(), mode_name(options_.mode),
               policy_name(shared_.steering ? shared_.steering->policy() : options_.steering.policy));
  notify_service_manager("READY=1");
}

void Supervisor::stopping(bool /*graceful*/) {
  if (!std::exchange(notified_stopping_, true)) notify_service_manager("STOPPING=1");
  if (options_.mode == Mode::kHandoff) {
    for (auto& fd : shared_.shared_listeners) shared_.poller->unwatch(fd.get());
    shared_.shared_listeners.clear();  // refuse new connections
  }
}

// Its pidfd is readable: the process has exited. What it held goes now (a dead worker's queue
// moves on at once), what it counted joins its slot's history in the same turn of the loop that
// forgets it (a scrape sees the numbers in one place or the other, never both or neither), and
// the slot manager decides what follows.
void Supervisor::on_child_exit(ProcessId id) {
  auto it = children_.find(id);
  if (it == children_.end()) return;
  Child& c = *it->second;
  c.on_exit();
  // A process a predecessor started is not ours to reap: what it used is read from /proc while
  // it is a zombie, so the slot's CPU counter never goes backwards.
  const auto last_usage = c.process().adopted() ? read_process_usage(c.pid()) : std::nullopt;
  auto exit = c.process().reap();
  if (!exit) return;  // not yet: the pidfd will say again
  if (last_usage) exit->cpu_seconds = std::max(exit->cpu_seconds, last_usage->cpu_seconds);
  shared_.poller->unwatch(c.process().pidfd());
  c.after_reap(exit->description);
  SlotHistory& history = history_[c.slot()];
  if (c.stats()) history.stats += c.stats()->read();
  history.cpu_seconds += exit->cpu_seconds;
  children_.erase(it);
  record_dirty_ = true;
  slots_->on_exit(id, exit->description, Clock::now());
}

}  // namespace lbd
