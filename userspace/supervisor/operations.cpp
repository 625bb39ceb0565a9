// What operators ask for, through lbctl or SIGHUP: status, drain, undrain, reload, restart,
// scale, policy, stop. Quick requests are answered at once; long ones (reload, restart,
// drain --wait, undrain, scale) become the one Operation in progress, which advance_operation()
// moves forward after every event and which reports progress to the client as slots change.
#include <signal.h>

#include <algorithm>

#include "common/log.h"
#include "supervisor/supervisor.h"

namespace lbd {

namespace {

using control::Verb;
using nlohmann::json;

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::chrono::milliseconds to_ms(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

// A worker process's request durations since it started: counts per bucket (not cumulative; the
// last is +Inf), so that a client (lbctl top) can subtract two snapshots of the same pid and
// read an interval's percentiles.
json latency_histogram(const WorkerStatsSnapshot& stats) {
  json bounds = json::array();
  for (size_t i = 0; i < kDurationBoundsNs.size(); i++) bounds.push_back(duration_bound_seconds(i));
  return {{"bounds_seconds", std::move(bounds)},
          {"counts", stats.duration_counts},
          {"sum_seconds", stats.duration_sum_seconds()}};
}

}  // namespace

std::chrono::milliseconds Supervisor::drain_timeout(const control::Request& request) const {
  return request.timeout_s ? to_ms(*request.timeout_s) : options_.shutdown_timeout;
}

void Supervisor::on_request(ClientId client, const control::Request& request) {
  auto reply_error = [&](const std::string& message) { control_->finish_error(client, message); };
  auto busy = [&]() -> bool {
    if (!op_) return false;
    reply_error(std::string("busy: a ") + control::verb_name(op_->verb) + " is in progress");
    return true;
  };
  auto check_slot = [&](uint32_t index) -> bool {
    if (index < slots_.size() && !slots_[index]->removing) return true;
    reply_error("no such slot: " + std::to_string(index) + " (slots are 0-" +
                std::to_string(slots_.empty() ? 0 : slots_.size() - 1) + ")");
    return false;
  };
  if (stopping_ && request.verb != Verb::kStatus) return reply_error("lbd is stopping");

  switch (request.verb) {
    case Verb::kStatus:
      control_->finish_ok(client, status());
      return;

    case Verb::kPolicy: {
      if (!steering_) return reply_error("policies apply to --mode bpf; this lbd runs --mode " +
                                         std::string(mode_name(options_.mode)));
      Policy policy;
      try {
        policy = parse_policy(request.policy);
      } catch (const ConfigError& e) {
        return reply_error(e.what());
      }
      steering_->set_policy(policy);
      spdlog::info("policy is now {}", policy_name(policy));
      control_->finish_ok(client, {{"policy", policy_name(policy)}});
      return;
    }

    case Verb::kStop:
      control_->finish_ok(client, {{"stopping", true}});
      spdlog::info("stop requested through the control socket");
      begin_stop(true);
      return;

    case Verb::kDrain: {
      if (request.wait && busy()) return;
      std::vector<uint32_t> targets;
      if (request.all) {
        for (const auto& slot : slots_) {
          if (slot->wanted && !slot->removing) targets.push_back(slot->index);
        }
      } else {
        if (!check_slot(*request.slot)) return;
        if (slots_[*request.slot]->wanted) targets.push_back(*request.slot);
      }
      drain_slots(targets, drain_timeout(request));
      if (!request.wait) {
        control_->finish_ok(client, {{"drained", targets}});
        return;
      }
      op_.emplace();
      op_->verb = Verb::kDrain;
      op_->client = client;
      op_->active = std::set<uint32_t>(targets.begin(), targets.end());
      op_->started_at = Clock::now();
      operation_progress("draining " + std::to_string(targets.size()) + " worker(s)");
      return;
    }

    case Verb::kUndrain: {
      if (busy()) return;
      std::vector<uint32_t> targets;
      if (request.all) {
        for (const auto& slot : slots_) {
          if (!slot->removing) targets.push_back(slot->index);
        }
      } else {
        if (!check_slot(*request.slot)) return;
        targets.push_back(*request.slot);
      }
      op_.emplace();
      op_->verb = Verb::kUndrain;
      op_->client = client;
      op_->started_at = Clock::now();
      for (uint32_t index : targets) {
        Slot& slot = *slots_[index];
        const bool serving = slot.wanted && !slot.failed && slot.serving;
        slot.wanted = true;
        slot.failed = false;
        slot.restart_at.reset();
        if (serving) continue;
        if (auto ok = start_serving(slot); !ok) {
          op_->failure = "slot " + std::to_string(index) + ": " + ok.error().message();
          break;
        }
        op_->active.insert(index);
        operation_progress("slot " + std::to_string(index) + ": starting pid " +
                           std::to_string(slot.serving->pid));
      }
      return;
    }

    case Verb::kReload:
    case Verb::kRestart: {
      if (busy()) return;
      std::deque<uint32_t> targets;
      if (request.verb == Verb::kRestart) {
        if (!check_slot(*request.slot)) return;
        if (!slots_[*request.slot]->serving) {
          return reply_error("slot " + std::to_string(*request.slot) +
                             " has no serving worker (drained? use undrain)");
        }
        targets.push_back(*request.slot);
      } else {
        // Every slot, drained ones included: a reload brings them back.
        for (const auto& slot : slots_) {
          if (!slot->removing) targets.push_back(slot->index);
        }
      }
      start_reload(client, request.verb, std::move(targets), request.parallel,
                   request.timeout_s ? to_ms(*request.timeout_s) : ready_timeout());
      return;
    }

    case Verb::kScale: {
      if (busy()) return;
      if (request.workers > LBD_MAX_SLOTS) {
        return reply_error("at most " + std::to_string(LBD_MAX_SLOTS) + " workers");
      }
      op_.emplace();
      op_->verb = Verb::kScale;
      op_->client = client;
      op_->started_at = Clock::now();
      // Up: slots that were being scaled away come back first, then new slots.
      for (uint32_t index = 0; index < request.workers; index++) {
        if (index >= slots_.size()) add_slot();
        Slot& slot = *slots_[index];
        if (!slot.removing) continue;
        slot.removing = false;
        slot.wanted = true;
      }
      for (uint32_t index = 0; index < request.workers; index++) {
        Slot& slot = *slots_[index];
        if (!slot.wanted || slot.serving) continue;
        if (auto ok = start_serving(slot); !ok) {
          op_->failure = "slot " + std::to_string(index) + ": " + ok.error().message();
          break;
        }
        op_->active.insert(index);
        operation_progress("slot " + std::to_string(index) + ": starting pid " +
                           std::to_string(slot.serving->pid));
      }
      // Down: the highest slots drain and go.
      std::vector<uint32_t> removed;
      for (uint32_t index = request.workers; index < slots_.size(); index++) {
        Slot& slot = *slots_[index];
        if (slot.removing) continue;
        slot.removing = true;
        removed.push_back(index);
        op_->active.insert(index);
      }
      drain_slots(removed, options_.shutdown_timeout);
      remove_scaled_away_slots();
      return;
    }
  }
}

// Takes slots out of steering and drains their workers: queued connections migrate, in-flight
// requests finish, keep-alive clients are told "Connection: close" on their next request, and
// silent ones are closed at the timeout. The slots stay down until undrain (or are removed, for
// scale).
void Supervisor::drain_slots(const std::vector<uint32_t>& targets, std::chrono::milliseconds timeout) {
  for (uint32_t index : targets) {
    Slot& slot = *slots_[index];
    slot.wanted = false;
    slot.restart_at.reset();
    if (slot.replacement) kill_now(*slot.replacement);
    if (slot.serving) {
      spdlog::info("worker {}: draining pid {} (at most {} s)", index, slot.serving->pid,
                   timeout.count() / 1000.0);
      retire(slot, std::move(slot.serving), Retire::kDrain, timeout);
    }
    update_state(slot);
  }
}

void Supervisor::start_reload(std::optional<ClientId> client, Verb verb, std::deque<uint32_t> targets,
                              uint32_t parallel, std::chrono::milliseconds timeout) {
  op_.emplace();
  op_->verb = verb;
  op_->client = client;
  op_->pending = std::move(targets);
  op_->parallel = std::max(1u, parallel);
  op_->timeout = timeout;
  op_->started_at = Clock::now();
  operation_progress(std::string(verb == Verb::kReload ? "reloading " : "restarting ") +
                     std::to_string(op_->pending.size()) + " worker(s) from " +
                             (is_program() ? options_.program->command[0] : binary_));
  advance_operation();
}

void Supervisor::advance_operation() {
  if (!op_) return;
  switch (op_->verb) {
    case Verb::kReload:
    case Verb::kRestart:
      // A failed slot stops the rollout: the next slots would most likely fail the same way,
      // and every old worker is still serving.
      while (op_->failure.empty() && op_->active.size() < op_->parallel && !op_->pending.empty()) {
        const uint32_t index = op_->pending.front();
        op_->pending.pop_front();
        auto found = slot_at(index);
        if (!found || (*found)->removing) continue;
        if ((*found)->replacement) {
          operation_progress("slot " + std::to_string(index) + ": a new worker is starting there already (pid " +
                             std::to_string((*found)->replacement->pid) + "); skipped");
          continue;
        }
        Slot& slot = **found;
        if (slot.serving && slot.serving->role == Role::kStarting) {
          // Already starting (a crash restart): it runs the binary on disk anyway.
          operation_progress("slot " + std::to_string(index) + ": pid " + std::to_string(slot.serving->pid) +
                             " is starting already; skipped");
          continue;
        }
        if (!slot.serving) {
          // Drained, failed, or waiting to restart: a reload brings the slot back.
          slot.wanted = true;
          slot.failed = false;
          slot.restart_at.reset();
          if (auto ok = start_serving(slot); !ok) {
            op_->failure = "slot " + std::to_string(index) + ": " + ok.error().message();
            break;
          }
          slot.serving->for_operation = true;
          slot.serving->ready_by = slot.serving->started_at + op_->timeout;
          op_->active.insert(index);
          operation_progress("slot " + std::to_string(index) + ": starting pid " +
                             std::to_string(slot.serving->pid) + " (the slot was down)");
          continue;
        }
        if (auto ok = start_replacement(slot, op_->timeout); !ok) {
          op_->failure = "slot " + std::to_string(index) + ": " + ok.error().message();
          break;
        }
        op_->active.insert(index);
        operation_progress("slot " + std::to_string(index) + ": starting pid " +
                           std::to_string(slot.replacement->pid) + " to replace pid " +
                           std::to_string(slot.serving->pid));
      }
      if (op_->active.empty() && (op_->pending.empty() || !op_->failure.empty())) finish_operation();
      return;

    case Verb::kDrain:
    case Verb::kUndrain:
    case Verb::kScale: {
      // A slot is done when it is serving (wanted) or has no process left (not wanted).
      std::vector<uint32_t> done;
      for (uint32_t index : op_->active) {
        auto slot = slot_at(index);
        if (!slot) {  // scaled away and already removed
          done.push_back(index);
          continue;
        }
        Slot& s = **slot;
        if (s.removing) {
          if (!has_process(s)) done.push_back(index);
        } else if (s.wanted) {
          if (s.failed) {
            if (op_->failure.empty()) op_->failure = "slot " + std::to_string(index) + ": worker failed to start";
            done.push_back(index);
          } else if (s.serving && s.serving->role == Role::kServing) {
            operation_progress("slot " + std::to_string(index) + ": pid " + std::to_string(s.serving->pid) +
                               " serving");
            done.push_back(index);
          }
        } else if (!has_process(s)) {
          operation_progress("slot " + std::to_string(index) + ": drained");
          done.push_back(index);
        }
      }
      for (uint32_t index : done) {
        op_->active.erase(index);
        op_->succeeded++;
      }
      if (op_->active.empty()) finish_operation();
      return;
    }
    default:
      return;
  }
}

void Supervisor::operation_progress(const std::string& message) {
  if (!op_) return;
  spdlog::info("{}: {}", control::verb_name(op_->verb), message);
  if (op_->client && control_) control_->progress(*op_->client, message);
}

void Supervisor::operation_slot_failed(uint32_t slot, const std::string& why) {
  if (!op_ || !op_->active.count(slot)) return;
  op_->active.erase(slot);
  if (op_->failure.empty()) op_->failure = why;
}

void Supervisor::finish_operation() {
  Operation op = std::move(*op_);
  op_.reset();
  const double took = seconds_since(op.started_at);
  if (op.verb == Verb::kReload) {
    if (op.failure.empty()) {
      reloads_++;
    } else {
      reload_failures_++;
    }
  }
  if (!op.failure.empty()) {
    spdlog::error("{} failed after {:.1f} s: {}", control::verb_name(op.verb), took, op.failure);
    if (op.client && control_) {
      control_->finish_error(*op.client, std::string(control::verb_name(op.verb)) + " failed: " + op.failure);
    }
    return;
  }
  spdlog::info("{} done in {:.1f} s", control::verb_name(op.verb), took);
  if (op.client && control_) {
    control_->finish_ok(*op.client, {{"verb", control::verb_name(op.verb)},
                                     {"slots", op.succeeded},
                                     {"seconds", took}});
  }
}

json Supervisor::status() {
  const auto now = Clock::now();
  if (is_program()) sample_program_trees(now, /*now_even_if_sampled_lately=*/true);
  json workers = json::array();
  auto row = [&](const Slot& slot, WorkerProcess& p, const char* state) {
    json w = {{"slot", slot.index},
              {"pid", p.pid},
              {"cpu", slot.cpu},
              {"state", state},
              {"uptime_s", std::chrono::duration<double>(now - p.started_at).count()},
              {"restarts", slot.restart_count}};
    const lbd_slot& entry = table().slot(slot.index);
    if (p.role == Role::kRetiring) {
      w["connections"] = p.reported_open;
    } else {
      w["connections"] = load_field(entry.open);
      w["accepted"] = load_field(entry.accepted);
      w["requests"] = load_field(entry.requests);
      w["inflight"] = load_field(entry.inflight);
    }
    if (auto usage = read_process_usage(p.pid)) {
      // A program's memory is its whole tree's (gunicorn's workers are its children), as
      // --max-memory sees it; once sampled.
      w["rss_bytes"] = is_program() && p.tree_rss ? p.tree_rss : usage->rss_bytes;
      w["cpu_percent"] = p.cpu.percent(usage->cpu_seconds, now, p.started_at);
    }
    if (p.stats) w["latency_histogram"] = latency_histogram(p.stats->read());
    if (steering_ && p.role != Role::kRetiring) {
      SlotCounters c = steering_->counters(slot.index);
      w["steered"] = c.selected;
      w["migrated_in"] = c.migrated;
    }
    workers.push_back(std::move(w));
  };
  for (const auto& slot : slots_) {
    if (slot->serving) {
      row(*slot, *slot->serving,
          !slot->wanted                               ? "draining"
          : slot->serving->role == Role::kServing     ? "active"
                                                      : "starting");
    } else if (slot->retiring.empty()) {  // nothing runs here: say why
      json w = {{"slot", slot->index},
                {"pid", nullptr},
                {"cpu", slot->cpu},
                {"state", slot->failed                          ? "failed"
                          : slot->removing                      ? "removing"
                          : !slot->wanted                       ? "drained"
                          : slot->restart_at                    ? "restarting"
                                                                : "empty"},
                {"restarts", slot->restart_count}};
      workers.push_back(std::move(w));
    }
    if (slot->replacement) row(*slot, *slot->replacement, "starting");
    for (const auto& p : slot->retiring) row(*slot, *p, "draining");
  }
  json listen = json::array();
  for (const auto& address : bound_) listen.push_back(address.to_string());
  json result = {
      {"lbd",
       {{"pid", getpid()},
        {"version", LBD_VERSION},
        {"mode", mode_name(options_.mode)},
        {"policy", steering_ ? policy_name(steering_->policy()) : "kernel"},
        {"listen", listen},
        {"uptime_s", seconds_since(started_at_)},
        {"reloads", reloads_},
        {"reload_failures", reload_failures_},
        {"operation", op_ ? json(control::verb_name(op_->verb)) : json(nullptr)}}},
      {"workers", workers}};
  if (steering_) result["lbd"]["fallbacks"] = steering_->fallbacks();
  result["lbd"]["app"] = options_.app;
  if (is_program()) {
    result["lbd"]["command"] = options_.program->command;
    result["lbd"]["log"] = options_.program->log_dir + "/" + options_.app + ".log";
    result["lbd"]["log_dropped_lines"] = logs_ ? logs_->dropped_lines() : 0;
  }
  if (options_.max_memory) {
    result["lbd"]["max_memory_bytes"] = options_.max_memory;
    result["lbd"]["memory_replacements"] = memory_replacements_;
  }
  return result;
}

}  // namespace lbd
