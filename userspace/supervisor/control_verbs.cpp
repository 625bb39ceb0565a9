// The control socket's verbs (control/protocol.h), one handler each, registered in one table:
// a new verb is a line in kVerbs, its handler here, its entry in the protocol and lbctl, and a
// test. Quick verbs answer at once; long ones (reload, restart, drain --wait, undrain, scale)
// are the slot manager's operations, which answer when they end.
#include <unistd.h>

#include "common/log.h"
#include "supervisor/process_stats.h"
#include "supervisor/supervisor.h"

namespace lbd {

namespace {

using control::Verb;

std::optional<std::chrono::milliseconds> timeout_of(const control::Request& request) {
  if (!request.timeout_s) return std::nullopt;
  return std::chrono::milliseconds(static_cast<int64_t>(*request.timeout_s * 1000));
}

}  // namespace

const Supervisor::VerbHandler Supervisor::kVerbs[] = {
    {Verb::kStatus, /*while_stopping=*/true, &Supervisor::verb_status},
    {Verb::kPolicy, false, &Supervisor::verb_policy},
    {Verb::kStop, false, &Supervisor::verb_stop},
    {Verb::kDrain, false, &Supervisor::verb_drain},
    {Verb::kUndrain, false, &Supervisor::verb_undrain},
    {Verb::kReload, false, &Supervisor::verb_reload},
    {Verb::kRestart, false, &Supervisor::verb_restart},
    {Verb::kScale, false, &Supervisor::verb_scale},
    {Verb::kUpgrade, false, &Supervisor::verb_upgrade},
    {Verb::kSend, false, &Supervisor::verb_send},
};

namespace {

// A slot's word in `lbctl status`'s STATE column: of its serving process if it has one, else why
// nothing serves there. (Its replacement and retiring processes have rows of their own.)
const char* slot_state_word(const SlotRecord& slot) {
  if (slot.serving) {
    return !slot.wanted ? "draining" : slot.serving->role == ProcessRole::kServing ? "active" : "starting";
  }
  if (!slot.retiring.empty()) return "draining";
  return slot.failed ? "failed" : slot.removing ? "removing" : !slot.wanted ? "drained" : slot.restart_at ? "restarting" : "empty";
}

}  // namespace

void Supervisor::on_request(ClientId client, const control::Request& request) {
  for (const VerbHandler& handler : kVerbs) {
    if (handler.verb != request.verb) continue;
    record_dirty_ = true;  // a request may change what the record says (the policy, the slots)
    if (slots_->stopping() && !handler.while_stopping) return control_->finish_error(client, "lbd is stopping");
    return (this->*handler.handle)(client, request);
  }
  control_->finish_error(client, std::string("lbd cannot ") + control::verb_name(request.verb));
}

void Supervisor::verb_status(ClientId client, const control::Request&) {
  control_->finish_ok(client, control::to_json(status()));
}

void Supervisor::verb_policy(ClientId client, const control::Request& request) {
  if (!shared_.steering) {
    return control_->finish_error(client, "policies apply to --mode bpf; this lbd runs --mode " +
                                              std::string(mode_name(options_.mode)));
  }
  auto policy = parse_policy(request.policy);
  if (!policy) return control_->finish_error(client, policy.error().message());
  shared_.steering->set_policy(*policy);
  spdlog::info("policy is now {}", policy_name(*policy));
  control_->finish_ok(client, {{"policy", policy_name(*policy)}});
}

void Supervisor::verb_stop(ClientId client, const control::Request&) {
  control_->finish_ok(client, {{"stopping", true}});
  spdlog::info("stop requested through the control socket");
  slots_->stop(true, Clock::now());
}

void Supervisor::verb_drain(ClientId client, const control::Request& request) {
  slots_->drain(client, request, Clock::now());
}

void Supervisor::verb_undrain(ClientId client, const control::Request& request) {
  slots_->undrain(client, request, Clock::now());
}

void Supervisor::verb_reload(ClientId client, const control::Request& request) {
  if (!pick_up_binary(client)) return;
  slots_->reload(client, request.parallel, timeout_of(request), Clock::now());
}

void Supervisor::verb_restart(ClientId client, const control::Request& request) {
  slots_->restart(client, *request.slot, timeout_of(request), Clock::now());
}

void Supervisor::verb_scale(ClientId client, const control::Request& request) {
  slots_->scale(client, request.workers, Clock::now());
}

void Supervisor::verb_upgrade(ClientId client, const control::Request& request) {
  spdlog::info("upgrade requested through the control socket");
  upgrade(client, timeout_of(request).value_or(manager_config().ready_timeout));
}

// An operator's line to one slot's worker or to every active one (Node's worker.send). Each
// child delivers it without waiting (Child::deliver_message): one whose channel is full is
// reported, by slot and pid, as not delivered, and the others still get it.
void Supervisor::verb_send(ClientId client, const control::Request& request) {
  std::vector<const SlotRecord*> targets;
  for (const auto& slot : slots_->slots()) {
    if (request.all ? slot.active() : slot.index == *request.slot) targets.push_back(&slot);
  }
  if (request.all && targets.empty()) return control_->finish_error(client, "no worker is active to send to");
  if (!request.all) {
    if (std::string missing = slots_->no_such_slot(*request.slot); !missing.empty()) {
      return control_->finish_error(client, missing);
    }
    const SlotRecord& slot = *targets.front();
    if (!slot.active()) {
      return control_->finish_error(client, "slot " + std::to_string(slot.index) + " has no active worker (it is " +
                                                slot_state_word(slot) + "): nothing sent");
    }
  }
  nlohmann::json sent = nlohmann::json::array();
  nlohmann::json undelivered = nlohmann::json::array();
  for (const SlotRecord* slot : targets) {
    const ProcessRecord& p = *slot->serving;
    Child* c = child(p.id);
    auto delivered = c ? c->deliver_message(request.text) : Result<void>(Error::invalid("lbd does not hold it"));
    if (delivered) {
      sent.push_back(slot->index);
      continue;
    }
    spdlog::warn("message not delivered to worker {} (pid {}): {}", slot->index, p.pid, delivered.error().message());
    undelivered.push_back({{"slot", slot->index}, {"pid", p.pid}, {"error", delivered.error().message()}});
  }
  spdlog::info("message delivered to {} of {} worker(s)", sent.size(), targets.size());
  control_->finish_ok(client, {{"sent", sent}, {"undelivered", undelivered}, {"workers", targets.size()}});
}

// --- status -----------------------------------------------------------------------------------

control::StatusReport Supervisor::status() {
  const auto now = Clock::now();
  if (is_program()) sample_program_trees(now, /*now_even_if_sampled_lately=*/true);
  control::StatusReport report;
  auto row = [&](const SlotRecord& slot, const ProcessRecord& p, const char* state) {
    control::WorkerStatus w;
    w.slot = slot.index;
    w.pid = p.pid;
    w.cpu = slot.cpu;
    w.state = state;
    w.uptime_s = std::chrono::duration<double>(now - p.started_at).count();
    w.restarts = slot.restart_count;
    Child* c = child(p.id);
    if (p.role == ProcessRole::kRetiring) {
      w.connections = c ? c->draining_connections() : 0;
    } else {
      const lbd_slot& entry = shared_.table().slot(slot.index);
      w.connections = load_field(entry.open);
      w.full = load_field(entry.full) != 0;
      w.accepted = load_field(entry.accepted);
      w.requests = load_field(entry.requests);
      w.inflight = load_field(entry.inflight);
    }
    if (auto usage = read_process_usage(p.pid); usage && c) {
      // A program's memory is its whole tree's (gunicorn's workers are its children), as
      // --max-memory sees it.
      w.rss_bytes = c->resident_bytes();
      w.cpu_percent = c->cpu_meter().percent(usage->cpu_seconds, now, p.started_at);
    }
    if (c && c->stats()) {
      const WorkerStatsSnapshot stats = c->stats()->read();
      control::LatencyHistogram histogram;
      for (size_t i = 0; i < kDurationBoundsNs.size(); i++) histogram.bounds_seconds.push_back(duration_bound_seconds(i));
      histogram.counts.assign(stats.duration_counts.begin(), stats.duration_counts.end());
      histogram.sum_seconds = stats.duration_sum_seconds();
      w.latency_histogram = std::move(histogram);
    }
    if (shared_.steering && p.role != ProcessRole::kRetiring) {
      SlotCounters counters = shared_.steering->counters(slot.index);
      w.steered = counters.selected;
      w.migrated_in = counters.migrated;
    }
    report.workers.push_back(std::move(w));
  };
  for (const auto& slot : slots_->slots()) {
    if (slot.serving) {
      row(slot, *slot.serving, slot_state_word(slot));
    } else if (slot.retiring.empty()) {  // nothing runs here: say why
      control::WorkerStatus w;
      w.slot = slot.index;
      w.cpu = slot.cpu;
      w.state = slot_state_word(slot);
      w.restarts = slot.restart_count;
      report.workers.push_back(std::move(w));
    }
    if (slot.replacement) row(slot, *slot.replacement, "starting");
    for (const auto& p : slot.retiring) row(slot, p, "draining");
  }

  control::LbdStatus& lbd = report.lbd;
  lbd.pid = getpid();
  lbd.version = LBD_VERSION;
  lbd.app = options_.app;
  lbd.mode = mode_name(options_.mode);
  lbd.policy = shared_.steering ? policy_name(shared_.steering->policy()) : "kernel";
  for (const auto& address : shared_.bound) lbd.listen.push_back(address.to_string());
  lbd.uptime_s = std::chrono::duration<double>(now - started_at_).count();
  lbd.reloads = slots_->reloads();
  lbd.reload_failures = slots_->reload_failures();
  if (auto op = slots_->operation()) {
    lbd.operation = control::verb_name(*op);
  } else if (slots_->leaving()) {  // telling balancers first (--drain-grace)
    lbd.operation = slots_->stopping() ? "stop" : "drain";
  }
  if (shared_.steering) lbd.fallbacks = shared_.steering->fallbacks();
  if (is_program()) {
    lbd.command = options_.program->command;
    lbd.log = options_.program->log_dir + "/" + options_.app + ".log";
    lbd.log_dropped_lines = shared_.logs ? shared_.logs->dropped_lines() : 0;
  }
  if (options_.max_memory) {
    lbd.max_memory_bytes = options_.max_memory;
    lbd.memory_replacements = slots_->memory_replacements();
  }
  return report;
}

}  // namespace lbd
