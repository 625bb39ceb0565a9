#include "supervisor/supervisor.h"

#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/log.h"
#include "net/fd_passing.h"
#include "net/listener.h"
#include "supervisor/worker_process.h"

namespace lbd {

namespace {

// epoll tags: what kind of fd, and which one.
enum class Source : uint32_t { kSignal = 1, kStatus, kHandoffListener };
uint64_t tag(Source source, uint32_t index) { return static_cast<uint64_t>(source) << 32 | index; }

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = sigabbrev_np(WTERMSIG(status));
    return "was killed by signal " + std::to_string(WTERMSIG(status)) +
           (name ? std::string(" (SIG") + name + ")" : std::string());
  }
  return "ended (status " + std::to_string(status) + ")";
}

// systemd Type=notify support: READY=1 once serving, STOPPING=1 on stop. A no-op without
// NOTIFY_SOCKET.
void notify_service_manager(const char* message) {
  const char* path = getenv("NOTIFY_SOCKET");
  if (!path || (path[0] != '/' && path[0] != '@')) return;
  UniqueFd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  size_t len = std::min(strlen(path), sizeof(addr.sun_path) - 1);
  memcpy(addr.sun_path, path, len);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  sendto(fd.get(), message, strlen(message), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr),
         static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len));
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

// --- set-up -----------------------------------------------------------------------------------

int Supervisor::run() {
  if (auto ok = set_up(); !ok) {
    spdlog::error("{}", ok.error().message());
    for (Slot& slot : slots_) {
      if (slot.pid > 0) kill(slot.pid, SIGKILL);
    }
    return 1;
  }

  epoll_event events[64];
  while (true) {
    int n = epoll_wait(epoll_.get(), events, 64, epoll_timeout_ms());
    if (n < 0 && errno != EINTR) {
      spdlog::error("epoll_wait: {}", strerror(errno));
      return 1;
    }
    for (int i = 0; i < n; i++) {
      const uint64_t data = events[i].data.u64;
      const auto source = static_cast<Source>(data >> 32);
      const auto index = static_cast<uint32_t>(data);
      switch (source) {
        case Source::kSignal:
          on_signal();
          break;
        case Source::kStatus:
          if (index < slots_.size()) on_status(slots_[index]);
          break;
        case Source::kHandoffListener:
          accept_for_handoff(index);
          break;
      }
    }
    run_timers();
    if (stopping_ && !any_process()) break;
    if (!stopping_ && std::all_of(slots_.begin(), slots_.end(),
                                  [](const Slot& s) { return s.phase == SlotPhase::kFailed; })) {
      spdlog::error("every worker has failed; lbd is exiting");
      return 1;
    }
  }
  if (steering_) {
    std::string summary;
    for (const Slot& slot : slots_) {
      SlotCounters c = steering_->counters(slot.index);
      summary += fmt::format("{}slot {}: {} selected, {} migrated", summary.empty() ? "" : "; ",
                             slot.index, c.selected, c.migrated);
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
  epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) return Error::from_errno("epoll_create1");
  LBD_TRY(watch(signal_fd_.get(), tag(Source::kSignal, 0)));

  // Refuse a port someone else holds before anything is created, and turn port 0 into a real
  // port every listener of the address then binds.
  std::vector<UniqueFd> port_holds;  // released once our own listeners own the ports
  for (const auto& address : options_.listen) {
    auto reserved = net::reserve_port(address);
    if (!reserved) return reserved.error();
    bound_.push_back(reserved->address);
    port_holds.push_back(std::move(reserved->hold));
  }

  if (options_.mode == Mode::kBpf) {
    auto steering = Steering::load(options_.steering);
    if (!steering) return steering.error();
    steering_.emplace(std::move(*steering));
    steering_->set_slot_count(options_.workers);
  } else {
    auto memfd = SlotTable::create_memfd();
    if (!memfd) return memfd.error();
    plain_table_.emplace(std::move(*memfd));
  }

  if (options_.mode == Mode::kShared || options_.mode == Mode::kHandoff) {
    port_holds.clear();  // a single plain listener cannot bind beside the reuseport hold
    LBD_TRY(open_shared_listeners());
  }

  slots_.reserve(options_.workers);
  for (uint32_t i = 0; i < options_.workers; i++) {
    slots_.push_back(Slot{i, options_.pin ? options_.cpus[i % options_.cpus.size()] : -1,
                          SlotPhase::kEmpty, 0, {}, {}, {},
                          RestartPolicy(options_.max_restarts, options_.restart_window), {}, 0});
    Slot& slot = slots_.back();
    store_field(table().slot(i).cpu, slot.cpu >= 0 ? static_cast<uint32_t>(slot.cpu) : ~0u);
    set_state(slot, LBD_SLOT_EMPTY);
  }
  spdlog::info("starting {} workers on {} (mode {}, policy {}, {})", options_.workers,
               listen_summary(), mode_name(options_.mode), policy_name(options_.steering.policy),
               options_.pin ? "pinned" : "not pinned");
  for (Slot& slot : slots_) {
    if (auto ok = start_worker(slot); !ok) return ok.error().wrap("start worker " + std::to_string(slot.index));
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
    if (handoff) LBD_TRY(watch(fd->get(), tag(Source::kHandoffListener, g)));
    shared_listeners_.push_back(std::move(*fd));
  }
  return {};
}

// One listener per address for this slot's worker, in the address's reuseport group.
Result<void> Supervisor::open_slot_listeners(Slot& slot) {
  slot.listeners.clear();
  for (uint32_t g = 0; g < bound_.size(); g++) {
    net::ListenerOptions listener_options;
    listener_options.backlog = options_.backlog;
    auto fd = net::listen_tcp(bound_[g], listener_options);
    if (!fd) return fd.error();
    if (steering_) {
      if (groups_.size() <= g) {
        auto group = steering_->add_group(bound_[g]);
        if (!group) return group.error();
        groups_.push_back(*group);
      }
      LBD_TRY(steering_->attach(fd->get()));
      LBD_TRY(steering_->set_socket(groups_[g], slot.index, fd->get()));
    }
    slot.listeners.push_back(std::move(*fd));
  }
  return {};
}

void Supervisor::set_state(Slot& slot, uint32_t state) {
  store_field(table().slot(slot.index).state, state);
}

// --- workers ----------------------------------------------------------------------------------

Result<void> Supervisor::start_worker(Slot& slot) {
  slot.restart_at.reset();
  set_state(slot, LBD_SLOT_STARTING);  // never chosen until it says it is ready

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
  launch.slot_table_fd = table().fd();

  int status_pair[2];
  // Non-blocking both ways: the supervisor never waits on a worker, and the worker's one
  // "READY=1" always fits.
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, status_pair) != 0) {
    return Error::from_errno("status socketpair");
  }
  UniqueFd status_ours(status_pair[0]);
  UniqueFd status_theirs(status_pair[1]);
  launch.status_fd = status_theirs.get();

  UniqueFd handoff_theirs;
  switch (options_.mode) {
    case Mode::kBpf:
    case Mode::kReuseport:
      LBD_TRY(open_slot_listeners(slot));
      for (const auto& fd : slot.listeners) launch.listener_fds.push_back(fd.get());
      break;
    case Mode::kShared:
      for (const auto& fd : shared_listeners_) launch.listener_fds.push_back(fd.get());
      break;
    case Mode::kHandoff: {
      launch.spec.accept_mode = AcceptMode::kHandoff;
      int pair[2];
      if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) != 0) {
        return Error::from_errno("handoff socketpair");
      }
      slot.handoff.reset(pair[0]);
      handoff_theirs.reset(pair[1]);
      launch.handoff_fd = handoff_theirs.get();
      break;
    }
  }

  auto pid = spawn_worker(launch);
  if (!pid) return pid.error();
  slot.pid = *pid;
  slot.phase = SlotPhase::kStarting;
  slot.status = std::move(status_ours);
  LBD_TRY(watch(slot.status.get(), tag(Source::kStatus, slot.index)));
  spdlog::debug("worker {} started: pid {}", slot.index, slot.pid);
  return {};
}

void Supervisor::on_status(Slot& slot) {
  while (slot.status) {
    char message[128];
    ssize_t n = recv(slot.status.get(), message, sizeof(message) - 1, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      n = 0;  // treat errors like the end: the worker is gone
    }
    if (n == 0) {  // the worker exited (SIGCHLD tells how)
      unwatch(slot.status.get());
      slot.status.reset();
      return;
    }
    std::string_view text(message, static_cast<size_t>(n));
    if (text == "READY=1") {
      on_ready(slot);
    } else if (text.starts_with("EXEC_FAILED=")) {
      int err = atoi(message + strlen("EXEC_FAILED="));
      spdlog::error("worker {}: cannot execute {}: {}", slot.index, binary_, strerror(err));
    }
  }
}

void Supervisor::on_ready(Slot& slot) {
  if (slot.phase != SlotPhase::kStarting) return;
  slot.phase = SlotPhase::kActive;
  set_state(slot, LBD_SLOT_ACTIVE);
  spdlog::info("worker {} ready: pid {}, cpu {}", slot.index, slot.pid,
               slot.cpu >= 0 ? std::to_string(slot.cpu) : std::string("any"));
  check_all_ready();
}

void Supervisor::check_all_ready() {
  if (announced_ready_) return;
  for (const Slot& slot : slots_) {
    if (slot.phase != SlotPhase::kActive && slot.phase != SlotPhase::kFailed) return;
  }
  announced_ready_ = true;
  auto active = std::count_if(slots_.begin(), slots_.end(),
                              [](const Slot& s) { return s.phase == SlotPhase::kActive; });
  spdlog::info("ready: {} workers serving {} (mode {}, policy {})", active, listen_summary(),
               mode_name(options_.mode), policy_name(options_.steering.policy));
  notify_service_manager("READY=1");
}

// A retired listener leaves the group: the kernel migrates its queued and half-open connections
// to an active worker (the program chooses), so nothing that reached this slot is reset.
void Supervisor::retire_listeners(Slot& slot) {
  for (UniqueFd& fd : slot.listeners) {
    if (auto ok = net::stop_listening(fd.get()); !ok) {
      spdlog::warn("worker {}: {}", slot.index, ok.error().message());
    }
  }
  if (steering_) {
    for (uint32_t g = 0; g < groups_.size(); g++) (void)steering_->clear_socket(groups_[g], slot.index);
  }
  slot.listeners.clear();
}

void Supervisor::drain(Slot& slot) {
  if (slot.pid <= 0 || slot.phase == SlotPhase::kDraining) return;
  set_state(slot, LBD_SLOT_DRAINING);  // out of steering first...
  retire_listeners(slot);              // ...then its queue moves to the others
  slot.phase = SlotPhase::kDraining;
  kill(slot.pid, SIGTERM);
}

void Supervisor::reap_children() {
  while (true) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    for (Slot& slot : slots_) {
      if (slot.pid == pid) {
        on_exit(slot, status);
        break;
      }
    }
  }
}

void Supervisor::on_exit(Slot& slot, int wait_status) {
  const SlotPhase was = slot.phase;
  const pid_t pid = slot.pid;
  set_state(slot, LBD_SLOT_EMPTY);
  retire_listeners(slot);
  if (slot.status) {
    unwatch(slot.status.get());
    slot.status.reset();
  }
  slot.handoff.reset();
  slot.pid = 0;
  slot.phase = SlotPhase::kEmpty;

  if (was == SlotPhase::kDraining || stopping_) {
    spdlog::info("worker {} (pid {}) {}", slot.index, pid, describe_exit(wait_status));
    return;
  }
  const char* what = was == SlotPhase::kStarting ? "failed to start" : "crashed";
  auto delay = slot.restarts.on_crash(Clock::now());
  if (!delay) {
    slot.phase = SlotPhase::kFailed;
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

void Supervisor::run_timers() {
  const auto now = Clock::now();
  for (Slot& slot : slots_) {
    if (!slot.restart_at || *slot.restart_at > now || stopping_) continue;
    slot.restart_count++;
    if (auto ok = start_worker(slot); !ok) {
      spdlog::error("worker {}: restart failed: {}", slot.index, ok.error().message());
      auto delay = slot.restarts.on_crash(now);
      if (delay) {
        slot.restart_at = now + *delay;
      } else {
        slot.phase = SlotPhase::kFailed;
        slot.restart_at.reset();
      }
    }
  }
  if (stopping_ && any_process() && now >= stop_deadline_) {
    spdlog::warn("shutdown timeout: killing workers still draining");
    for (Slot& slot : slots_) {
      if (slot.pid > 0) kill(slot.pid, SIGKILL);
    }
    stop_deadline_ = now + std::chrono::hours(24);  // once
  }
}

int Supervisor::epoll_timeout_ms() const {
  auto next = Clock::time_point::max();
  for (const Slot& slot : slots_) {
    if (slot.restart_at) next = std::min(next, *slot.restart_at);
  }
  if (stopping_) next = std::min(next, stop_deadline_);
  if (next == Clock::time_point::max()) return -1;
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(ms + 1, 0, 60'000));
}

bool Supervisor::any_process() const {
  return std::any_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.pid > 0; });
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
          spdlog::warn("second {}: stopping at once", sigabbrev_np(static_cast<int>(info.ssi_signo)));
          begin_stop(false);
        } else {
          spdlog::info("SIG{}: stopping gracefully (at most {} s)",
                       sigabbrev_np(static_cast<int>(info.ssi_signo)),
                       options_.shutdown_timeout.count() / 1000.0);
          begin_stop(true);
        }
        break;
      case SIGQUIT:
        spdlog::info("SIGQUIT: stopping at once");
        begin_stop(false);
        break;
      case SIGHUP:
        spdlog::warn("SIGHUP: rolling reload is not available in this version; ignored");
        break;
    }
  }
}

void Supervisor::begin_stop(bool graceful) {
  if (!stopping_) notify_service_manager("STOPPING=1");
  stopping_ = true;
  stop_deadline_ = Clock::now() + (graceful ? options_.shutdown_timeout : std::chrono::milliseconds(0));
  for (uint32_t g = 0; g < shared_listeners_.size(); g++) {
    if (options_.mode == Mode::kHandoff) unwatch(shared_listeners_[g].get());
  }
  if (options_.mode == Mode::kHandoff) shared_listeners_.clear();  // refuse new connections
  for (Slot& slot : slots_) {
    slot.restart_at.reset();
    if (slot.pid <= 0) continue;
    if (graceful) {
      drain(slot);
    } else {
      set_state(slot, LBD_SLOT_DRAINING);
      kill(slot.pid, SIGKILL);
    }
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
      Slot& slot = slots_[handoff_next_++ % slots_.size()];
      if (slot.phase != SlotPhase::kActive || !slot.handoff) continue;
      sent = net::send_fd(slot.handoff.get(), client.get()).ok();
    }
    if (!sent && (handoff_dropped_++ % 1000) == 0) {
      spdlog::warn("handoff: no worker could take a connection ({} dropped so far)", handoff_dropped_);
    }
  }
}

// --- epoll ------------------------------------------------------------------------------------

Result<void> Supervisor::watch(int fd, uint64_t data) {
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = data;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) != 0) return Error::from_errno("epoll_ctl add");
  return {};
}

void Supervisor::unwatch(int fd) { epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr); }

}  // namespace lbd
