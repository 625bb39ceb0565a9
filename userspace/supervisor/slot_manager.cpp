// The slot and process state machine. See slot_manager.h for the model; every effect goes
// through SlotEffects, every time comes in as `now`.
#include "supervisor/slot_manager.h"

#include <algorithm>

#include "common/log.h"
#include "steer_abi.h"

namespace lbd {

namespace {

using control::Verb;
using nlohmann::json;

double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

std::string slot_name(uint32_t index) { return "slot " + std::to_string(index); }

}  // namespace

const char* process_role_name(ProcessRole role) {
  switch (role) {
    case ProcessRole::kStarting: return "starting";
    case ProcessRole::kServing: return "serving";
    case ProcessRole::kRetiring: return "retiring";
  }
  return "unknown";
}

SlotManager::SlotManager(SlotManagerConfig config, SlotEffects& effects)
    : config_(std::move(config)), effects_(&effects), total_restarts_(LBD_MAX_SLOTS, 0) {
  if (config_.cpus.empty()) config_.cpus = {0};
}

// --- slots and processes --------------------------------------------------------------------

SlotRecord& SlotManager::add_slot() {
  const auto index = static_cast<uint32_t>(slots_.size());
  SlotRecord slot{.index = index,
                  .cpu = config_.pin ? config_.cpus[index % config_.cpus.size()] : -1,
                  .restarts = RestartPolicy(config_.max_restarts, config_.restart_window)};
  slots_.push_back(std::move(slot));
  effects_->slot_added(index, slots_.back().cpu);
  update_state(slots_.back());
  effects_->set_slot_count(static_cast<uint32_t>(slots_.size()));
  return slots_.back();
}

SlotRecord* SlotManager::slot_at(uint32_t index) { return index < slots_.size() ? &slots_[index] : nullptr; }

SlotManager::Place SlotManager::locate(ProcessId id) {
  for (auto& slot : slots_) {
    for (auto* p : {&slot.serving, &slot.replacement}) {
      if (*p && (*p)->id == id) return {&slot, &**p};
    }
    for (auto& p : slot.retiring) {
      if (p.id == id) return {&slot, &p};
    }
  }
  return {};
}

const ProcessRecord* SlotManager::find(ProcessId id) const {
  return const_cast<SlotManager*>(this)->locate(id).process;
}

std::vector<const ProcessRecord*> SlotManager::processes() const {
  std::vector<const ProcessRecord*> all;
  for (const auto& slot : slots_) {
    if (slot.serving) all.push_back(&*slot.serving);
    if (slot.replacement) all.push_back(&*slot.replacement);
    for (const auto& p : slot.retiring) all.push_back(&p);
  }
  return all;
}

Result<ProcessRecord> SlotManager::spawn(SlotRecord& slot, bool replacement, std::chrono::milliseconds ready_timeout,
                                         Clock::time_point now) {
  const ProcessId id = next_process_id_++;
  auto pid = effects_->spawn(id, slot.index, slot.cpu, replacement);
  if (!pid) return pid.error();
  spdlog::debug("worker {}: started pid {}", slot.index, *pid);
  return ProcessRecord{.id = id, .pid = *pid, .slot = slot.index, .started_at = now, .ready_by = now + ready_timeout};
}

Result<void> SlotManager::start_serving(SlotRecord& slot, Clock::time_point now) {
  auto p = spawn(slot, false, config_.ready_timeout, now);
  if (!p) return p.error();
  slot.serving = std::move(*p);
  update_state(slot);
  return {};
}

Result<void> SlotManager::start_replacement(SlotRecord& slot, std::chrono::milliseconds ready_timeout,
                                            Clock::time_point now) {
  auto p = spawn(slot, true, ready_timeout, now);
  if (!p) return p.error();
  p->for_operation = true;
  slot.replacement = std::move(*p);
  return {};
}

// The slot's state in the shared table, derived from its processes: the steering program
// chooses only ACTIVE slots.
void SlotManager::update_state(SlotRecord& slot) {
  SlotState state = SlotState::kEmpty;
  if (!slot.wanted || (stopping_ && !leaving_)) {
    state = slot.has_process() ? SlotState::kDraining : SlotState::kEmpty;
  } else if (slot.serving && slot.serving->role == ProcessRole::kServing) {
    state = SlotState::kActive;
  } else if (slot.serving) {
    state = SlotState::kStarting;
  }
  effects_->set_slot_state(slot.index, state);
}

// Scaled-away slots leave once their last process has exited, from the end of the list (a
// slot's index is its identity, so only the highest can go).
void SlotManager::remove_scaled_away_slots() {
  const size_t before = slots_.size();
  while (!slots_.empty() && slots_.back().removing && !slots_.back().has_process()) {
    effects_->set_slot_state(slots_.back().index, SlotState::kEmpty);
    slots_.pop_back();
  }
  if (slots_.size() != before) effects_->set_slot_count(static_cast<uint32_t>(slots_.size()));
}

// --- start and stop ---------------------------------------------------------------------------

Result<void> SlotManager::start(Clock::time_point now) {
  // Every slot first: a program learns the worker count (LB_WORKERS) when it starts.
  for (uint32_t i = 0; i < config_.workers; i++) add_slot();
  for (uint32_t i = 0; i < config_.workers; i++) {
    if (auto ok = start_serving(slots_[i], now); !ok) return ok.error().wrap("start worker " + std::to_string(i));
  }
  return {};
}

void SlotManager::kill_all() {
  for (auto& slot : slots_) {
    for (auto* p : {&slot.serving, &slot.replacement}) {
      if (*p) kill_now(**p);
    }
    for (auto& p : slot.retiring) kill_now(p);
  }
}

void SlotManager::stop(bool graceful, Clock::time_point now) {
  effects_->stopping(graceful);
  if (op_) {
    if (op_->client) effects_->finish_error(*op_->client, "lbd is stopping");
    op_.reset();
  }
  if (leaving_ && !leaving_->for_stop && leaving_->client) {
    effects_->finish_error(*leaving_->client, "lbd is stopping");
  }
  stopping_ = true;
  for (auto& slot : slots_) {
    slot.restart_at.reset();
    if (slot.replacement) kill_now(*slot.replacement);
  }
  if (!graceful) {
    leaving_.reset();
    stop_deadline_ = now;
    for (auto& slot : slots_) {
      if (slot.serving) kill_now(*slot.serving);
      for (auto& p : slot.retiring) kill_now(p);
      update_state(slot);
    }
    return;
  }
  // A drain --all telling the balancers already: the stop goes on with the same grace.
  if (leaving_) {
    leaving_->for_stop = true;
    leaving_->client.reset();
  } else if (begin_leaving(/*for_stop=*/true, std::nullopt, {}, now)) {
    spdlog::info("stopping: the workers keep serving while balancers are told (at most {:.1f} s)",
                 config_.drain_grace.count() / 1000.0);
  }
  if (leaving_) {
    stop_deadline_ = leaving_->ends_by + config_.shutdown_timeout;
    return;
  }
  retire_all_for_stop(now);
}

void SlotManager::retire_all_for_stop(Clock::time_point now) {
  stop_deadline_ = now + config_.shutdown_timeout;
  for (auto& slot : slots_) {
    // Those already draining close their idle connections now, too.
    for (auto& p : slot.retiring) effects_->hurry(p.id, config_.shutdown_timeout);
    if (slot.serving) {
      ProcessRecord serving = std::move(*slot.serving);
      slot.serving.reset();
      retire(slot, std::move(serving), DrainMode::kStop, config_.shutdown_timeout, now);
    }
    update_state(slot);
  }
}

// --- leaving a balancer -----------------------------------------------------------------------

bool SlotManager::has_active_slot() const {
  return std::any_of(slots_.begin(), slots_.end(), [](const auto& s) { return s.active(); });
}

bool SlotManager::begin_leaving(bool for_stop, std::optional<ClientId> client, const control::Request& request,
                                Clock::time_point now) {
  if (config_.drain_grace.count() <= 0 || !has_active_slot()) return false;
  leaving_ = Leaving{.for_stop = for_stop,
                     .client = client,
                     .request = request,
                     .started_at = now,
                     .ends_by = now + config_.drain_grace,
                     .last_traffic = now};
  return true;
}

Clock::time_point SlotManager::leaving_ends(const Leaving& leaving) const {
  // Nobody told yet: whoever sends may not know, so only time ends it. Told: the connections the
  // balancer chose just before it learnt arrive within moments, so a quiet spell after both the
  // telling and the last arrival means it has stopped.
  if (!leaving.told_at) return leaving.ends_by;
  return std::min(leaving.ends_by, std::max(*leaving.told_at, leaving.last_traffic) + config_.drain_quiet);
}

void SlotManager::on_balancer_told(Clock::time_point now) {
  if (!leaving_ || leaving_->told_at) return;
  leaving_->told_at = now;
  spdlog::info("{}: a balancer has been told lbd is not ready ({:.1f} s in); waiting for its new connections to stop",
               leaving_->for_stop ? "stop" : "drain", seconds_between(leaving_->started_at, now));
}

void SlotManager::on_traffic(Clock::time_point now) {
  if (leaving_) leaving_->last_traffic = std::max(leaving_->last_traffic, now);
}

void SlotManager::finish_leaving(Clock::time_point now) {
  Leaving leaving = std::move(*leaving_);
  leaving_.reset();
  const std::string why = now >= leaving.ends_by
                              ? (leaving.told_at ? "the grace passed with connections still arriving"
                                                 : "the grace passed and no balancer asked")
                              : "balancers stopped sending";
  spdlog::info("{}: {} after {:.1f} s; the workers drain now", leaving.for_stop ? "stop" : "drain", why,
               seconds_between(leaving.started_at, now));
  if (leaving.for_stop) {
    retire_all_for_stop(now);
  } else if (leaving.client) {
    effects_->progress(*leaving.client, why + "; draining the workers");
    drain_now(*leaving.client, leaving.request, now);
  }
}

bool SlotManager::finished() const {
  return stopping_ && std::none_of(slots_.begin(), slots_.end(), [](const auto& s) { return s.has_process(); });
}

bool SlotManager::all_failed() const {
  return !stopping_ && !slots_.empty() && std::all_of(slots_.begin(), slots_.end(), [](const auto& s) { return s.failed; });
}

std::optional<control::Verb> SlotManager::operation() const {
  if (!op_) return std::nullopt;
  return op_->verb;
}

std::string SlotManager::not_ready_because() const {
  if (stopping_) return "lbd is stopping";
  if (leaving_) return "draining (balancers are told first; the workers still serve)";
  if (std::any_of(slots_.begin(), slots_.end(), [](const auto& s) { return s.active(); })) return {};
  const bool all_drained =
      !slots_.empty() && std::none_of(slots_.begin(), slots_.end(), [](const auto& s) { return s.wanted; });
  return all_drained ? "every worker is drained" : "no worker is serving";
}

// --- readiness ----------------------------------------------------------------------------------

void SlotManager::on_ready(ProcessId id, Clock::time_point now) {
  auto [slot, p] = locate(id);
  if (!p || p->role != ProcessRole::kStarting || p->killed) return;
  const bool is_replacement = slot->replacement && slot->replacement->id == id;
  std::optional<ProcessId> previous;
  if (is_replacement && slot->serving) previous = slot->serving->id;
  if (auto ok = effects_->swap_in(id, slot->index, previous); !ok) {
    // A worker that cannot be steered to must not take the slot; its exit is reported like a
    // failure to start.
    spdlog::error("worker {}: {}; stopping pid {}", slot->index, ok.error().message(), p->pid);
    kill_now(*p);
    return;
  }
  p->role = ProcessRole::kServing;
  p->ready_by.reset();
  const pid_t pid = p->pid;
  const bool for_operation = p->for_operation;
  const std::string cpu = slot->cpu >= 0 ? std::to_string(slot->cpu) : std::string("any");
  if (is_replacement) {
    std::optional<ProcessRecord> old = std::move(slot->serving);
    slot->serving = std::move(slot->replacement);
    slot->replacement.reset();
    if (old) {
      spdlog::info("worker {} ready: pid {}, cpu {}; replaces pid {}", slot->index, pid, cpu, old->pid);
      // The old one stops writing the slot's load entry and hands its idle connections over...
      retire(*slot, std::move(*old), DrainMode::kHandover, config_.shutdown_timeout, now);
    } else {
      spdlog::info("worker {} ready: pid {}, cpu {}", slot->index, pid, cpu);
    }
  } else {
    spdlog::info("worker {} ready: pid {}, cpu {}", slot->index, pid, cpu);
  }
  // ...and the new one owns the entry from now on.
  effects_->serving(id);
  update_state(*slot);
  if (for_operation && op_ && op_->active.count(slot->index) &&
      (op_->verb == Verb::kReload || op_->verb == Verb::kRestart)) {
    op_->active.erase(slot->index);
    op_->succeeded++;
    operation_progress(slot_name(slot->index) + ": pid " + std::to_string(pid) + " serving");
  }
  check_all_ready();
  advance_operation(now);
}

void SlotManager::check_all_ready() {
  if (announced_ready_) return;
  for (const auto& slot : slots_) {
    if (slot.failed) continue;
    if (!slot.serving || slot.serving->role != ProcessRole::kServing) return;
  }
  const auto active = std::count_if(slots_.begin(), slots_.end(), [](const auto& s) { return !s.failed; });
  if (active == 0) return;  // every worker failed: lbd says so and exits
  announced_ready_ = true;
  effects_->all_ready(static_cast<size_t>(active));
}

// --- retiring -----------------------------------------------------------------------------------

void SlotManager::retire(SlotRecord& slot, ProcessRecord p, DrainMode how, std::chrono::milliseconds timeout,
                         Clock::time_point now) {
  p.role = ProcessRole::kRetiring;
  p.ready_by.reset();
  p.kill_at = now + timeout + config_.kill_grace;
  const ProcessId id = p.id;
  slot.retiring.push_back(std::move(p));
  update_state(slot);  // out of steering before its listener goes
  std::optional<ProcessId> successor;
  if (how == DrainMode::kHandover && slot.serving) successor = slot.serving->id;
  effects_->retire(id, how, timeout, successor);
}

void SlotManager::kill_now(ProcessRecord& p) {
  p.killed = true;
  effects_->kill(p.id);
}

// Takes slots out of steering and drains their workers: queued connections migrate, in-flight
// requests finish, keep-alive clients are told "Connection: close" on their next request, and
// silent ones are closed at the timeout. The slots stay down until undrain (or are removed, for
// scale).
void SlotManager::drain_slots(const std::vector<uint32_t>& targets, std::chrono::milliseconds timeout,
                              Clock::time_point now) {
  for (uint32_t index : targets) {
    SlotRecord& slot = slots_[index];
    slot.wanted = false;
    slot.restart_at.reset();
    if (slot.replacement) kill_now(*slot.replacement);
    if (slot.serving) {
      spdlog::info("worker {}: draining pid {} (at most {} s)", index, slot.serving->pid, timeout.count() / 1000.0);
      ProcessRecord serving = std::move(*slot.serving);
      slot.serving.reset();
      retire(slot, std::move(serving), DrainMode::kDrain, timeout, now);
    }
    update_state(slot);
  }
}

// --- exits ------------------------------------------------------------------------------------

void SlotManager::on_exit(ProcessId id, const std::string& ended, Clock::time_point now) {
  auto [slot, p] = locate(id);
  if (!p) return;
  const pid_t pid = p->pid;
  if (p->role == ProcessRole::kRetiring) {
    spdlog::info("worker {} (pid {}) {}", slot->index, pid, ended);
    std::erase_if(slot->retiring, [&](const ProcessRecord& r) { return r.id == id; });
  } else if (slot->replacement && slot->replacement->id == id) {
    const std::string how = p->timed_out ? "was not ready within " +
                                               fmt::format("{:.1f}", seconds_between(p->started_at, now)) +
                                               " s (killed)"
                                         : ended + " before it was ready";
    const std::string why = "new worker pid " + std::to_string(pid) + " " + how + "; pid " +
                            (slot->serving ? std::to_string(slot->serving->pid) : std::string("-")) +
                            " keeps serving";
    spdlog::error("worker {}: {}", slot->index, why);
    slot->replacement.reset();
    operation_slot_failed(slot->index, slot_name(slot->index) + ": " + why);
    // Nothing serves the slot either (after a takeover from an lbd that died while stopping):
    // start one, as after a crash.
    if (!slot->serving && slot->wanted && !slot->failed && !stopping_ && !slot->restart_at) slot->restart_at = now;
  } else {
    const bool was_ready = p->role == ProcessRole::kServing;
    if (p->for_operation && !was_ready) {
      operation_slot_failed(slot->index, slot_name(slot->index) + ": new worker pid " + std::to_string(pid) + " " +
                                             (p->timed_out ? std::string("was not ready in time (killed)")
                                                           : ended + " before it was ready"));
    }
    slot->serving.reset();
    on_crash(*slot, pid, was_ready, ended, now);
  }
  update_state(*slot);
  remove_scaled_away_slots();
  advance_operation(now);
}

void SlotManager::on_crash(SlotRecord& slot, pid_t pid, bool was_ready, const std::string& ended,
                           Clock::time_point now) {
  const char* what = was_ready ? "crashed" : "failed to start";
  if (stopping_) {
    spdlog::info("worker {} (pid {}) {}", slot.index, pid, ended);
    return;
  }
  if (slot.replacement) {
    // A reload was replacing it anyway: the replacement takes the slot when it is ready.
    spdlog::warn("worker {} (pid {}) {}: {}; its replacement pid {} takes over", slot.index, pid, what, ended,
                 slot.replacement->pid);
    slot.serving = std::move(slot.replacement);
    slot.replacement.reset();
    return;
  }
  if (!slot.wanted) {
    spdlog::warn("worker {} (pid {}) {}: {}", slot.index, pid, what, ended);
    return;
  }
  auto delay = slot.restarts.on_crash(now);
  if (!delay) {
    slot.failed = true;
    spdlog::error("worker {} (pid {}) {}: {}; it crashed {} times within {} s, not restarting it", slot.index, pid,
                  what, ended, config_.max_restarts, config_.restart_window.count() / 1000.0);
    check_all_ready();
    return;
  }
  spdlog::warn("worker {} (pid {}) {}: {}; restarting in {} ms", slot.index, pid, what, ended, delay->count());
  slot.restart_at = now + *delay;
}

// --max-memory: a worker past the limit is replaced like `lbctl restart`: the new one starts,
// and only once it is ready is the old one drained, so no request fails and no fewer workers
// serve meanwhile. The shell samples every second; for a program, its whole process tree.
void SlotManager::on_memory_sample(ProcessId id, uint64_t rss, Clock::time_point now) {
  if (!config_.max_memory || stopping_) return;
  auto [slot, p] = locate(id);
  // Only the serving process, and not during a reload or restart, which replaces workers anyway
  // (and would skip a slot whose replacement is already starting).
  if (!p || !slot->serving || slot->serving->id != id || p->role != ProcessRole::kServing || slot->replacement ||
      !slot->wanted || op_) {
    return;
  }
  // After a replacement the slot's next look waits 2 s, then 4, 8 ... up to 5 min while
  // replacements keep coming within 10 minutes of each other; counted from the decision and
  // from the start of the process that serves now (a slow start must not eat the wait).
  if (rss <= config_.max_memory || now < slot->memory_check_after || now - p->started_at < slot->memory_quiet) {
    return;
  }
  const auto quiet = *slot->memory_replacements.on_crash(now);
  slot->memory_check_after = now + quiet;
  slot->memory_quiet = quiet;
  const unsigned recent = slot->memory_replacements.recent_crashes(now);
  const double age_s = seconds_between(p->started_at, now);
  if (recent > 1) {
    spdlog::warn("worker {} (pid {}) uses {} MiB, over --max-memory {} MiB {:.0f} s after it started; replacing "
                 "it ({} replacements in 10 min; next look in {} s: is the limit below what the program needs?)",
                 slot->index, p->pid, rss >> 20, config_.max_memory >> 20, age_s, recent,
                 std::chrono::duration_cast<std::chrono::seconds>(quiet).count());
  } else {
    spdlog::warn("worker {} (pid {}) uses {} MiB, over --max-memory {} MiB; replacing it", slot->index, p->pid,
                 rss >> 20, config_.max_memory >> 20);
  }
  if (auto ok = start_replacement(*slot, config_.ready_timeout, now); !ok) {
    spdlog::error("worker {}: cannot start its replacement: {}", slot->index, ok.error().message());
    return;
  }
  slot->replacement->for_operation = false;
  memory_replacements_++;
}

// --- time -------------------------------------------------------------------------------------

void SlotManager::tick(Clock::time_point now) {
  if (leaving_ && now >= leaving_ends(*leaving_)) finish_leaving(now);
  for (auto& slot : slots_) {
    if (slot.restart_at && *slot.restart_at <= now && !stopping_) {
      slot.restart_at.reset();
      slot.restart_count++;
      total_restarts_[slot.index]++;
      if (auto ok = start_serving(slot, now); !ok) {
        spdlog::error("worker {}: restart failed: {}", slot.index, ok.error().message());
        if (auto delay = slot.restarts.on_crash(now)) {
          slot.restart_at = now + *delay;
        } else {
          slot.failed = true;
        }
      }
    }
    // Starting too long (a reload's new worker, or a start that hangs): kill it; its exit is
    // handled like any other failure to start.
    for (auto* p : {&slot.serving, &slot.replacement}) {
      if (*p && (*p)->role == ProcessRole::kStarting && (*p)->ready_by && *(*p)->ready_by <= now) {
        spdlog::error("worker {}: pid {} not ready after {} s; killing it", slot.index, (*p)->pid,
                      seconds_between((*p)->started_at, now));
        (*p)->ready_by.reset();
        (*p)->timed_out = true;
        kill_now(**p);
      }
    }
    for (auto& p : slot.retiring) {
      if (p.kill_at && *p.kill_at <= now) {
        spdlog::warn("worker {}: pid {} still draining at its deadline; killing it", slot.index, p.pid);
        p.kill_at.reset();
        kill_now(p);
      }
    }
  }
  if (stopping_ && now >= stop_deadline_) {
    stop_deadline_ = now + std::chrono::hours(24);  // once
    size_t running = 0;
    for (const auto& slot : slots_) running += slot.process_count();
    if (running > 0 && config_.shutdown_timeout.count() > 0) {
      spdlog::warn("shutdown timeout ({:.1f} s) passed with {} worker process(es) still running; killing them",
                   config_.shutdown_timeout.count() / 1000.0, running);
    }
    kill_all();
  }
  advance_operation(now);
}

std::optional<Clock::time_point> SlotManager::next_deadline() const {
  std::optional<Clock::time_point> next;
  auto consider = [&](const std::optional<Clock::time_point>& t) {
    if (t && (!next || *t < *next)) next = t;
  };
  for (const auto& slot : slots_) {
    consider(slot.restart_at);
    for (const auto* p : {&slot.serving, &slot.replacement}) {
      if (*p) consider((*p)->ready_by);
    }
    for (const auto& p : slot.retiring) consider(p.kill_at);
  }
  if (stopping_) consider(stop_deadline_);
  if (leaving_) consider(leaving_ends(*leaving_));
  return next;
}

// --- operations -------------------------------------------------------------------------------

bool SlotManager::busy(ClientId client) {
  if (leaving_) {
    effects_->finish_error(client, "busy: a drain --all is in progress (balancers are told first)");
    return true;
  }
  if (!op_) return false;
  effects_->finish_error(client, std::string("busy: a ") + control::verb_name(op_->verb) + " is in progress");
  return true;
}

std::string SlotManager::no_such_slot(uint32_t index) const {
  if (index < slots_.size() && !slots_[index].removing) return {};
  return "no such slot: " + std::to_string(index) + " (slots are 0-" +
         std::to_string(slots_.empty() ? 0 : slots_.size() - 1) + ")";
}

bool SlotManager::check_slot(ClientId client, uint32_t index) {
  std::string missing = no_such_slot(index);
  if (missing.empty()) return true;
  effects_->finish_error(client, missing);
  return false;
}

void SlotManager::begin_operation(Verb verb, std::optional<ClientId> client, Clock::time_point now) {
  op_ = Operation();  // not emplace(): clang 14 judges Operation not default-constructible inside the class
  op_->verb = verb;
  op_->client = client;
  op_->started_at = now;
}

void SlotManager::drain(ClientId client, const control::Request& request, Clock::time_point now) {
  if (leaving_ && busy(client)) return;
  if (request.wait && busy(client)) return;
  // The whole host leaves: the balancer in front is told before a worker stops serving.
  if (request.all && !op_ && begin_leaving(/*for_stop=*/false, client, request, now)) {
    const std::string message = fmt::format(
        "not ready from now; the workers serve until balancers stop sending (at most {:.1f} s)",
        config_.drain_grace.count() / 1000.0);
    spdlog::info("drain: {}", message);
    effects_->progress(client, message);
    return;
  }
  drain_now(client, request, now);
}

void SlotManager::drain_now(ClientId client, const control::Request& request, Clock::time_point now) {
  std::vector<uint32_t> targets;
  if (request.all) {
    for (const auto& slot : slots_) {
      if (slot.wanted && !slot.removing) targets.push_back(slot.index);
    }
  } else {
    if (!check_slot(client, *request.slot)) return;
    if (slots_[*request.slot].wanted) targets.push_back(*request.slot);
  }
  const auto timeout = request.timeout_s
                           ? std::chrono::milliseconds(static_cast<int64_t>(*request.timeout_s * 1000))
                           : config_.shutdown_timeout;
  drain_slots(targets, timeout, now);
  if (!request.wait) {
    effects_->finish_ok(client, {{"drained", targets}});
    return;
  }
  begin_operation(Verb::kDrain, client, now);
  op_->active = std::set<uint32_t>(targets.begin(), targets.end());
  operation_progress("draining " + std::to_string(targets.size()) + " worker(s)");
  advance_operation(now);
}

void SlotManager::undrain(ClientId client, const control::Request& request, Clock::time_point now) {
  // Changed their mind while the balancers were being told: lbd is ready again, nothing drained.
  if (leaving_ && !leaving_->for_stop) {
    spdlog::info("undrain: the drain --all waiting for balancers is called off; ready again");
    if (leaving_->client) effects_->finish_error(*leaving_->client, "called off by undrain");
    leaving_.reset();
  }
  if (busy(client)) return;
  std::vector<uint32_t> targets;
  if (request.all) {
    for (const auto& slot : slots_) {
      if (!slot.removing) targets.push_back(slot.index);
    }
  } else {
    if (!check_slot(client, *request.slot)) return;
    targets.push_back(*request.slot);
  }
  begin_operation(Verb::kUndrain, client, now);
  for (uint32_t index : targets) {
    SlotRecord& slot = slots_[index];
    const bool serving = slot.wanted && !slot.failed && slot.serving;
    slot.wanted = true;
    slot.failed = false;
    slot.restart_at.reset();
    if (serving) continue;
    if (auto ok = start_serving(slot, now); !ok) {
      op_->failure = slot_name(index) + ": " + ok.error().message();
      break;
    }
    op_->active.insert(index);
    operation_progress(slot_name(index) + ": starting pid " + std::to_string(slot.serving->pid));
  }
  advance_operation(now);
}

void SlotManager::reload(std::optional<ClientId> client, uint32_t parallel,
                         std::optional<std::chrono::milliseconds> timeout, Clock::time_point now) {
  if (op_ || leaving_) {
    if (client) {
      busy(*client);
    } else {
      spdlog::warn("SIGHUP: a {} is in progress; not reloading", op_ ? control::verb_name(op_->verb) : "drain --all");
    }
    return;
  }
  begin_operation(Verb::kReload, client, now);
  // Every slot, drained ones included: a reload brings them back.
  for (const auto& slot : slots_) {
    if (!slot.removing) op_->pending.push_back(slot.index);
  }
  op_->parallel = std::max(1u, parallel);
  op_->timeout = timeout.value_or(config_.ready_timeout);
  operation_progress("reloading " + std::to_string(op_->pending.size()) + " worker(s) from " + config_.reload_source);
  advance_operation(now);
}

void SlotManager::restart(ClientId client, uint32_t index, std::optional<std::chrono::milliseconds> timeout,
                          Clock::time_point now) {
  if (busy(client) || !check_slot(client, index)) return;
  if (!slots_[index].serving) {
    effects_->finish_error(client, "slot " + std::to_string(index) + " has no serving worker (drained? use undrain)");
    return;
  }
  begin_operation(Verb::kRestart, client, now);
  op_->pending.push_back(index);
  op_->timeout = timeout.value_or(config_.ready_timeout);
  operation_progress("restarting 1 worker(s) from " + config_.reload_source);
  advance_operation(now);
}

void SlotManager::scale(ClientId client, uint32_t workers, Clock::time_point now) {
  if (busy(client)) return;
  if (workers > LBD_MAX_SLOTS) {
    effects_->finish_error(client, "at most " + std::to_string(LBD_MAX_SLOTS) + " workers");
    return;
  }
  begin_operation(Verb::kScale, client, now);
  // Up: slots that were being scaled away come back first, then new slots.
  for (uint32_t index = 0; index < workers; index++) {
    if (index >= slots_.size()) add_slot();
    SlotRecord& slot = slots_[index];
    if (!slot.removing) continue;
    slot.removing = false;
    slot.wanted = true;
  }
  for (uint32_t index = 0; index < workers; index++) {
    SlotRecord& slot = slots_[index];
    if (!slot.wanted || slot.serving) continue;
    if (auto ok = start_serving(slot, now); !ok) {
      op_->failure = slot_name(index) + ": " + ok.error().message();
      break;
    }
    op_->active.insert(index);
    operation_progress(slot_name(index) + ": starting pid " + std::to_string(slot.serving->pid));
  }
  // Down: the highest slots drain and go.
  std::vector<uint32_t> removed;
  for (uint32_t index = workers; index < slots_.size(); index++) {
    SlotRecord& slot = slots_[index];
    if (slot.removing) continue;
    slot.removing = true;
    removed.push_back(index);
    op_->active.insert(index);
  }
  drain_slots(removed, config_.shutdown_timeout, now);
  remove_scaled_away_slots();
  advance_operation(now);
}

void SlotManager::advance_operation(Clock::time_point now) {
  if (!op_) return;
  switch (op_->verb) {
    case Verb::kReload:
    case Verb::kRestart:
      // A failed slot stops the rollout: the next slots would most likely fail the same way,
      // and every old worker is still serving.
      while (op_->failure.empty() && op_->active.size() < op_->parallel && !op_->pending.empty()) {
        const uint32_t index = op_->pending.front();
        op_->pending.pop_front();
        SlotRecord* slot = slot_at(index);
        if (!slot || slot->removing) continue;
        if (slot->replacement) {
          operation_progress(slot_name(index) + ": a new worker is starting there already (pid " +
                             std::to_string(slot->replacement->pid) + "); skipped");
          continue;
        }
        if (slot->serving && slot->serving->role == ProcessRole::kStarting) {
          // Already starting (a crash restart): it runs the binary on disk anyway.
          operation_progress(slot_name(index) + ": pid " + std::to_string(slot->serving->pid) +
                             " is starting already; skipped");
          continue;
        }
        if (!slot->serving) {
          // Drained, failed, or waiting to restart: a reload brings the slot back.
          slot->wanted = true;
          slot->failed = false;
          slot->restart_at.reset();
          if (auto ok = start_serving(*slot, now); !ok) {
            op_->failure = slot_name(index) + ": " + ok.error().message();
            break;
          }
          slot->serving->for_operation = true;
          slot->serving->ready_by = slot->serving->started_at + op_->timeout;
          op_->active.insert(index);
          operation_progress(slot_name(index) + ": starting pid " + std::to_string(slot->serving->pid) +
                             " (the slot was down)");
          continue;
        }
        if (auto ok = start_replacement(*slot, op_->timeout, now); !ok) {
          op_->failure = slot_name(index) + ": " + ok.error().message();
          break;
        }
        op_->active.insert(index);
        operation_progress(slot_name(index) + ": starting pid " + std::to_string(slot->replacement->pid) +
                           " to replace pid " + std::to_string(slot->serving->pid));
      }
      if (op_->active.empty() && (op_->pending.empty() || !op_->failure.empty())) finish_operation(now);
      return;

    case Verb::kDrain:
    case Verb::kUndrain:
    case Verb::kScale: {
      // A slot is done when it is serving (wanted) or has no process left (not wanted).
      std::vector<uint32_t> done;
      for (uint32_t index : op_->active) {
        SlotRecord* slot = slot_at(index);
        if (!slot) {  // scaled away and already removed
          done.push_back(index);
          continue;
        }
        if (slot->removing) {
          if (!slot->has_process()) done.push_back(index);
        } else if (slot->wanted) {
          if (slot->failed) {
            if (op_->failure.empty()) op_->failure = slot_name(index) + ": worker failed to start";
            done.push_back(index);
          } else if (slot->serving && slot->serving->role == ProcessRole::kServing) {
            operation_progress(slot_name(index) + ": pid " + std::to_string(slot->serving->pid) + " serving");
            done.push_back(index);
          }
        } else if (!slot->has_process()) {
          operation_progress(slot_name(index) + ": drained");
          done.push_back(index);
        }
      }
      for (uint32_t index : done) {
        op_->active.erase(index);
        op_->succeeded++;
      }
      if (op_->active.empty()) finish_operation(now);
      return;
    }
    default:
      return;
  }
}

void SlotManager::operation_progress(const std::string& message) {
  if (!op_) return;
  spdlog::info("{}: {}", control::verb_name(op_->verb), message);
  if (op_->client) effects_->progress(*op_->client, message);
}

void SlotManager::operation_slot_failed(uint32_t slot, const std::string& why) {
  if (!op_ || !op_->active.count(slot)) return;
  op_->active.erase(slot);
  if (op_->failure.empty()) op_->failure = why;
}

void SlotManager::finish_operation(Clock::time_point now) {
  Operation op = std::move(*op_);
  op_.reset();
  const double took = seconds_between(op.started_at, now);
  if (op.verb == Verb::kReload) {
    if (op.failure.empty()) {
      reloads_++;
    } else {
      reload_failures_++;
    }
  }
  if (!op.failure.empty()) {
    spdlog::error("{} failed after {:.1f} s: {}", control::verb_name(op.verb), took, op.failure);
    if (op.client) {
      effects_->finish_error(*op.client, std::string(control::verb_name(op.verb)) + " failed: " + op.failure);
    }
    return;
  }
  spdlog::info("{} done in {:.1f} s", control::verb_name(op.verb), took);
  if (op.client) {
    effects_->finish_ok(*op.client, {{"verb", control::verb_name(op.verb)}, {"slots", op.succeeded}, {"seconds", took}});
  }
}

// --- save and restore ---------------------------------------------------------------------------
//
// Time points are steady_clock's (CLOCK_MONOTONIC): the same clock in every process of one boot,
// so a successor's deadlines fall where its predecessor's would have.

namespace {

constexpr int kStateVersion = 1;

json time_to_json(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
json time_to_json(const std::optional<Clock::time_point>& t) { return t ? time_to_json(*t) : json(nullptr); }

Clock::time_point time_from_json(const json& j) {
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(j.get<int64_t>())));
}
std::optional<Clock::time_point> optional_time_from_json(const json& j) {
  if (j.is_null()) return std::nullopt;
  return time_from_json(j);
}

json times_to_json(const std::deque<Clock::time_point>& times) {
  json list = json::array();
  for (auto t : times) list.push_back(time_to_json(t));
  return list;
}
std::deque<Clock::time_point> times_from_json(const json& j) {
  std::deque<Clock::time_point> times;
  for (const auto& t : j) times.push_back(time_from_json(t));
  return times;
}

json process_to_json(const ProcessRecord& p) {
  return {{"id", p.id},
          {"pid", p.pid},
          {"slot", p.slot},
          {"role", process_role_name(p.role)},
          {"started_at", time_to_json(p.started_at)},
          {"ready_by", time_to_json(p.ready_by)},
          {"kill_at", time_to_json(p.kill_at)},
          {"for_operation", p.for_operation},
          {"timed_out", p.timed_out},
          {"killed", p.killed}};
}

ProcessRecord process_from_json(const json& j) {
  ProcessRecord p;
  p.id = j.at("id").get<ProcessId>();
  p.pid = j.at("pid").get<pid_t>();
  p.slot = j.at("slot").get<uint32_t>();
  const std::string role = j.at("role").get<std::string>();
  if (role == "starting") {
    p.role = ProcessRole::kStarting;
  } else if (role == "serving") {
    p.role = ProcessRole::kServing;
  } else if (role == "retiring") {
    p.role = ProcessRole::kRetiring;
  } else {
    throw json::other_error::create(501, "unknown process role '" + role + "'", &j);
  }
  p.started_at = time_from_json(j.at("started_at"));
  p.ready_by = optional_time_from_json(j.at("ready_by"));
  p.kill_at = optional_time_from_json(j.at("kill_at"));
  p.for_operation = j.at("for_operation").get<bool>();
  p.timed_out = j.at("timed_out").get<bool>();
  p.killed = j.at("killed").get<bool>();
  return p;
}

}  // namespace

json SlotManager::save() const {
  json slots = json::array();
  for (const auto& slot : slots_) {
    json retiring = json::array();
    for (const auto& p : slot.retiring) retiring.push_back(process_to_json(p));
    slots.push_back({{"index", slot.index},
                     {"cpu", slot.cpu},
                     {"wanted", slot.wanted},
                     {"failed", slot.failed},
                     {"removing", slot.removing},
                     {"serving", slot.serving ? process_to_json(*slot.serving) : json(nullptr)},
                     {"replacement", slot.replacement ? process_to_json(*slot.replacement) : json(nullptr)},
                     {"retiring", std::move(retiring)},
                     {"crashes", times_to_json(slot.restarts.crashes())},
                     {"restart_at", time_to_json(slot.restart_at)},
                     {"restart_count", slot.restart_count},
                     {"memory_replacements", times_to_json(slot.memory_replacements.crashes())},
                     {"memory_check_after", time_to_json(slot.memory_check_after)},
                     {"memory_quiet_ms", slot.memory_quiet.count()}});
  }
  return {{"version", kStateVersion},
          {"next_process_id", next_process_id_},
          {"slots", std::move(slots)},
          {"total_restarts", total_restarts_},
          {"announced_ready", announced_ready_},
          {"reloads", reloads_},
          {"reload_failures", reload_failures_},
          {"memory_replacements", memory_replacements_}};
}

Result<SlotManager> SlotManager::restore(const json& saved, SlotManagerConfig config, SlotEffects& effects) {
  auto invalid = [](const std::string& why) {
    return Error::invalid("the saved slot state " + why);
  };
  if (!saved.is_object() || saved.value("version", 0) != kStateVersion) {
    return invalid("has version " + (saved.is_object() ? saved.value("version", json(nullptr)).dump() : "?") +
                   "; this lbd reads version " + std::to_string(kStateVersion));
  }
  SlotManager manager(std::move(config), effects);
  try {
    manager.next_process_id_ = saved.at("next_process_id").get<ProcessId>();
    manager.announced_ready_ = saved.at("announced_ready").get<bool>();
    manager.reloads_ = saved.at("reloads").get<uint64_t>();
    manager.reload_failures_ = saved.at("reload_failures").get<uint64_t>();
    manager.memory_replacements_ = saved.at("memory_replacements").get<uint64_t>();
    const auto restarts = saved.at("total_restarts").get<std::vector<uint64_t>>();
    std::copy_n(restarts.begin(), std::min(restarts.size(), manager.total_restarts_.size()),
                manager.total_restarts_.begin());
    for (const auto& j : saved.at("slots")) {
      SlotRecord slot{.index = j.at("index").get<uint32_t>(),
                      .cpu = j.at("cpu").get<int>(),
                      .wanted = j.at("wanted").get<bool>(),
                      .failed = j.at("failed").get<bool>(),
                      .removing = j.at("removing").get<bool>(),
                      .restarts = RestartPolicy(manager.config_.max_restarts, manager.config_.restart_window)};
      if (slot.index != manager.slots_.size() || slot.index >= LBD_MAX_SLOTS) return invalid("has slots out of order");
      if (!j.at("serving").is_null()) slot.serving = process_from_json(j.at("serving"));
      if (!j.at("replacement").is_null()) slot.replacement = process_from_json(j.at("replacement"));
      for (const auto& p : j.at("retiring")) slot.retiring.push_back(process_from_json(p));
      if ((slot.serving && slot.serving->slot != slot.index) || (slot.replacement && slot.replacement->slot != slot.index) ||
          std::any_of(slot.retiring.begin(), slot.retiring.end(), [&](const auto& p) { return p.slot != slot.index; })) {
        return invalid("puts a process of one slot in another");
      }
      slot.restarts.remember(times_from_json(j.at("crashes")));
      slot.restart_at = optional_time_from_json(j.at("restart_at"));
      slot.restart_count = j.at("restart_count").get<unsigned>();
      slot.memory_replacements.remember(times_from_json(j.at("memory_replacements")));
      slot.memory_check_after = time_from_json(j.at("memory_check_after"));
      slot.memory_quiet = std::chrono::milliseconds(j.at("memory_quiet_ms").get<int64_t>());
      manager.slots_.push_back(std::move(slot));
    }
  } catch (const json::exception& e) {
    return invalid(std::string("is damaged: ") + e.what());
  }
  std::set<ProcessId> ids;
  for (const auto* p : manager.processes()) {
    if (!ids.insert(p->id).second) return invalid("names process " + std::to_string(p->id) + " twice");
    if (p->id >= manager.next_process_id_) {
      return invalid("names process " + std::to_string(p->id) + ", beyond its next id " +
                     std::to_string(manager.next_process_id_));
    }
  }
  return manager;
}

void SlotManager::resume_after_takeover(Clock::time_point now) {
  for (auto& slot : slots_) {
    if (slot.wanted && !slot.failed && !slot.removing && !slot.serving && !slot.replacement && !slot.restart_at) {
      slot.restart_at = now;
    }
  }
}

void SlotManager::kill(ProcessId id) {
  if (auto [slot, p] = locate(id); p) kill_now(*p);
}

void SlotManager::announce_ready_again() {
  announced_ready_ = false;
  check_all_ready();
}

// Restored slots, as the effects' owner must learn them: each slot's CPU and state again.
void SlotManager::announce_restored_slots() {
  for (auto& slot : slots_) {
    effects_->slot_added(slot.index, slot.cpu);
    update_state(slot);
  }
  effects_->set_slot_count(static_cast<uint32_t>(slots_.size()));
}

}  // namespace lbd
