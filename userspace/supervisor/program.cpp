// Exec mode (`lbd run -- PROGRAM ARGS`): the workers are the operator's program, not lbd's
// worker. Each is started the way systemd starts a socket-activated service, so a program that
// supports that runs unchanged (gunicorn, anything built on sd_listen_fds, Node's
// `listen({fd: 3})`):
//
//   fd 0      /dev/null
//   fd 1, 2   pipes into the app's log (logs/log_collector.h): whole lines, stamped
//   fd 3..    its own listener of each address's reuseport group
//   LISTEN_FDS=n  LISTEN_PID=<its pid>  LISTEN_FDNAMES=<app>:...   NOTIFY_SOCKET=@...
//   LB_WORKER_ID=<slot>  LB_WORKERS=<slots>  (PM2's NODE_APP_INSTANCE)
//
// A program has no status channel, so the supervisor does for it what lbd's worker does itself:
// - readiness: READY=1 on its own NOTIFY_SOCKET; or, in --mode bpf, once it is seen accepting: lbd
//   connects to its listener (a probe the steering program sends there alone, while the listener
//   is not in steering yet), and when the program has taken that connection off its queue, it
//   accepts; or --ready-delay after it started, if given (the default in --mode reuseport, 1 s,
//   where a listener cannot be probed alone). A program that never accepts is never ready: a
//   reload to a broken build fails at --ready-timeout and leaves the old one serving;
// - load: every 10 ms, its listener's accept queue (TCP_INFO) says how much of what was steered
//   to it it has taken, and a queue that does not move means it is stalled (no heartbeat), so
//   policy `least` stops choosing it; its open connections are counted from the kernel every
//   250 ms under `least`, every second otherwise, on a thread of their own (tree_sampler.h);
// - drain: out of steering, SIGTERM; when the program closes its listener (or exits) the kernel
//   migrates what is still queued; if its queue stops moving (stopped, stuck) lbd shuts the
//   listener down so the queue moves at once; SIGKILL to its process group after --kill-timeout.
#include <fcntl.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "common/log.h"
#include "net/listener.h"
#include "supervisor/notify.h"
#include "supervisor/supervisor.h"
#include "supervisor/worker_process.h"

namespace lbd {

namespace {

constexpr std::chrono::milliseconds kLoadPublishInterval{10};
// Counting a program's connections costs about 5 ms per 1000 held (one readlink per fd,
// process_tree.h; on the sampler's thread): often enough for `least`, which steers by them,
// rarely for the others.
constexpr std::chrono::milliseconds kTreeSampleInterval{250};
constexpr std::chrono::milliseconds kTreeSampleIntervalNotSteering{1000};
// A program whose listener cannot be probed counts as ready this long after it started.
constexpr std::chrono::milliseconds kProbeFallbackDelay{1000};

uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);  // the steering program's bpf_ktime_get_ns clock
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

// One listener per address, in the address's reuseport group. In --mode bpf it enters the
// sockarray only when the worker is ready (on_ready).
Result<void> Supervisor::open_listeners(WorkerProcess& p, std::vector<int>& fds) {
  for (const auto& address : bound_) {
    net::ListenerOptions listener_options;
    listener_options.backlog = options_.backlog;
    auto fd = net::listen_tcp(address, listener_options);
    if (!fd) return fd.error();
    if (steering_) LBD_TRY(steering_->attach(fd->get()));
    fds.push_back(fd->get());
    p.listeners.push_back(std::move(*fd));
  }
  return {};
}

Result<void> Supervisor::launch_program(Slot& slot, WorkerProcess& p) {
  const ProgramOptions& program = *options_.program;
  // Looked up for every start: a reload runs the file on disk now, and a missing program is
  // one clear line instead of a child that exits 127.
  auto path = find_program(program.command[0], program.cwd);
  if (!path) return path.error();

  ProcessLaunch launch;
  launch.path = *path;
  launch.argv = program.command;
  launch.cwd = program.cwd;
  launch.cpu = slot.cpu;
  launch.own_process_group = true;
  launch.listen_pid = true;

  std::vector<int> listener_fds;
  LBD_TRY(open_listeners(p, listener_fds));
  UniqueFd devnull(open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!devnull) return Error::from_errno("open /dev/null");
  auto pipes = logs_->make_child_pipes(slot.index);
  if (!pipes) return pipes.error();
  launch.fds = {{devnull.get(), 0}, {pipes->out_write.get(), 1}, {pipes->err_write.get(), 2}};
  std::string names;
  for (size_t i = 0; i < listener_fds.size(); i++) {
    launch.fds.emplace_back(listener_fds[i], 3 + static_cast<int>(i));
    names += (i ? ":" : "") + options_.app;
  }

  const std::string notify_name = fmt::format("lbd/{}/notify/{}", getpid(), p.id);
  auto notify = notify_listener(notify_name);
  if (!notify) return notify.error();

  // lbd's environment, then the operator's --env, then the protocol's variables (which win).
  static const std::vector<std::string> kOurs = {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET",
                                                 "LB_WORKER_ID", "LB_WORKERS", "LB_APP", kWorkerSpecEnv};
  std::vector<std::string> drop = kOurs;
  for (const auto& entry : program.env) drop.push_back(entry.substr(0, entry.find('=')));
  launch.env = inherited_environment(drop);
  for (const auto& entry : program.env) {
    if (std::find(kOurs.begin(), kOurs.end(), entry.substr(0, entry.find('='))) == kOurs.end()) {
      launch.env.push_back(entry);
    }
  }
  launch.env.push_back("LISTEN_FDS=" + std::to_string(listener_fds.size()));
  launch.env.push_back("LISTEN_FDNAMES=" + names);
  launch.env.push_back("NOTIFY_SOCKET=@" + notify_name);
  launch.env.push_back("LB_WORKER_ID=" + std::to_string(slot.index));
  const auto workers = std::count_if(slots_.begin(), slots_.end(), [](const auto& s) { return !s->removing; });
  launch.env.push_back("LB_WORKERS=" + std::to_string(workers));
  launch.env.push_back("LB_APP=" + options_.app);

  auto pid = spawn_process(launch);
  if (!pid) return pid.error();
  p.pid = *pid;
  p.started_at = Clock::now();
  p.ready_by = p.started_at + program.ready_timeout;
  if (!program.wait_ready && program.ready_delay) p.ready_at = p.started_at + *program.ready_delay;
  if (steering_ && !program.wait_ready) {
    if (auto probed = start_probe(slot, p); !probed) fall_back_to_ready_delay(slot, p, probed.error().message());
  }
  p.notify = std::move(*notify);
  LBD_TRY(poller_->watch(p.notify.get(), Source::kNotify, p.id));
  // Our copies of the write ends close as `pipes` goes: the child holds the only ones, so its
  // exit is the pipes' EOF.
  p.output[0].emplace(std::move(pipes->out));
  p.output[1].emplace(std::move(pipes->err));
  for (uint32_t stream = 0; stream < 2; stream++) {
    LBD_TRY(poller_->watch(p.output[stream]->fd(), Source::kOutput, p.id * 2 + stream));
  }
  return {};
}

void Supervisor::on_notify(uint32_t process_id) {
  Slot* slot = nullptr;
  WorkerProcess* p = find_process(process_id, &slot);
  if (!p || !p->notify) return;
  while (true) {
    char buffer[4096];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
    iovec iov{buffer, sizeof(buffer) - 1};
    msghdr message{};
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof(control);
    const ssize_t n = recvmsg(p->notify.get(), &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) return;  // EAGAIN: all read
    // Anyone on the machine can send to an abstract socket: believe only the program's own uid
    // (or root). Its children may notify for it (gunicorn's master does).
    const cmsghdr* cmsg = CMSG_FIRSTHDR(&message);
    if (!cmsg || cmsg->cmsg_type != SCM_CREDENTIALS) continue;
    ucred cred{};
    memcpy(&cred, CMSG_DATA(cmsg), sizeof(cred));
    if (cred.uid != 0 && cred.uid != getuid()) {
      static bool warned = false;  // once: anyone may send here, and a flood must not flood the log
      if (std::exchange(warned, true)) continue;
      spdlog::warn("worker {}: ignored a notification from uid {} (pid {}): only root and lbd's uid count",
                   slot->index, cred.uid, cred.pid);
      continue;
    }
    std::string_view text(buffer, static_cast<size_t>(n));
    bool ready = false;
    while (!text.empty()) {
      const size_t end = text.find('\n');
      const std::string_view line = text.substr(0, end);
      if (line == "READY=1") ready = true;
      if (line.starts_with("STATUS=")) spdlog::debug("worker {} (pid {}): {}", slot->index, p->pid, line);
      if (end == std::string_view::npos) break;
      text.remove_prefix(end + 1);
    }
    if (ready && p->role == Role::kStarting) {
      spdlog::debug("worker {} (pid {}): READY=1", slot->index, p->pid);
      on_ready(*slot, *p);
      if (!find_process(process_id, &slot)) return;
    }
  }
}

void Supervisor::on_output(uint32_t index) {
  Slot* slot = nullptr;
  WorkerProcess* p = find_process(index / 2, &slot);
  const uint32_t stream = index % 2;
  if (!p || !p->output[stream]) return;
  if (logs_->on_readable(*p->output[stream]) == logs::PipeState::kClosed) {
    poller_->unwatch(p->output[stream]->fd());
    p->output[stream].reset();
  }
}

// At exit: what the program wrote last is still in the pipes. Read it now (the pipes are
// non-blocking, and the writer is gone unless it left children holding them).
void Supervisor::close_output(WorkerProcess& p) {
  for (uint32_t stream = 0; stream < 2; stream++) {
    if (!p.output[stream]) continue;
    logs_->flush(*p.output[stream]);
    poller_->unwatch(p.output[stream]->fd());
    p.output[stream].reset();
  }
  if (p.notify) {
    poller_->unwatch(p.notify.get());
    p.notify.reset();
  }
}

// Connects to the starting program's first listener, after telling the steering program where
// this one connection must go (the listener is in no slot yet: nothing else reaches it).
Result<void> Supervisor::start_probe(Slot& slot, WorkerProcess& p) {
  auto connection = net::bind_probe(bound_.front());
  if (!connection) return connection.error();
  auto registration = steering_->add_probe(groups_.front(), slot.index, p.listeners.front().get(), connection->source);
  if (!registration) return registration.error();
  LBD_TRY(net::connect_probe(*connection));
  p.probe.emplace(WorkerProcess::Probe{std::move(*connection), std::move(*registration)});
  p.probes_started++;
  return {};
}

// Every 10 ms for each starting program with a probe. Once the probe reached its listener and
// its handshake is complete (seen at an earlier look, so the listener's side has surely queued
// it: loopback takes microseconds), the program accepts if its queue is empty or shrank since the
// last look. (Shrank: with no slot active yet the kernel's hash also sends clients to starting
// listeners, and under load the queue may never be seen empty.)
void Supervisor::check_probes() {
  constexpr unsigned kProbesBeforeGivingUp = 5;
  std::vector<std::pair<Slot*, WorkerProcess*>> accepting;
  for (auto& slot : slots_) {
    for (WorkerProcess* p : {slot->serving.get(), slot->replacement.get()}) {
      if (!p || p->role != Role::kStarting || !p->probe || p->killed) continue;
      WorkerProcess::Probe& probe = *p->probe;
      auto state = net::tcp_state(probe.connection.fd.get());
      auto queue = net::accept_queue(p->listeners.front().get());
      if (!state || !queue || *state == TCP_SYN_SENT) continue;
      const bool connected = *state != TCP_CLOSE;
      const bool delivered = probe.registration.delivered();
      if (connected && delivered && !probe.established) {
        probe.established = true;
      } else if (connected && delivered) {
        if (queue->queued == 0 || queue->queued < probe.queued) accepting.emplace_back(slot.get(), p);
      } else {
        // Refused, reset, or steered elsewhere: nothing to learn from this one.
        spdlog::debug("worker {}: probe from {} ended in state {}{}", slot->index, probe.connection.source.to_string(),
                      *state, delivered ? "" : ", not delivered");
        p->probe.reset();
        if (p->probes_started >= kProbesBeforeGivingUp) {
          fall_back_to_ready_delay(*slot, *p, std::to_string(p->probes_started) + " probes came to nothing");
        } else if (auto again = start_probe(*slot, *p); !again) {
          fall_back_to_ready_delay(*slot, *p, again.error().message());
        }
        continue;
      }
      probe.queued = queue->queued;
    }
  }
  // Not inside the loop: on_ready changes the slot's processes.
  for (auto [slot, p] : accepting) {
    spdlog::debug("worker {}: pid {} accepts (it took lbd's probe connection)", slot->index, p->pid);
    on_ready(*slot, *p);
  }
}

void Supervisor::fall_back_to_ready_delay(Slot& slot, WorkerProcess& p, const std::string& why) {
  const auto delay = options_.program->ready_delay.value_or(kProbeFallbackDelay);
  spdlog::warn("worker {}: cannot see whether pid {} accepts ({}); it counts as ready {} s after it started",
               slot.index, p.pid, why, std::chrono::duration<double>(delay).count());
  p.probe.reset();
  p.ready_at = p.started_at + delay;
}

// What lbd's worker publishes about itself, the supervisor publishes for a program: `accepted`
// is what was steered to it minus what still waits in its queue (program_load.h), and its
// heartbeat moves only while it makes progress (an empty queue, or one it is taking from). A program that stops
// accepting (SIGSTOP, a long computation, a deadlock) stops beating, and after --stale-after
// policy `least` no longer chooses it.
void Supervisor::publish_program_loads(Clock::time_point now) {
  if (now < next_load_publish_) return;
  next_load_publish_ = now + kLoadPublishInterval;
  watch_retiring_queues(now);
  check_probes();
  for (auto& slot : slots_) publish_program_load(*slot);
}

void Supervisor::publish_program_load(Slot& slot) {
  WorkerProcess* p = slot.serving.get();
  if (!p || p->role != Role::kServing) return;
  uint64_t queued = 0;
  for (const auto& fd : p->listeners) {
    if (auto queue = net::accept_queue(fd.get())) queued += queue->queued;
  }
  lbd_slot& entry = table().slot(slot.index);
  const uint64_t steered = load_field(entry.steered);
  if (!p->load) p->load.emplace(steered, queued);
  const auto look = p->load->look(steered, queued);
  publish_load(entry, {.heartbeat_ns = look.progress ? monotonic_ns() : load_field(entry.heartbeat_ns),
                       .accepted = look.accepted,
                       .open = p->open_connections,
                       .inflight = 0,
                       .requests = 0,
                       .pid = static_cast<uint32_t>(p->pid)});
}

// A retiring program's queue: once empty, our copy of its listener goes (the program's own
// close, or exit, migrates anything that arrives later); if it stops shrinking for --stale-after,
// the program is not taking from it (stopped, stuck, or it closed its own copy and ours keeps the
// socket open), so we shut the listener down and the kernel moves the queue to the others now.
void Supervisor::watch_retiring_queues(Clock::time_point now) {
  for (auto& slot : slots_) {
    for (auto& p : slot->retiring) {
      if (p->listeners.empty()) continue;
      uint32_t queued = 0;
      for (const auto& fd : p->listeners) {
        if (auto queue = net::accept_queue(fd.get())) queued += queue->queued;
      }
      if (queued == 0) {
        p->listeners.clear();
      } else if (queued < p->retiring_queue) {
        p->queue_moved_at = now;
      } else if (now - p->queue_moved_at >= options_.steering.stale_after) {
        spdlog::info("worker {}: pid {} is not taking its {} queued connections; moving them to the others",
                     slot->index, p->pid, queued);
        stop_listening(*p);
      }
      p->retiring_queue = queued;
    }
  }
}

// Each program's open connections and memory, over its whole process tree (a program may accept
// in children it forked, like gunicorn's workers). Periodically on the sampler's thread (the loop
// hands it the pids and picks up what it found); at once, on this thread, for an answer worth the
// wait (lbctl status, /metrics).
void Supervisor::sample_program_trees(Clock::time_point now, bool now_even_if_sampled_lately) {
  if (!tree_sampler_) return;
  if (auto sample = tree_sampler_->newest()) apply_tree_sample(*sample);
  std::vector<pid_t> roots;
  for (WorkerProcess* p : program_processes()) roots.push_back(p->pid);
  if (now_even_if_sampled_lately) {
    apply_tree_sample(tree_sampler_->take_now(roots));
    return;
  }
  if (now < next_tree_sample_) return;
  const bool by_load = steering_ && steering_->policy() == Policy::kLeast;
  const auto interval = by_load ? kTreeSampleInterval : kTreeSampleIntervalNotSteering;
  next_tree_sample_ = now + kLoadPublishInterval;  // the roots change as processes come and go
  tree_sampler_->watch(std::move(roots), interval);
}

std::vector<Supervisor::WorkerProcess*> Supervisor::program_processes() {
  std::vector<WorkerProcess*> processes;
  for (auto& slot : slots_) {
    for (WorkerProcess* p : {slot->serving.get(), slot->replacement.get()}) {
      if (p) processes.push_back(p);
    }
    for (auto& p : slot->retiring) processes.push_back(p.get());
  }
  return processes;
}

void Supervisor::apply_tree_sample(const TreeSampler::Sample& sample) {
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
  for (WorkerProcess* p : program_processes()) {
    auto tree = sample.trees.find(p->pid);
    if (tree == sample.trees.end()) continue;  // started after the sample was asked for
    p->tree_rss = tree->second.rss_bytes;
    if (tree->second.open) p->open_connections = *tree->second.open;
    if (p->role == Role::kRetiring) p->reported_open = p->open_connections;
  }
}

}  // namespace lbd
