// Set-up, the event loop, signals, and exec mode's periodic looks. See supervisor.h.
#include "supervisor/supervisor.h"

#include <signal.h>
#include <sys/resource.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>

#include <fmt/ranges.h>

#include "common/log.h"
#include "net/listener.h"
#include "steer_abi.h"
#include "supervisor/launch.h"
#include "supervisor/notify.h"
#include "supervisor/process_stats.h"
#include "supervisor/program_load.h"
#include "worker/channel.h"

namespace lbd {

namespace {

// Counting a program's connections costs about 5 ms per 1000 held (one readlink per fd,
// process_tree.h; on the sampler's thread): often enough for `least`, which steers by them,
// rarely for the others.
constexpr std::chrono::milliseconds kTreeSampleInterval{250};
constexpr std::chrono::milliseconds kTreeSampleIntervalNotSteering{1000};
// While nothing happens (no connection open in the last sample, none steered for kTreesBusyFor)
// the trees are sampled this often: each sample reads every /proc/PID/stat on the machine and
// dumps the kernel's TCP table (about 6 ms of CPU with 100 processes), and with nothing open or
// arriving there is nothing for `least` to count. A connection steered to a program brings the
// interval back at once (lbctl status and /metrics sample on demand anyway).
constexpr std::chrono::milliseconds kTreeSampleIntervalIdle{30'000};
constexpr std::chrono::milliseconds kTreesBusyFor{5000};
// How long lbd's own worker may take from exec to ready, when no reload says otherwise.
constexpr std::chrono::milliseconds kWorkerReadyTimeout{30'000};

const char* signal_name(uint32_t signo) {
  const char* name = sigabbrev_np(static_cast<int>(signo));
  return name ? name : "?";
}

}  // namespace

Supervisor::Supervisor(SupervisorOptions options)
    : options_(std::move(options)), shared_(options_), history_(LBD_MAX_SLOTS) {}

Supervisor::~Supervisor() = default;

SlotManagerConfig Supervisor::manager_config() const {
  SlotManagerConfig config;
  config.workers = options_.workers;
  config.cpus = options_.cpus;
  config.pin = options_.pin;
  config.max_restarts = options_.max_restarts;
  config.restart_window = options_.restart_window;
  config.shutdown_timeout = options_.shutdown_timeout;
  if (options_.program) config.kill_grace = std::chrono::milliseconds(0);
  config.ready_timeout = options_.program ? options_.program->ready_timeout : kWorkerReadyTimeout;
  config.drain_grace = options_.drain_grace;
  config.max_memory = options_.max_memory;
  config.reload_source = options_.program ? options_.program->command[0] : shared_.binary;
  return config;
}

std::string Supervisor::listen_summary() const {
  std::string text;
  for (const auto& address : shared_.bound) {
    if (!text.empty()) text += ", ";
    text += address.to_string();
  }
  return text;
}

Child* Supervisor::child(ProcessId id) {
  auto it = children_.find(id);
  return it == children_.end() ? nullptr : it->second.get();
}

int Supervisor::run() {
  started_at_ = Clock::now();
  if (auto ok = set_up(); !ok) {
    spdlog::error("{}", ok.error().message());
    // What this lbd started goes; what it was taking over from another is left serving, and so
    // is the control socket a predecessor may still be serving on.
    if (slots_ && !took_over_) slots_->kill_all();
    if (took_over_) leave_shared_files();
    return 1;
  }

  PollEvent events[64];
  while (true) {
    int n = shared_.poller->wait(events, 64, poll_timeout_ms());
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
        case Source::kExit:
          on_child_exit(e.index);
          break;
        case Source::kStatus:
        case Source::kNotify:
        case Source::kOutput:
          on_child_readable(e.source, e.index);
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
        case Source::kAgent:
          if (agent_) agent_->on_listener_ready();
          break;
        case Source::kAgentClient:
          if (agent_) agent_->on_client_event(e.index);
          break;
      }
      // Upgraded: the successor is in charge of everything now, the rest of this batch included.
      if (handed_over_) return 0;
    }
    run_timers(Clock::now());
    save_record();  // handed to its writer's thread: the loop does not wait for the disk
    if (slots_->finished()) break;
    if (slots_->all_failed()) {
      spdlog::error("every worker has failed; lbd is exiting");
      forget_record();
      return 1;
    }
  }
  if (shared_.steering) {
    std::string summary;
    for (const auto& slot : slots_->slots()) {
      SlotCounters c = shared_.steering->counters(slot.index);
      summary += fmt::format("{}slot {}: {} selected, {} migrated", summary.empty() ? "" : "; ", slot.index,
                             c.selected, c.migrated);
      if (c.select_failed) summary += fmt::format(", {} retried", c.select_failed);
    }
    spdlog::info("steering: {}; {} left to the kernel's hash", summary, shared_.steering->fallbacks());
  }
  forget_record();
  spdlog::info("stopped");
  return 0;
}

Result<void> Supervisor::set_up() {
  // Every worker's listeners, channels and pidfd, every lbctl and admin connection: the default
  // soft limit of 1024 is low for that. Up to the hard limit, which needs no privilege.
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  shared_.binary = current_binary_path();
  if (shared_.binary.empty()) return Error::from_errno("cannot find lbd's own binary (/proc/self/exe)");
  // The file this lbd was started from: workers and restarts execute it until a reload picks up
  // a new build the same checks trust.
  auto binary = open_lbd_binary(shared_.binary);
  if (!binary) return binary.error();
  shared_.binary_fd = std::move(*binary);
  if (auto trusted = check_trusted_binary(shared_.binary_fd.get(), shared_.binary); !trusted) {
    spdlog::warn("{}; a reload will keep the workers on this build", trusted.error().message());
  }

  // Signals arrive through the loop, never as interruptions. Children's exits come through
  // their pidfds; SIGCHLD says that one was stopped or continued (on_signal). Blocked here, before
  // any thread starts, so that every thread inherits the mask and none takes it instead.
  sigset_t mask;
  sigemptyset(&mask);
  for (int sig : {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR2, SIGCHLD}) sigaddset(&mask, sig);
  if (sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) return Error::from_errno("block signals");
  signal(SIGPIPE, SIG_IGN);
  signal_fd_.reset(signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signal_fd_) return Error::from_errno("signalfd");
  auto poller = Poller::create();
  if (!poller) return poller.error();
  shared_.poller.emplace(std::move(*poller));
  LBD_TRY(shared_.poller->watch(signal_fd_.get(), Source::kSignal, 0));

  // --mode handoff keeps the supervisor in the data path: nothing to hand over or take over.
  if (options_.mode != Mode::kHandoff) record_path_ = state_record_path(options_.control_path);
  if (auto upgrade = upgrade_channel_from_environment()) return take_over_from_predecessor(std::move(*upgrade));
  auto record = record_to_take_over();
  if (!record) return record.error();
  if (*record) {
    took_over_ = true;
    if (auto taken = take_over(**record, FdTaker(-1), /*upgrading=*/false); !taken) {
      return taken.error().wrap("cannot take over from the lbd before (its processes keep serving)");
    }
    take_charge();
    return {};
  }
  return start_fresh();
}

Result<void> Supervisor::open_control(UniqueFd adopted) {
  if (options_.control_path.empty()) return {};
  auto handler = [this](ClientId client, const control::Request& request) { on_request(client, request); };
  auto control = adopted ? ControlServer::adopt(options_.control_path, std::move(adopted), *shared_.poller, handler)
                         : ControlServer::open(options_.control_path, *shared_.poller, handler);
  if (control) {
    control_.emplace(std::move(*control));
  } else if (options_.control_path_given) {
    return control.error();
  } else {
    spdlog::warn("no control socket ({}); lbctl cannot reach this lbd (see --control)", control.error().message());
    record_path_.clear();
    no_record_why_ = "this lbd keeps no state record (it has no control socket)";
  }
  return {};
}

Result<void> Supervisor::open_admin(UniqueFd adopted) {
  if (!options_.admin) return {};
  AdminEndpoints endpoints{.not_ready_because = [this] { return readiness_for_balancer(); },
                           .metrics = [this] { return metrics_text(); }};
  auto admin = adopted ? AdminServer::adopt(std::move(adopted), *shared_.poller, std::move(endpoints))
                       : AdminServer::open(*options_.admin, *shared_.poller, std::move(endpoints));
  if (!admin) return admin.error();
  admin_.emplace(std::move(*admin));
  // Tests and scripts read the port from this line when --admin asked for port 0.
  spdlog::info("admin: serving http://{}", admin_->address().to_string());
  if (!admin_->address().is_loopback()) {
    spdlog::warn("admin: {} is not a loopback address: anyone who can reach it reads /metrics (the app's "
                 "load, pids and memory); bind it to 127.0.0.1 or firewall it",
                 admin_->address().to_string());
  }
  return {};
}

Result<void> Supervisor::open_agent(UniqueFd adopted) {
  if (!options_.agent) return {};
  auto answer = [this] { return agent_line(); };
  auto agent = adopted ? AgentServer::adopt(std::move(adopted), *shared_.poller, answer)
                       : AgentServer::open(*options_.agent, *shared_.poller, answer);
  if (!agent) return agent.error();
  agent_.emplace(std::move(*agent));
  // Tests and scripts read the port from this line when --agent asked for port 0.
  spdlog::info("agent: answering HAProxy agent checks on {}", agent_->address().to_string());
  return {};
}

std::string Supervisor::readiness_for_balancer() {
  std::string why = slots_->not_ready_because();
  if (!why.empty()) slots_->on_balancer_told(Clock::now());
  return why;
}

std::string Supervisor::agent_line() {
  const auto now_ns = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count());
  const auto stale_ns = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(options_.steering.stale_after).count());
  std::vector<SlotLoad> loads;
  for (const auto& slot : slots_->slots()) {
    if (slot.removing) continue;
    SlotLoad load{.active = slot.active()};
    if (load.active) {
      const lbd_slot& entry = shared_.table().slot(slot.index);
      const uint64_t beat = load_field(entry.heartbeat_ns);
      load.stalled = beat != 0 && now_ns > beat && now_ns - beat > stale_ns;
      load.full = load_field(entry.full) != 0;
      if (auto usage = usage_samples_.find(slot.serving->id); usage != usage_samples_.end()) {
        load.cpu_busy = usage->second.cpu_busy;
      }
    }
    loads.push_back(load);
  }
  const std::string line =
      agent_answer(readiness_for_balancer(), slots_->has_active_slot(), agent_weight_percent(loads));
  spdlog::debug("agent: {}", line.substr(0, line.size() - 1));
  return line;
}

void Supervisor::watch_traffic_while_leaving(Clock::time_point now) {
  if (!slots_->leaving()) {
    next_traffic_look_ = Clock::time_point::max();
    return;
  }
  if (now < next_traffic_look_ && next_traffic_look_ != Clock::time_point::max()) return;
  const bool first = next_traffic_look_ == Clock::time_point::max();
  next_traffic_look_ = now + std::chrono::milliseconds(100);
  // Every count a new connection moves: the program's choices (--mode bpf), and what lbd's own
  // workers accept and answer (any mode). A program in --mode reuseport moves none of them: only
  // the grace's bound ends its wait.
  uint64_t count = 0;
  for (const auto& slot : slots_->slots()) {
    const lbd_slot& entry = shared_.table().slot(slot.index);
    count += load_field(entry.steered) + load_field(entry.accepted) + load_field(entry.requests);
  }
  if (!first && count != last_traffic_count_) slots_->on_traffic(now);
  last_traffic_count_ = count;
}

// Exec mode: the app's log, and the thread that samples the programs' process trees.
Result<void> Supervisor::set_up_exec_mode() {
  if (!is_program()) return {};
  const ProgramOptions& program = *options_.program;
  if (!program.cwd.empty() && !std::filesystem::is_directory(program.cwd)) {
    return Error::from_errno(ENOENT, "--cwd " + program.cwd);
  }
  auto found = find_runnable_program(program.command[0], program.cwd, options_.run_as ? &*options_.run_as : nullptr);
  if (!found) return found.error();
  auto logs = logs::LogCollector::create({.dir = program.log_dir,
                                          .group = options_.run_as ? static_cast<int>(options_.run_as->gid) : -1,
                                          .app = options_.app,
                                          .max_bytes = program.log_max_bytes,
                                          .keep_files = program.log_files});
  if (!logs) return logs.error().wrap("log");
  shared_.logs = std::move(*logs);
  std::vector<uint16_t> ports;
  for (const auto& address : shared_.bound) ports.push_back(address.port());
  tree_sampler_ = std::make_unique<TreeSampler>(std::move(ports));
  return {};
}

Result<void> Supervisor::start_fresh() {
  // Refuse a port someone else holds before anything is created, and turn port 0 into a real
  // port every listener of the address then binds.
  std::vector<UniqueFd> port_holds;  // released once our own listeners own the ports
  for (const auto& address : options_.listen) {
    auto reserved = net::reserve_port(address);
    if (!reserved) return reserved.error();
    shared_.bound.push_back(reserved->address);
    port_holds.push_back(std::move(reserved->hold));
  }
  LBD_TRY(open_control(UniqueFd()));
  LBD_TRY(open_admin(UniqueFd()));
  LBD_TRY(open_agent(UniqueFd()));
  LBD_TRY(set_up_exec_mode());

  if (options_.mode == Mode::kBpf) {
    auto steering = Steering::load(options_.steering);
    if (!steering) return steering.error();
    shared_.steering.emplace(std::move(*steering));
    shared_.steering->set_slot_count(options_.workers);
    for (const auto& address : shared_.bound) {
      auto group = shared_.steering->add_group(address);
      if (!group) return group.error();
      shared_.groups.push_back(*group);
    }
    // Pinned, so that an lbd started after this one dies can take the steering over too.
    if (!record_path_.empty()) {
      pin_dir_ = steering_pin_dir(record_path_);
      if (auto pinned = shared_.steering->pin(pin_dir_); !pinned) {
        spdlog::warn("{}: a new lbd could not take these workers over if this one died", pinned.error().message());
        no_record_why_ = "this lbd could not pin its steering maps (" + pinned.error().message() + ")";
        pin_dir_.clear();
        record_path_.clear();
      }
    }
  } else {
    auto memfd = SlotTable::create_memfd();
    if (!memfd) return memfd.error();
    shared_.plain_table.emplace(std::move(*memfd));
  }

  if (options_.mode == Mode::kShared || options_.mode == Mode::kHandoff) {
    port_holds.clear();  // a single plain listener cannot bind beside the reuseport hold
    LBD_TRY(open_shared_listeners());
  }

  std::string what = "workers";
  if (is_program()) {
    what = fmt::format("workers of {} ({}; log {}/{}.log)", options_.app, fmt::join(options_.program->command, " "),
                       options_.program->log_dir, options_.app);
  }
  spdlog::info("starting {} {} on {} (mode {}, policy {}, {}{})", options_.workers, what, listen_summary(),
               mode_name(options_.mode), policy_name(options_.steering.policy),
               options_.pin ? "pinned" : "not pinned", control_ ? ", control " + control_->path() : std::string());
  spdlog::info("{}", run_as_summary());
  slots_.emplace(manager_config(), static_cast<SlotEffects&>(*this));
  record_dirty_ = true;
  return slots_->start(Clock::now());
}

bool Supervisor::pick_up_binary(std::optional<ClientId> client) {
  if (is_program() || slots_->operation()) return true;  // a program is looked up at each start
  auto binary = open_lbd_binary(shared_.binary);
  Result<void> trusted = binary ? check_trusted_binary(binary->get(), shared_.binary) : Result<void>(binary.error());
  if (!trusted) {
    const std::string why = "reload refused: " + trusted.error().message() + "; the workers keep serving";
    spdlog::error("{}", why);
    if (client && control_) control_->finish_error(*client, why);
    return false;
  }
  shared_.binary_fd = std::move(*binary);
  return true;
}

std::string Supervisor::run_as_summary() const {
  const char* who = is_program() ? "the program runs" : "workers run";
  if (options_.run_as) return fmt::format("{} as {}, with no capabilities", who, options_.run_as->describe());
  if (geteuid() == 0) return fmt::format("{} as root (--allow-root), with the steering guard only", who);
  return fmt::format("{} as lbd's own user (uid {}), with no capabilities", who, geteuid());
}

Result<void> Supervisor::open_shared_listeners() {
  const bool handoff = options_.mode == Mode::kHandoff;
  for (uint32_t g = 0; g < shared_.bound.size(); g++) {
    net::ListenerOptions listener_options;
    listener_options.backlog = options_.backlog;
    listener_options.reuseport = false;
    listener_options.nonblocking = handoff;  // the supervisor's own accept loop
    auto fd = net::listen_tcp(shared_.bound[g], listener_options);
    if (!fd) return fd.error();
    if (handoff) LBD_TRY(shared_.poller->watch(fd->get(), Source::kHandoffListener, g));
    shared_.shared_listeners.push_back(std::move(*fd));
  }
  return {};
}

// --- events from children ---------------------------------------------------------------------

void Supervisor::on_child_readable(Source source, uint32_t index) {
  // Output pipes carry the stream in the index's low bit (poller.h).
  const ProcessId id = source == Source::kOutput ? index / 2 : index;
  Child* c = child(id);
  if (!c) return;
  if (c->on_readable(source, source == Source::kOutput ? index % 2 : 0) == ChildNews::kReady) {
    slots_->on_ready(id, Clock::now());
  }
}

// --- timers ---------------------------------------------------------------------------------

void Supervisor::run_timers(Clock::time_point now) {
  slots_->tick(now);
  if (is_program()) {
    look_at_programs(now);
    sample_program_trees(now);
  }
  sample_memory(now);
  if (control_ && now >= next_control_sweep_) {
    next_control_sweep_ = now + std::chrono::seconds(1);
    control_->expire_silent_clients();
  }
  if (shared_.logs && now >= next_log_check_) {
    next_log_check_ = now + std::chrono::seconds(1);
    if (auto error = shared_.logs->take_error()) spdlog::warn("log: {}", error->message());
  }
  if (admin_) admin_->expire(now);
  if (agent_) agent_->expire(now);
  sample_usage(now);
  watch_traffic_while_leaving(now);
  if (control_) control_->resume_accepting(now);
  if (admin_) admin_->resume_accepting(now);
  if (agent_) agent_->resume_accepting(now);
}

int Supervisor::poll_timeout_ms() const {
  auto next = slots_->next_deadline().value_or(Clock::time_point::max());
  if (is_program() && !children_.empty()) next = std::min({next, next_look_, next_tree_sample_});
  if (options_.max_memory && !slots_->stopping()) next = std::min(next, next_memory_sample_);
  if (control_) next = std::min(next, next_control_sweep_);
  if (shared_.logs) next = std::min(next, next_log_check_);
  if (record_write_failed_) next = std::min(next, next_record_retry_);
  if (admin_) {
    if (auto deadline = admin_->next_deadline()) next = std::min(next, *deadline);
    if (auto paused = admin_->accepting_paused_until()) next = std::min(next, *paused);
  }
  if (agent_) {
    if (auto deadline = agent_->next_deadline()) next = std::min(next, *deadline);
    if (auto paused = agent_->accepting_paused_until()) next = std::min(next, *paused);
  }
  if (admin_ || agent_) next = std::min(next, next_usage_sample_);
  if (slots_->leaving()) next = std::min(next, next_traffic_look_);
  if (control_) {
    if (auto paused = control_->accepting_paused_until()) next = std::min(next, *paused);
  }
  if (next == Clock::time_point::max()) return -1;
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(ms + 1, 0, 60'000));
}

// Every 10 ms, each program: a starting one's probe or ready delay, a serving one's load, a
// retiring one's queue (program_child.cpp). While every program is quiet, half as often as a
// heartbeat goes stale (program_load.h; docs/ARCHITECTURE.md, section 5).
void Supervisor::look_at_programs(Clock::time_point now) {
  if (now < next_look_) return;
  std::vector<ProcessId> ready;
  bool quiet = true;
  for (auto& [id, c] : children_) {
    if (c->look(now) == ChildNews::kReady) ready.push_back(id);
    quiet = quiet && c->quiet();
  }
  const auto stall_bound = std::min(options_.steering.stale_after, options_.steering.sticky_stale_after);
  next_look_ = now + look_interval(quiet, stall_bound);
  // Not inside the loop: readiness changes the slots' processes.
  for (ProcessId id : ready) slots_->on_ready(id, now);
}

// Each program's open connections and memory, over its whole process tree (a program may accept
// in children it forked, like gunicorn's workers). Periodically on the sampler's thread (the loop
// hands it the pids and picks up what it found); at once, on this thread, for an answer worth the
// wait (lbctl status, /metrics).
void Supervisor::sample_program_trees(Clock::time_point now, bool now_even_if_sampled_lately) {
  if (!tree_sampler_) return;
  auto apply = [&](const TreeSampler::Sample& sample) {
    if (!sample.error.empty()) {
      // Once at warning level: without the count `least` steers by the queues alone, which the
      // operator should know; after that at debug (it would repeat every 250 ms).
      static bool warned = false;
      if (!std::exchange(warned, true)) {
        spdlog::warn("cannot sample the workers' process trees ({}); policy least steers by their queues alone",
                     sample.error);
      } else {
        spdlog::debug("{}", sample.error);
      }
    }
    trees_hold_connections_ = false;
    for (auto& [id, c] : children_) {
      auto tree = sample.trees.find(c->pid());
      if (tree == sample.trees.end()) continue;  // started after the sample was asked for
      c->apply_tree(tree->second);
      if (tree->second.open.value_or(0) > 0) trees_hold_connections_ = true;
    }
  };
  if (auto sample = tree_sampler_->newest()) apply(*sample);
  std::vector<pid_t> roots;
  for (auto& [id, c] : children_) roots.push_back(c->pid());
  if (now_even_if_sampled_lately) {
    apply(tree_sampler_->take_now(roots));
    return;
  }
  if (now < next_tree_sample_) return;
  uint64_t steered = 0;
  for (const auto& slot : slots_->slots()) steered += load_field(shared_.table().slot(slot.index).steered);
  if (steered != steered_seen_ || trees_hold_connections_) trees_busy_until_ = now + kTreesBusyFor;
  steered_seen_ = steered;
  const bool by_load = shared_.steering && shared_.steering->policy() == Policy::kLeast;
  auto interval = by_load ? kTreeSampleInterval : kTreeSampleIntervalNotSteering;
  // --max-memory reads the trees' memory every second: it keeps the interval.
  if (now >= trees_busy_until_ && !options_.max_memory) interval = kTreeSampleIntervalIdle;
  // The roots change as processes come and go: checked at each look.
  next_tree_sample_ = std::max(next_look_, now + kLookInterval);
  tree_sampler_->watch(std::move(roots), interval);
}

// --max-memory: every second, each serving process's resident memory (a program's whole tree)
// goes to the slot manager, which decides whether to replace it.
void Supervisor::sample_memory(Clock::time_point now) {
  if (!options_.max_memory || slots_->stopping() || now < next_memory_sample_) return;
  next_memory_sample_ = now + std::chrono::seconds(1);
  for (const auto& slot : slots_->slots()) {
    if (!slot.serving || slot.serving->role != ProcessRole::kServing) continue;
    if (Child* c = child(slot.serving->id)) slots_->on_memory_sample(slot.serving->id, c->resident_bytes(), now);
  }
}

// --- signals --------------------------------------------------------------------------------

void Supervisor::on_signal() {
  signalfd_siginfo info{};
  while (!handed_over_ && read(signal_fd_.get(), &info, sizeof(info)) == sizeof(info)) {
    const auto now = Clock::now();
    switch (info.ssi_signo) {
      case SIGTERM:
      case SIGINT:
        if (slots_->stopping()) {
          spdlog::warn("second SIG{}: stopping at once", signal_name(info.ssi_signo));
          slots_->stop(false, now);
        } else {
          spdlog::info("SIG{}: stopping gracefully (at most {} s)", signal_name(info.ssi_signo),
                       options_.shutdown_timeout.count() / 1000.0);
          slots_->stop(true, now);
        }
        break;
      case SIGQUIT:
        spdlog::info("SIGQUIT: stopping at once");
        slots_->stop(false, now);
        break;
      case SIGUSR2:
        spdlog::info("SIGUSR2: upgrading to the lbd binary on disk");
        upgrade(std::nullopt, manager_config().ready_timeout);
        break;
      case SIGCHLD:
        notice_stops();
        break;
      case SIGHUP:
        if (slots_->stopping()) break;
        if (!slots_->operation()) spdlog::info("SIGHUP: rolling reload");
        if (!pick_up_binary(std::nullopt)) break;
        slots_->reload(std::nullopt, 1, std::nullopt, now);
        break;
    }
  }
}

// A child was stopped or continued (or exited: its pidfd says so, and reaps it). SIGCHLD does
// not say which child, and several may have changed before it was read: each is asked.
void Supervisor::notice_stops() {
  for (auto& [id, c] : children_) {
    if (auto stopped = c->process().stop_change()) c->stop_changed(*stopped);
  }
}

// The next look comes within 10 ms: a program starts or retires, and the looks follow it.
void Supervisor::look_soon() {
  next_look_ = std::min(next_look_, Clock::now() + kLookInterval);
  next_tree_sample_ = std::min(next_tree_sample_, next_look_);
}

// --- --mode handoff ---------------------------------------------------------------------------

// The Node.js cluster model, kept for comparison: this process accepts every connection and
// passes it to the next active worker over its Unix socket. A worker whose socket is full is
// skipped; if every one is full the connection is dropped and counted.
void Supervisor::accept_for_handoff(uint32_t listener) {
  if (listener >= shared_.shared_listeners.size()) return;
  const auto& slots = slots_->slots();
  for (int batch = 0; batch < 64; batch++) {
    UniqueFd client(accept4(shared_.shared_listeners[listener].get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!client) {
      if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) spdlog::warn("handoff accept: {}", strerror(errno));
      return;
    }
    bool sent = false;
    for (size_t tries = 0; tries < slots.size() && !sent; tries++) {
      const SlotRecord& slot = slots[handoff_next_++ % slots.size()];
      if (!slot.active()) continue;
      Child* c = child(slot.serving->id);
      if (!c || c->handoff_inbox() < 0) continue;
      sent = send_channel_message(c->handoff_inbox(), {.command = ChannelCommand::kConnection}, client.get()).ok();
    }
    if (!sent && (handoff_dropped_++ % 1000) == 0) {
      spdlog::warn("handoff: no worker could take a connection ({} dropped so far)", handoff_dropped_);
    }
  }
}

}  // namespace lbd
