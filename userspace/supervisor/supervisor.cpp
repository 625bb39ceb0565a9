// Set-up, the event loop, signals and stopping. See supervisor.h for the model.
#include "supervisor/supervisor.h"

#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>

#include <fmt/ranges.h>

#include "common/log.h"
#include "net/fd_passing.h"
#include "net/listener.h"
#include "supervisor/notify.h"
#include "supervisor/worker_process.h"

namespace lbd {

namespace {

const char* signal_name(uint32_t signo) {
  const char* name = sigabbrev_np(static_cast<int>(signo));
  return name ? name : "?";
}

}  // namespace

Supervisor::Supervisor(SupervisorOptions options) : options_(std::move(options)) {}
Supervisor::~Supervisor() = default;

SlotTable& Supervisor::table() { return steering_ ? steering_->table() : *plain_table_; }

std::string Supervisor::listen_summary() const {
  std::string text;
  for (const auto& address : bound_) {
    if (!text.empty()) text += ", ";
    text += address.to_string();
  }
  return text;
}

int Supervisor::run() {
  started_at_ = Clock::now();
  if (auto ok = set_up(); !ok) {
    spdlog::error("{}", ok.error().message());
    for (auto& slot : slots_) {
      if (slot->serving) kill_now(*slot->serving);
    }
    return 1;
  }

  PollEvent events[64];
  while (true) {
    int n = poller_->wait(events, 64, poll_timeout_ms());
    if (n < 0) {
      spdlog::error("epoll_wait: {}", strerror(errno));
      return 1;
    }
    for (int i = 0; i < n; i++) {
      const PollEvent& e = events[i];
      switch (e.source) {
        case Source::kSignal:
          on_signal();
          break;
        case Source::kStatus:
          on_status(e.index);
          break;
        case Source::kHandoffListener:
          accept_for_handoff(e.index);
          break;
        case Source::kControl:
          if (control_) control_->on_listener_ready();
          break;
        case Source::kControlClient:
          if (control_) control_->on_client_event(e.index, e.events);
          break;
        case Source::kAdmin:
          if (admin_) admin_->on_listener_ready();
          break;
        case Source::kAdminClient:
          if (admin_) admin_->on_client_event(e.index, e.events);
          break;
        case Source::kNotify:
          on_notify(e.index);
          break;
        case Source::kOutput:
          on_output(e.index);
          break;
      }
    }
    run_timers();
    advance_operation();
    if (stopping_ && !any_process()) break;
    if (!stopping_ && !slots_.empty() &&
        std::all_of(slots_.begin(), slots_.end(), [](const auto& s) { return s->failed; })) {
      spdlog::error("every worker has failed; lbd is exiting");
      return 1;
    }
  }
  if (steering_) {
    std::string summary;
    for (const auto& slot : slots_) {
      SlotCounters c = steering_->counters(slot->index);
      summary += fmt::format("{}slot {}: {} selected, {} migrated", summary.empty() ? "" : "; ",
                             slot->index, c.selected, c.migrated);
      if (c.select_failed) summary += fmt::format(", {} retried", c.select_failed);
    }
    spdlog::info("steering: {}; {} left to the kernel's hash", summary, steering_->fallbacks());
  }
  spdlog::info("stopped");
  return exit_code_;
}

Result<void> Supervisor::set_up() {
  binary_ = current_binary_path();
  if (binary_.empty()) return Error::from_errno("cannot find lbd's own binary (/proc/self/exe)");

  // Signals arrive through the loop, never as interruptions.
  sigset_t mask;
  sigemptyset(&mask);
  for (int sig : {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP}) sigaddset(&mask, sig);
  if (sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) return Error::from_errno("block signals");
  signal(SIGPIPE, SIG_IGN);
  signal_fd_.reset(signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signal_fd_) return Error::from_errno("signalfd");
  auto poller = Poller::create();
  if (!poller) return poller.error();
  poller_.emplace(std::move(*poller));
  LBD_TRY(poller_->watch(signal_fd_.get(), Source::kSignal, 0));

  // Refuse a port someone else holds before anything is created, and turn port 0 into a real
  // port every listener of the address then binds.
  std::vector<UniqueFd> port_holds;  // released once our own listeners own the ports
  for (const auto& address : options_.listen) {
    auto reserved = net::reserve_port(address);
    if (!reserved) return reserved.error();
    bound_.push_back(reserved->address);
    port_holds.push_back(std::move(reserved->hold));
  }

  if (!options_.control_path.empty()) {
    auto control = ControlServer::open(options_.control_path, *poller_,
                                       [this](ClientId client, const control::Request& request) {
                                         on_request(client, request);
                                       });
    if (control) {
      control_.emplace(std::move(*control));
    } else if (options_.control_path_given) {
      return control.error();
    } else {
      spdlog::warn("no control socket ({}); lbctl cannot reach this lbd (see --control)",
                   control.error().message());
    }
  }

  if (options_.admin) {
    auto admin = AdminServer::open(*options_.admin, *poller_,
                                   {.not_ready_because = [this] { return not_ready_because(); },
                                    .metrics = [this] { return metrics_text(); }});
    if (!admin) return admin.error();
    admin_.emplace(std::move(*admin));
    // Tests and scripts read the port from this line when --admin asked for port 0.
    spdlog::info("admin: serving http://{}", admin_->address().to_string());
  }

  if (is_program()) {
    const ProgramOptions& program = *options_.program;
    if (!program.cwd.empty() && !std::filesystem::is_directory(program.cwd)) {
      return Error::from_errno(ENOENT, "--cwd " + program.cwd);
    }
    if (auto found = find_program(program.command[0], program.cwd); !found) return found.error();
    auto logs = logs::LogCollector::create({.dir = program.log_dir,
                                            .app = options_.app,
                                            .max_bytes = program.log_max_bytes,
                                            .keep_files = program.log_files});
    if (!logs) return logs.error().wrap("log");
    logs_ = std::move(*logs);
    std::vector<uint16_t> ports;
    for (const auto& address : bound_) ports.push_back(address.port());
    tree_sampler_ = std::make_unique<TreeSampler>(std::move(ports));
  }

  if (options_.mode == Mode::kBpf) {
    auto steering = Steering::load(options_.steering);
    if (!steering) return steering.error();
    steering_.emplace(std::move(*steering));
    steering_->set_slot_count(options_.workers);
    for (const auto& address : bound_) {
      auto group = steering_->add_group(address);
      if (!group) return group.error();
      groups_.push_back(*group);
    }
  } else {
    auto memfd = SlotTable::create_memfd();
    if (!memfd) return memfd.error();
    plain_table_.emplace(std::move(*memfd));
  }

  if (options_.mode == Mode::kShared || options_.mode == Mode::kHandoff) {
    port_holds.clear();  // a single plain listener cannot bind beside the reuseport hold
    LBD_TRY(open_shared_listeners());
  }

  std::string what = "workers";
  if (is_program()) {
    what = fmt::format("workers of {} ({}; log {}/{}.log)", options_.app,
                       fmt::join(options_.program->command, " "), options_.program->log_dir, options_.app);
  }
  spdlog::info("starting {} {} on {} (mode {}, policy {}, {}{})", options_.workers, what,
               listen_summary(), mode_name(options_.mode), policy_name(options_.steering.policy),
               options_.pin ? "pinned" : "not pinned",
               control_ ? ", control " + control_->path() : std::string());
  // Every slot first: a program learns the worker count (LB_WORKERS) when it starts.
  for (uint32_t i = 0; i < options_.workers; i++) add_slot();
  for (uint32_t i = 0; i < options_.workers; i++) {
    if (auto ok = start_serving(*slots_[i]); !ok) return ok.error().wrap("start worker " + std::to_string(i));
  }
  return {};
}

Result<void> Supervisor::open_shared_listeners() {
  const bool handoff = options_.mode == Mode::kHandoff;
  for (uint32_t g = 0; g < bound_.size(); g++) {
    net::ListenerOptions listener_options;
    listener_options.backlog = options_.backlog;
    listener_options.reuseport = false;
    listener_options.nonblocking = handoff;  // the supervisor's own accept loop
    auto fd = net::listen_tcp(bound_[g], listener_options);
    if (!fd) return fd.error();
    if (handoff) LBD_TRY(poller_->watch(fd->get(), Source::kHandoffListener, g));
    shared_listeners_.push_back(std::move(*fd));
  }
  return {};
}

bool Supervisor::any_process() const {
  return std::any_of(slots_.begin(), slots_.end(), [](const auto& s) {
    return s->serving || s->replacement || !s->retiring.empty();
  });
}

// --- timers ---------------------------------------------------------------------------------

void Supervisor::run_timers() {
  const auto now = Clock::now();
  for (auto& slot_ptr : slots_) {
    Slot& slot = *slot_ptr;
    if (slot.restart_at && *slot.restart_at <= now && !stopping_) {
      slot.restart_at.reset();
      slot.restart_count++;
      history_[slot.index].restarts++;
      if (auto ok = start_serving(slot); !ok) {
        spdlog::error("worker {}: restart failed: {}", slot.index, ok.error().message());
        auto delay = slot.restarts.on_crash(now);
        if (delay) {
          slot.restart_at = now + *delay;
        } else {
          slot.failed = true;
        }
      }
    }
    // A program that has not said READY=1 counts as ready after --ready-delay.
    for (WorkerProcess* p : {slot.serving.get(), slot.replacement.get()}) {
      if (p && p->role == Role::kStarting && p->ready_at && *p->ready_at <= now) {
        p->ready_at.reset();
        on_ready(slot, *p);
      }
    }
    // Starting too long (a reload's new worker, or a start that hangs): kill it; its exit is
    // handled like any other failure to start.
    for (WorkerProcess* p : {slot.serving.get(), slot.replacement.get()}) {
      if (p && p->role == Role::kStarting && p->ready_by && *p->ready_by <= now) {
        spdlog::error("worker {}: pid {} not ready after {} s; killing it", slot.index, p->pid,
                      std::chrono::duration<double>(now - p->started_at).count());
        p->ready_by.reset();
        p->timed_out = true;
        kill_now(*p);
      }
    }
    for (auto& p : slot.retiring) {
      if (p->kill_at && *p->kill_at <= now) {
        spdlog::warn("worker {}: pid {} still draining at its deadline; killing it", slot.index, p->pid);
        p->kill_at.reset();
        kill_now(*p);
      }
    }
  }
  if (stopping_ && now >= stop_deadline_) {
    stop_deadline_ = now + std::chrono::hours(24);  // once
    for (auto& slot : slots_) {
      for (WorkerProcess* p : {slot->serving.get(), slot->replacement.get()}) {
        if (p) kill_now(*p);
      }
      for (auto& p : slot->retiring) kill_now(*p);
    }
  }
  if (is_program()) {
    publish_program_loads(now);
    sample_program_trees(now);
  }
  check_memory(now);
  if (control_ && now >= next_control_sweep_) {
    next_control_sweep_ = now + std::chrono::seconds(1);
    control_->expire_silent_clients();
  }
  if (logs_ && now >= next_log_check_) {
    next_log_check_ = now + std::chrono::seconds(1);
    if (auto error = logs_->take_error()) spdlog::warn("log: {}", error->message());
  }
  if (admin_) admin_->expire(now);
}

int Supervisor::poll_timeout_ms() const {
  auto next = Clock::time_point::max();
  for (const auto& slot : slots_) {
    if (slot->restart_at) next = std::min(next, *slot->restart_at);
    for (const WorkerProcess* p : {slot->serving.get(), slot->replacement.get()}) {
      if (p && p->ready_by) next = std::min(next, *p->ready_by);
      if (p && p->ready_at) next = std::min(next, *p->ready_at);
    }
    for (const auto& p : slot->retiring) {
      if (p->kill_at) next = std::min(next, *p->kill_at);
    }
  }
  if (stopping_) next = std::min(next, stop_deadline_);
  if (is_program() && any_process()) next = std::min({next, next_load_publish_, next_tree_sample_});
  if (options_.max_memory && !stopping_) next = std::min(next, next_memory_check_);
  if (control_) next = std::min(next, next_control_sweep_);
  if (logs_) next = std::min(next, next_log_check_);
  if (admin_) {
    if (auto deadline = admin_->next_deadline()) next = std::min(next, *deadline);
  }
  if (next == Clock::time_point::max()) return -1;
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(ms + 1, 0, 60'000));
}

// --- signals and stopping ---------------------------------------------------------------------

void Supervisor::on_signal() {
  signalfd_siginfo info{};
  while (read(signal_fd_.get(), &info, sizeof(info)) == sizeof(info)) {
    switch (info.ssi_signo) {
      case SIGCHLD:
        reap_children();
        break;
      case SIGTERM:
      case SIGINT:
        if (stopping_) {
          spdlog::warn("second SIG{}: stopping at once", signal_name(info.ssi_signo));
          begin_stop(false);
        } else {
          spdlog::info("SIG{}: stopping gracefully (at most {} s)", signal_name(info.ssi_signo),
                       options_.shutdown_timeout.count() / 1000.0);
          begin_stop(true);
        }
        break;
      case SIGQUIT:
        spdlog::info("SIGQUIT: stopping at once");
        begin_stop(false);
        break;
      case SIGHUP:
        if (stopping_) break;
        if (op_) {
          spdlog::warn("SIGHUP: a {} is in progress; not reloading", control::verb_name(op_->verb));
          break;
        }
        spdlog::info("SIGHUP: rolling reload");
        {
          std::deque<uint32_t> all;
          for (const auto& slot : slots_) all.push_back(slot->index);
          start_reload(std::nullopt, control::Verb::kReload, std::move(all), 1,
                       ready_timeout());
        }
        break;
    }
  }
}

void Supervisor::begin_stop(bool graceful) {
  if (!stopping_) notify_service_manager("STOPPING=1");
  if (op_) {
    if (op_->client && control_) control_->finish_error(*op_->client, "lbd is stopping");
    op_.reset();
  }
  stopping_ = true;
  stop_deadline_ = Clock::now() + (graceful ? options_.shutdown_timeout : std::chrono::milliseconds(0));
  if (options_.mode == Mode::kHandoff) {
    for (auto& fd : shared_listeners_) poller_->unwatch(fd.get());
    shared_listeners_.clear();  // refuse new connections
  }
  for (auto& slot_ptr : slots_) {
    Slot& slot = *slot_ptr;
    slot.restart_at.reset();
    if (slot.replacement) kill_now(*slot.replacement);
    if (!graceful) {
      if (slot.serving) kill_now(*slot.serving);
      for (auto& p : slot.retiring) kill_now(*p);
      continue;
    }
    if (slot.serving) retire(slot, std::move(slot.serving), Retire::kStop, options_.shutdown_timeout);
    // Those already draining close their idle connections now, too. (Not a program: it has its
    // SIGTERM already, and many treat a second one as "exit now".)
    if (!is_program()) {
      for (auto& p : slot.retiring) tell_to_drain(*p, Retire::kStop, options_.shutdown_timeout, -1);
    }
    update_state(slot);
  }
}

// --- --mode handoff ---------------------------------------------------------------------------

// The Node.js cluster model, kept for comparison: this process accepts every connection and
// passes it to the next active worker over its Unix socket. A worker whose socket is full is
// skipped; if every one is full the connection is dropped and counted.
void Supervisor::accept_for_handoff(uint32_t listener) {
  if (listener >= shared_listeners_.size()) return;
  for (int batch = 0; batch < 64; batch++) {
    UniqueFd client(accept4(shared_listeners_[listener].get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!client) {
      if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
        spdlog::warn("handoff accept: {}", strerror(errno));
      }
      return;
    }
    bool sent = false;
    for (size_t tries = 0; tries < slots_.size() && !sent; tries++) {
      Slot& slot = *slots_[handoff_next_++ % slots_.size()];
      WorkerProcess* p = slot.serving.get();
      if (!p || p->role != Role::kServing || !slot.wanted || !p->handoff) continue;
      sent = net::send_message(p->handoff.get(), "C", client.get()).ok();
    }
    if (!sent && (handoff_dropped_++ % 1000) == 0) {
      spdlog::warn("handoff: no worker could take a connection ({} dropped so far)", handoff_dropped_);
    }
  }
}

}  // namespace lbd
