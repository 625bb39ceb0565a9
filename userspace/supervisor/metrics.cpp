// What the admin endpoint (admin_server.h) reports: /readyz's verdict and the /metrics text.
//
// Every series carries app="lbd" (one service per lbd, for now), and per-slot series carry
// slot="N" for every slot lbd has, drained ones included. A slot's counters never go backwards
// while lbd runs: what its exited processes counted is kept in its history (on_child_exit,
// slot_effects.cpp) and added to what its live processes count now, so a reload, a restart or
// a crash is not a counter reset. Reading costs no syscall per worker for the request counters
// (shared memory); CPU and memory come from /proc, the steering counters from the BPF map.
#include <algorithm>

#include "common/log.h"
#include "metrics/exposition.h"
#include "supervisor/process_stats.h"
#include "supervisor/supervisor.h"

namespace lbd {

namespace {

using metrics::Label;
using metrics::MetricType;

// One slot's numbers, gathered before writing: the text format wants each family's samples
// together, so the slots are walked once per family.
struct SlotSample {
  std::string slot;
  uint64_t connections = 0;
  bool table_full = false;
  WorkerStatsSnapshot stats;
  double cpu_seconds = 0;
  uint64_t rss_bytes = 0;
  uint64_t restarts = 0;
  SlotCounters steering;
};

}  // namespace

WorkerStatsSnapshot Supervisor::slot_stats(const SlotRecord& slot) {
  WorkerStatsSnapshot total = history_[slot.index].stats;
  for (const auto* p : slots_->processes()) {
    if (p->slot != slot.index) continue;
    if (Child* c = child(p->id); c && c->stats()) total += c->stats()->read();
  }
  return total;
}

std::string Supervisor::metrics_text() {
  if (is_program()) sample_program_trees(Clock::now(), /*now_even_if_sampled_lately=*/true);
  const Label app{"app", options_.app};  // "lbd", or lbd run --name / a config file's app
  metrics::Exposition out;

  out.family("lbd_build_info", MetricType::kGauge, "lbd's version, as a label; always 1.");
  out.sample("lbd_build_info", {app, {"version", LBD_VERSION}}, uint64_t{1});
  out.family("lbd_mode", MetricType::kGauge, "How connections reach the workers (--mode); always 1.");
  out.sample("lbd_mode", {app, {"mode", mode_name(options_.mode)}}, uint64_t{1});
  out.family("lbd_policy", MetricType::kGauge,
             "The steering policy in force; always 1. \"kernel\" outside --mode bpf.");
  out.sample("lbd_policy", {app, {"policy", shared_.steering ? policy_name(shared_.steering->policy()) : "kernel"}},
             uint64_t{1});
  out.family("lbd_ready", MetricType::kGauge, "1 while /readyz answers 200, else 0.");
  out.sample("lbd_ready", {app}, uint64_t{slots_->not_ready_because().empty() ? 1u : 0u});

  // Processes by the state `lbctl status` shows them in.
  uint64_t starting = 0, active = 0, draining = 0;
  for (const auto& slot : slots_->slots()) {
    if (slot.serving) {
      if (!slot.wanted) {
        draining++;
      } else if (slot.serving->role == ProcessRole::kServing) {
        active++;
      } else {
        starting++;
      }
    }
    if (slot.replacement) starting++;
    draining += slot.retiring.size();
  }
  out.family("lbd_workers", MetricType::kGauge, "Worker processes by state.");
  out.sample("lbd_workers", {app, {"state", "starting"}}, starting);
  out.sample("lbd_workers", {app, {"state", "active"}}, active);
  out.sample("lbd_workers", {app, {"state", "draining"}}, draining);

  out.family("lbd_reloads_total", MetricType::kCounter, "Rolling reloads completed.");
  out.sample("lbd_reloads_total", {app}, slots_->reloads());
  out.family("lbd_reload_failures_total", MetricType::kCounter,
             "Rolling reloads that failed (a new worker was not ready; the old ones kept serving).");
  out.sample("lbd_reload_failures_total", {app}, slots_->reload_failures());

  std::vector<SlotSample> samples;
  for (const SlotRecord& slot : slots_->slots()) {
    SlotSample s;
    s.slot = std::to_string(slot.index);
    s.stats = slot_stats(slot);
    s.cpu_seconds = history_[slot.index].cpu_seconds;
    s.restarts = slots_->total_restarts(slot.index);
    for (const auto* p : slots_->processes()) {
      if (p->slot != slot.index) continue;
      Child* c = child(p->id);
      // The serving worker publishes its open connections in the slot table; a retiring one
      // no longer writes there and reports them itself.
      if (p->role == ProcessRole::kServing) {
        s.connections += load_field(shared_.table().slot(slot.index).open);
        s.table_full = load_field(shared_.table().slot(slot.index).full) != 0;
      }
      if (p->role == ProcessRole::kRetiring && c) s.connections += c->draining_connections();
      if (auto usage = usage_samples_.find(p->id); usage != usage_samples_.end() && c) {
        s.cpu_seconds += usage->second.cpu_seconds;
        s.rss_bytes += usage->second.rss_bytes;
      }
    }
    if (shared_.steering) s.steering = shared_.steering->counters(slot.index);
    samples.push_back(std::move(s));
  }

  auto per_slot = [&](const char* name, MetricType type, const char* help, auto value_of) {
    out.family(name, type, help);
    for (const SlotSample& s : samples) out.sample(name, {app, {"slot", s.slot}}, value_of(s));
  };
  per_slot("lbd_connections", MetricType::kGauge, "Client connections open in the slot's workers.",
           [](const SlotSample& s) { return s.connections; });
  per_slot("lbd_connection_table_full", MetricType::kGauge,
           "1 while the slot's worker has no free connection slot and has stopped accepting.",
           [](const SlotSample& s) { return uint64_t{s.table_full}; });
  per_slot("lbd_accepted_connections_total", MetricType::kCounter,
           "Client connections the slot's workers accepted.",
           [](const SlotSample& s) { return s.stats.accepted; });
  per_slot("lbd_requests_total", MetricType::kCounter, "Requests the slot's workers answered.",
           [](const SlotSample& s) { return s.stats.requests(); });

  static const std::vector<double> bounds = [] {
    std::vector<double> seconds;
    for (size_t i = 0; i < kDurationBoundsNs.size(); i++) seconds.push_back(duration_bound_seconds(i));
    return seconds;
  }();
  out.family("lbd_request_duration_seconds", MetricType::kHistogram,
             "Time from a complete request to its answer being ready, handler and deferred "
             "waits included.");
  for (const SlotSample& s : samples) {
    const Label labels[] = {app, {"slot", s.slot}};
    out.histogram("lbd_request_duration_seconds", labels, bounds, s.stats.duration_counts,
                  s.stats.duration_sum_seconds());
  }

  per_slot("lbd_worker_cpu_seconds_total", MetricType::kCounter,
           "CPU time (user + system) of the slot's workers, exited ones included.",
           [](const SlotSample& s) { return s.cpu_seconds; });
  per_slot("lbd_worker_resident_memory_bytes", MetricType::kGauge,
           "Resident memory of the slot's running workers.",
           [](const SlotSample& s) { return s.rss_bytes; });
  per_slot("lbd_worker_restarts_total", MetricType::kCounter,
           "Times the slot's worker was restarted after a crash.",
           [](const SlotSample& s) { return s.restarts; });

  if (shared_.steering) {
    per_slot("lbd_steering_selected_total", MetricType::kCounter,
             "New connections the steering program sent to the slot.",
             [](const SlotSample& s) { return s.steering.selected; });
    per_slot("lbd_steering_migrated_total", MetricType::kCounter,
             "Queued or half-open connections the steering program moved to the slot from a "
             "closing listener.",
             [](const SlotSample& s) { return s.steering.migrated; });
    out.family("lbd_steering_fallback_total", MetricType::kCounter,
               "Connections left to the kernel's hash because no slot was active.");
    out.sample("lbd_steering_fallback_total", {app}, shared_.steering->fallbacks());
  }
  return out.take();
}

void Supervisor::sample_usage(Clock::time_point now) {
  if ((!admin_ && !agent_) || now < next_usage_sample_) return;
  next_usage_sample_ = now + std::chrono::seconds(1);
  const double elapsed = std::chrono::duration<double>(now - last_usage_sample_).count();
  last_usage_sample_ = now;
  std::map<ProcessId, UsageSample> before = std::move(usage_samples_);
  usage_samples_.clear();
  for (const auto* p : slots_->processes()) {
    Child* c = child(p->id);
    auto usage = read_process_usage(p->pid);
    if (!c || !usage) continue;
    UsageSample& sample = usage_samples_[p->id];
    sample = {usage->cpu_seconds, c->tree_rss().value_or(usage->rss_bytes)};
    if (auto previous = before.find(p->id); previous != before.end() && elapsed > 0) {
      sample.cpu_busy = std::max(0.0, usage->cpu_seconds - previous->second.cpu_seconds) / elapsed;
    }
  }
}

}  // namespace lbd
