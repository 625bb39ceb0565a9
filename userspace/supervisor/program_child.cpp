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
//   LBD_MESSAGE_FD=n   the read end of a pipe: operators' messages (`lbctl send`), a line each
//
// A program has no status channel, so the supervisor does for it what lbd's worker does itself:
// - readiness: READY=1 on its own NOTIFY_SOCKET; or, in --mode bpf, once it is seen accepting: lbd
//   connects to its listener (a probe the steering program sends there alone, while the listener
//   is not in steering yet), and when the program has taken that connection off its queue, it
//   accepts; or --ready-delay after it started, if given (the default in --mode reuseport, 1 s,
//   where a listener cannot be probed alone). A program that never accepts is never ready: a
//   reload to a broken build fails at --ready-timeout and leaves the old one serving;
// - load: every 10 ms (while nothing is steered and no queue waits, every half --stale-after,
//   25 ms by default: program_load.h), its listener's accept queue (TCP_INFO) says how much of
//   what was steered to it it has taken, and a queue that does not move means it is stalled (no
//   heartbeat), so policy `least` stops choosing it; a program stopped by a signal stops beating
//   at once (the kernel tells its parent); its open connections are counted from the kernel
//   every 250 ms under `least`, every second otherwise, on a thread of their own
//   (tree_sampler.h);
// - drain: out of steering, SIGTERM; when the program closes its listener (or exits) the kernel
//   migrates what is still queued; if its queue stops moving (stopped, stuck) lbd shuts the
//   listener down so the queue moves at once; SIGKILL to its process group after --kill-timeout;
// - messages: the supervisor writes each as one line into the program's message pipe, without
//   ever waiting: a line is at most PIPE_BUF bytes, so the non-blocking write puts all of it in
//   or, when the pipe is full (the program does not read it), nothing, and the message counts as
//   not delivered (docs/ARCHITECTURE.md, section 6).
#include <fcntl.h>
#include <sys/stat.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "common/log.h"
#include "net/listener.h"
#include "supervisor/child.h"
#include "supervisor/launch.h"
#include "net/fd_passing.h"
#include "supervisor/notify.h"
#include "supervisor/process_tree.h"
#include "supervisor/program_load.h"

namespace lbd {

namespace {

// The heartbeat of a stopped program: long ago, stale under any --stale-after (0 would read as
// "has not beaten yet" to the agent's weight).
constexpr uint64_t kStoppedHeartbeatNs = 1;
// A program whose listener cannot be probed counts as ready this long after it started.
constexpr std::chrono::milliseconds kProbeFallbackDelay{1000};
// Probes that end in nothing (refused, reset, steered elsewhere) before lbd stops probing.
constexpr unsigned kProbesBeforeGivingUp = 5;
// Notifications read per wake-up: anyone on the machine can send to an abstract socket, and a
// flood must not hold the loop.
constexpr int kNotificationsPerWakeUp = 64;

uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);  // the steering program's bpf_ktime_get_ns clock
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

class ProgramChild final : public Child {
 public:
  ProgramChild(ProcessId id, uint32_t slot, SharedResources& shared, ChildProcess process,
               Clock::time_point started = Clock::now())
      : Child(id, slot, shared, std::move(process)), started_at_(started) {}
  // Its pipes stay open in the program (its copies of the read ends): unwatched explicitly, and
  // not read (a successor may be reading them now).
  ~ProgramChild() override {
    for (auto& output : output_) {
      if (output) shared_.poller->unwatch(output->fd());
    }
    if (notify_) shared_.poller->unwatch(notify_.get());
    forget_notify_path();
  }

  Result<void> swap_in(Child* previous) override {
    probe_.reset();  // its listener leaves the probe place, so that it can go into the slot
    return Child::swap_in(previous);
  }

  void serving() override {
    serving_ = true;
    forget_notify_path();  // READY=1 has nothing left to say; STATUS= lines still come on the fd
    probe_.reset();
    ready_at_.reset();
    publish_load();  // at once: not stalled until the next look
  }

  void retire(DrainMode /*how*/, std::chrono::milliseconds /*timeout*/, Child* /*successor*/) override {
    retiring_ = true;
    probe_.reset();
    // The program stops its own listener on SIGTERM. We keep our copy while its queue empties
    // (watch_queue): not shutdown() at once, since its accept would fail with EINVAL, which many
    // programs treat as fatal; shut down only if the queue stops moving (the program is stopped,
    // stuck, or has closed its own copy).
    queue_moved_at_ = Clock::now();
    process_.signal(SIGTERM);
  }

  // It has its SIGTERM already, and many programs treat a second one as "exit now".
  void hurry(std::chrono::milliseconds /*timeout*/) override {}

  Result<void> deliver_message(const std::string& text) override {
    if (!messages_) return Error::invalid("it has no message channel (an lbd without LBD_MESSAGE_FD started it)");
    const std::string line = text + "\n";  // at most PIPE_BUF: all of it or nothing
    const ssize_t n = write(messages_.get(), line.data(), line.size());
    if (n == static_cast<ssize_t>(line.size())) return {};
    if (n >= 0) return Error::invalid("its message pipe took part of the line");  // not for <= PIPE_BUF
    if (errno == EAGAIN) return Error::invalid("its message pipe is full: the program is not reading $LBD_MESSAGE_FD");
    if (errno == EPIPE) return Error::invalid("the program has closed $LBD_MESSAGE_FD");
    return Error::from_errno("write to its message pipe");
  }

  void kill() override {
    killed_ = true;
    probe_.reset();
    process_.signal_group(SIGKILL);  // what it forked goes too
    process_.signal(SIGKILL);        // and it, even if it left its group (setsid)
  }

  ChildNews on_readable(Source source, uint32_t stream) override {
    if (source == Source::kNotify) return on_notify();
    if (source == Source::kOutput && stream < 2 && output_[stream]) {
      if (shared_.logs->on_readable(*output_[stream]) == logs::PipeState::kClosed) {
        shared_.poller->unwatch(output_[stream]->fd());
        output_[stream].reset();
      }
    }
    return ChildNews::kNothing;
  }

  void on_exit() override {
    probe_.reset();
    close_output();
    messages_.reset();
    // What it left running in its process group goes with it: asked to finish, if it was
    // draining (its children may still be answering); at once, if it crashed. Now, before it is
    // reaped, while the group's id cannot belong to anyone else. (Not for a program an earlier lbd
    // started: its parent may have reaped it already, and the id may be someone else's.)
    if (!process_.adopted()) process_.signal_group(retiring_ ? SIGTERM : SIGKILL);
    stop_listening();
  }

  void after_reap(const std::string& ended) override {
    shared_.logs->note(slot_, "pid " + std::to_string(pid()) + " " + ended);
  }

  ChildNews look(Clock::time_point now) override {
    ChildNews news = ChildNews::kNothing;
    if (retiring_) {
      watch_queue(now);
    } else if (!serving_ && !killed_) {
      if (ready_at_ && *ready_at_ <= now) {
        ready_at_.reset();
        news = ChildNews::kReady;
      } else if (probe_ && check_probe()) {
        spdlog::debug("worker {}: pid {} accepts (it took lbd's probe connection)", slot_, pid());
        news = ChildNews::kReady;
      }
    } else if (serving_) {
      publish_load();
    }
    return news;
  }

  bool quiet() const override { return serving_ && !retiring_ && !killed_ && quiet_; }

  // Stopped, it cannot accept: `least` skips it from now on, not after a connection has waited
  // in its queue for --stale-after (docs/ARCHITECTURE.md, section 5). Continued, the next look
  // that sees it make progress stamps its heartbeat again. Only while it serves: a retiring
  // program's slot entry may be its successor's.
  void stop_changed(bool stopped) override {
    if (stopped_ == stopped) return;
    stopped_ = stopped;
    if (!serving_ || retiring_) return;
    if (!stopped) {
      spdlog::info("worker {}: pid {} continued", slot_, pid());
      return;
    }
    spdlog::info("worker {}: pid {} stopped: it counts as stalled until it continues", slot_, pid());
    store_field(shared_.table().slot(slot_).heartbeat_ns, kStoppedHeartbeatNs);
  }

  void apply_tree(const TreeSampler::Tree& tree) override {
    tree_rss_ = tree.rss_bytes;
    if (tree.open) open_connections_ = *tree.open;
  }

  uint32_t draining_connections() const override { return open_connections_; }

  nlohmann::json record() const override {
    nlohmann::json r = record_base("program");
    r["stdout"] = to_json(fd_ref(output_[0] ? output_[0]->fd() : -1, child_output_fds_[0]));
    r["stderr"] = to_json(fd_ref(output_[1] ? output_[1]->fd() : -1, child_output_fds_[1]));
    r["notify"] = to_json(fd_ref(notify_.get(), -1));
    r["messages"] = to_json(fd_ref(messages_.get(), child_message_escrow_fd_));
    return r;
  }
  std::optional<uint64_t> tree_rss() const override { return tree_rss_ ? std::optional(tree_rss_) : std::nullopt; }

 private:
  friend Result<std::unique_ptr<Child>> lbd::start_program_child(ProcessId, uint32_t, int, uint32_t,
                                                                 SharedResources&);
  friend Result<std::unique_ptr<Child>> lbd::adopt_program_child(const nlohmann::json&, const ProcessRecord&,
                                                                 ChildProcess, const FdTaker&, SharedResources&);

  // Its NOTIFY_SOCKET: READY=1 makes it ready; STATUS= lines go to the debug log.
  ChildNews on_notify() {
    ChildNews news = ChildNews::kNothing;
    for (int read = 0; notify_ && read < kNotificationsPerWakeUp; read++) {
      char buffer[4096];
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
      iovec iov{buffer, sizeof(buffer) - 1};
      msghdr message{};
      message.msg_iov = &iov;
      message.msg_iovlen = 1;
      message.msg_control = control;
      message.msg_controllen = sizeof(control);
      const ssize_t n = recvmsg(notify_.get(), &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (n < 0) break;  // EAGAIN: all read
      // Descriptors have no business here: closed at once, whoever sent them.
      if (net::close_passed_fds(message) > 0 || (message.msg_flags & MSG_CTRUNC)) continue;
      // Only the program's own processes (its pid, or processes it started: gunicorn's master
      // notifies for it) as its own user are believed; SO_PASSCRED makes the kernel say who sent
      // each datagram. The socket's path is private too (NotifyDirectory); this is the second lock.
      const cmsghdr* cmsg = CMSG_FIRSTHDR(&message);
      if (!cmsg || cmsg->cmsg_type != SCM_CREDENTIALS) continue;
      ucred cred{};
      memcpy(&cred, CMSG_DATA(cmsg), sizeof(cred));
      const uid_t program_uid = shared_.options.run_as ? shared_.options.run_as->uid : geteuid();
      if (cred.uid != program_uid || !in_tree_of(cred.pid, pid())) {
        static bool warned = false;  // once: a flood must not flood the log
        if (std::exchange(warned, true)) continue;
        spdlog::warn("worker {}: ignored a notification from pid {} (uid {}): only the program's own processes count",
                     slot_, cred.pid, cred.uid);
        continue;
      }
      std::string_view text(buffer, static_cast<size_t>(n));
      while (!text.empty()) {
        const size_t end = text.find('\n');
        const std::string_view line = text.substr(0, end);
        if (line == "READY=1" && !serving_ && !retiring_ && !killed_) {
          spdlog::debug("worker {} (pid {}): READY=1", slot_, pid());
          news = ChildNews::kReady;
        }
        if (line.starts_with("STATUS=")) spdlog::debug("worker {} (pid {}): {}", slot_, pid(), line);
        if (end == std::string_view::npos) break;
        text.remove_prefix(end + 1);
      }
    }
    return news;
  }

  // At exit: what the program wrote last is still in the pipes. Read it now (the pipes are
  // non-blocking, and the writer is gone unless it left children holding them).
  void close_output() {
    for (auto& output : output_) {
      if (!output) continue;
      shared_.logs->flush(*output);
      shared_.poller->unwatch(output->fd());
      output.reset();
    }
    if (notify_) {
      shared_.poller->unwatch(notify_.get());
      notify_.reset();
    }
  }

  // Connects to the starting program's first listener, after telling the steering program where
  // this one connection must go (the listener is in no slot yet: nothing else reaches it).
  Result<void> start_probe() {
    auto connection = net::bind_probe(shared_.bound.front());
    if (!connection) return connection.error();
    auto registration =
        shared_.steering->add_probe(shared_.groups.front(), slot_, listeners_.front().get(), connection->source);
    if (!registration) return registration.error();
    LBD_TRY(net::connect_probe(*connection));
    probe_.emplace(Probe{std::move(*connection), std::move(*registration)});
    probes_started_++;
    return {};
  }

  // Once the probe reached its listener and its handshake is complete (seen at an earlier look,
  // so the listener's side has surely queued it: loopback takes microseconds), the program
  // accepts if its queue is empty or shrank since the last look. (Shrank: with no slot active
  // yet the kernel's hash also sends clients to starting listeners, and under load the queue may
  // never be seen empty.)
  bool check_probe() {
    Probe& probe = *probe_;
    auto state = net::tcp_state(probe.connection.fd.get());
    auto queue = net::accept_queue(listeners_.front().get());
    if (!state || !queue || *state == TCP_SYN_SENT) return false;
    const bool connected = *state != TCP_CLOSE;
    const bool delivered = probe.registration.delivered();
    bool accepting = false;
    if (connected && delivered && !probe.established) {
      probe.established = true;
    } else if (connected && delivered) {
      accepting = queue->queued == 0 || queue->queued < probe.queued;
    } else {
      // Refused, reset, or steered elsewhere: nothing to learn from this one.
      spdlog::debug("worker {}: probe from {} ended in state {}{}", slot_, probe.connection.source.to_string(), *state,
                    delivered ? "" : ", not delivered");
      probe_.reset();
      if (probes_started_ >= kProbesBeforeGivingUp) {
        fall_back_to_ready_delay(std::to_string(probes_started_) + " probes came to nothing");
      } else if (auto again = start_probe(); !again) {
        fall_back_to_ready_delay(again.error().message());
      }
      return false;
    }
    probe.queued = queue->queued;
    return accepting;
  }

  void fall_back_to_ready_delay(const std::string& why) {
    const auto delay = shared_.options.program->ready_delay.value_or(kProbeFallbackDelay);
    spdlog::warn("worker {}: cannot see whether pid {} accepts ({}); it counts as ready {} s after it started", slot_,
                 pid(), why, std::chrono::duration<double>(delay).count());
    probe_.reset();
    ready_at_ = started_at_ + delay;
  }

  // What lbd's worker publishes about itself, the supervisor publishes for a program: `accepted`
  // is what was steered to it minus what still waits in its queue (program_load.h), and its
  // heartbeat moves only while it makes progress (an empty queue, or one it is taking from). A
  // program that stops accepting (a long computation, a deadlock) stops beating, and after
  // --stale-after policy `least` no longer chooses it; one stopped by a signal never beats.
  void publish_load() {
    uint64_t queued = 0;
    for (const auto& fd : listeners_) {
      if (auto queue = net::accept_queue(fd.get())) queued += queue->queued;
    }
    lbd_slot& entry = shared_.table().slot(slot_);
    const uint64_t steered = load_field(entry.steered);
    if (!load_) load_.emplace(steered, queued);
    const auto look = load_->look(steered, queued);
    quiet_ = look.quiet;
    const bool beats = look.progress && !stopped_;
    lbd::publish_load(entry, {.heartbeat_ns = beats ? monotonic_ns() : load_field(entry.heartbeat_ns),
                              .accepted = look.accepted,
                              .open = open_connections_,
                              .inflight = 0,
                              .requests = 0,
                              .pid = static_cast<uint32_t>(pid())});
  }

  // A retiring program's queue: once empty, our copy of its listener goes (the program's own
  // close, or exit, migrates anything that arrives later); if it stops shrinking for
  // --stale-after, the program is not taking from it (stopped, stuck, or it closed its own copy
  // and ours keeps the socket open), so we shut the listener down and the kernel moves the queue
  // to the others now.
  void watch_queue(Clock::time_point now) {
    if (listeners_.empty()) return;
    uint32_t queued = 0;
    for (const auto& fd : listeners_) {
      if (auto queue = net::accept_queue(fd.get())) queued += queue->queued;
    }
    if (queued == 0) {
      listeners_.clear();
    } else if (queued < retiring_queue_) {
      queue_moved_at_ = now;
    } else if (now - queue_moved_at_ >= shared_.options.steering.stale_after) {
      spdlog::info("worker {}: pid {} is not taking its {} queued connections; moving them to the others", slot_,
                   pid(), queued);
      stop_listening();
    }
    retiring_queue_ = queued;
  }

  // --mode bpf: while it starts, lbd's own connection to its first listener, steered there
  // alone. Once the program has taken it off the queue, it accepts: it is ready.
  struct Probe {
    net::ProbeConnection connection;
    Steering::ProbeRegistration registration;  // refers to the shared steering, which outlives us
    bool established = false;  // seen connected at an earlier look
    uint32_t queued = 0;       // the listener's queue at the last look
  };

  const Clock::time_point started_at_;
  UniqueFd notify_;
  std::string notify_path_;  // its NOTIFY_SOCKET, unlinked once it serves or goes

  void forget_notify_path() {
    if (!notify_path_.empty()) unlink(notify_path_.c_str());
    notify_path_.clear();
  }
  std::optional<logs::LogPipe> output_[2];  // its stdout and stderr, into the app's log
  std::optional<Probe> probe_;
  unsigned probes_started_ = 0;
  std::optional<Clock::time_point> ready_at_;  // --ready-delay, or the probe's fallback
  std::optional<ProgramLoadEstimate> load_;     // serving: what it has taken, by our looks
  uint32_t retiring_queue_ = 0;                 // retiring: its queue at the last look, and when
  Clock::time_point queue_moved_at_;            // it last shrank (or was seen)
  uint32_t open_connections_ = 0;               // from the kernel, sampled (process_tree.h)
  uint64_t tree_rss_ = 0;                       // its whole process tree's resident memory
  bool serving_ = false;
  bool quiet_ = false;    // the last look saw nothing steered to it and nothing queued
  bool stopped_ = false;  // stopped by a signal (SIGCHLD told us), not yet continued
  bool killed_ = false;  // SIGKILLed: it must never become ready
  int child_output_fds_[2] = {-1, -1};  // where it keeps the read ends of its stdout and stderr
  // The write end of its message pipe (non-blocking), and where the program keeps a copy of it
  // for the next supervisor (never written there: a successor after a crash takes it back).
  UniqueFd messages_;
  int child_message_escrow_fd_ = -1;
};

// A pipe for a program's messages: the read end, blocking (a program may read it with a plain
// read loop, or Node's fs.createReadStream, which fails on EAGAIN), and the write end,
// non-blocking (the supervisor never waits on a program).
struct MessagePipe {
  UniqueFd read;
  UniqueFd write;
};
Result<MessagePipe> message_pipe() {
  int ends[2];
  if (pipe2(ends, O_CLOEXEC) != 0) return Error::from_errno("message pipe");
  MessagePipe pipe{UniqueFd(ends[0]), UniqueFd(ends[1])};
  const int flags = fcntl(pipe.write.get(), F_GETFL);
  if (flags < 0 || fcntl(pipe.write.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return Error::from_errno("message pipe: O_NONBLOCK");
  }
  return pipe;
}

}  // namespace

Result<std::unique_ptr<Child>> start_program_child(ProcessId id, uint32_t slot, int cpu, uint32_t workers,
                                                   SharedResources& shared) {
  const SupervisorOptions& options = shared.options;
  const ProgramOptions& program = *options.program;
  // Looked up for every start: a reload runs the file on disk now, and a missing program is
  // one clear line instead of a child that exits 127.
  auto path = find_runnable_program(program.command[0], program.cwd, options.run_as ? &*options.run_as : nullptr);
  if (!path) return path.error();

  ProcessLaunch launch;
  launch.path = *path;
  launch.argv = program.command;
  launch.cwd = program.cwd;
  launch.cpu = cpu;
  launch.own_process_group = true;
  launch.listen_pid = true;
  // The program is confined before exec: it runs as --user with no capabilities and under the
  // steering guard (or as root with its capabilities, when --allow-root kept it there).
  if (!shared.steering_guard) {
    auto guard = SeccompProgram::steering_guard();
    if (!guard) return guard.error();
    shared.steering_guard.emplace(std::move(*guard));
  }
  launch.confine = true;
  launch.run_as = options.run_as ? &*options.run_as : nullptr;
  launch.keep_caps = !options.run_as && geteuid() == 0;
  launch.filter = &*shared.steering_guard;

  auto listeners = shared.open_listeners();
  if (!listeners) return listeners.error();
  UniqueFd devnull(open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!devnull) return Error::from_errno("open /dev/null");
  auto pipes = shared.logs->make_child_pipes(slot);
  if (!pipes) return pipes.error();
  launch.fds = {{devnull.get(), 0}, {pipes->out_write.get(), 1}, {pipes->err_write.get(), 2}};
  std::string names;
  for (size_t i = 0; i < listeners->size(); i++) {
    launch.fds.emplace_back((*listeners)[i].get(), 3 + static_cast<int>(i));
    names += (i ? ":" : "") + options.app;
  }
  // After its listeners, the read ends of its own stdout and stderr, which it keeps and never
  // reads: if lbd dies, its output waits in the pipes (instead of failing with EPIPE) until the
  // next lbd takes the read ends back from it (pidfd_getfd) and goes on logging.
  const int output_escrow = 3 + static_cast<int>(listeners->size());
  launch.fds.emplace_back(pipes->out.fd(), output_escrow);
  launch.fds.emplace_back(pipes->err.fd(), output_escrow + 1);
  // Then its message pipe's read end (LBD_MESSAGE_FD), and a copy of the write end it keeps for
  // the same reason: after a crash the next lbd takes it back and messages go on; and the
  // program never sees end-of-file on LBD_MESSAGE_FD while no lbd runs.
  auto messages = message_pipe();
  if (!messages) return messages.error();
  const int message_fd = output_escrow + 2;
  launch.fds.emplace_back(messages->read.get(), message_fd);
  launch.fds.emplace_back(messages->write.get(), message_fd + 1);

  if (!shared.notify_dir) {
    // Root's in /run/lbd, where only root may create names (not beside the control socket: the
    // program's user must be able to reach it, and --control may name a private directory).
    const int group = options.run_as ? static_cast<int>(options.run_as->gid) : -1;
    std::string base = "/tmp";
    if (geteuid() == 0 && (mkdir("/run/lbd", 0755) == 0 || errno == EEXIST)) base = "/run/lbd";
    auto dir = NotifyDirectory::create(base, notify_directory_prefix(options.app), group);
    if (!dir) return dir.error();
    shared.notify_dir.emplace(std::move(*dir));
  }
  auto notify = shared.notify_dir->open_socket();
  if (!notify) return notify.error();

  // lbd's environment, then the operator's --env, then the protocol's variables (which win).
  static const std::vector<std::string> kOurs = {"LISTEN_FDS",   "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET",
                                                 "LB_WORKER_ID", "LB_WORKERS", "LB_APP",         "LBD_MESSAGE_FD",
                                                 kWorkerSpecEnv};
  std::vector<std::string> drop = kOurs;
  for (const auto& entry : program.env) drop.push_back(entry.substr(0, entry.find('=')));
  launch.env = inherited_environment(drop);
  for (const auto& entry : program.env) {
    if (std::find(kOurs.begin(), kOurs.end(), entry.substr(0, entry.find('='))) == kOurs.end()) {
      launch.env.push_back(entry);
    }
  }
  launch.env.push_back("LISTEN_FDS=" + std::to_string(listeners->size()));
  launch.env.push_back("LISTEN_FDNAMES=" + names);
  launch.env.push_back("NOTIFY_SOCKET=" + notify->path);
  launch.env.push_back("LB_WORKER_ID=" + std::to_string(slot));
  launch.env.push_back("LB_WORKERS=" + std::to_string(workers));
  launch.env.push_back("LB_APP=" + options.app);
  launch.env.push_back("LBD_MESSAGE_FD=" + std::to_string(message_fd));

  auto pid = spawn_process(launch);
  if (!pid) return pid.error();
  auto process = ChildProcess::own(*pid);
  if (!process) return process.error();
  auto child = std::make_unique<ProgramChild>(id, slot, shared, std::move(*process));
  child->start_time_ = process_start_time(*pid).value_or(0);
  for (size_t i = 0; i < listeners->size(); i++) child->child_listener_fds_.push_back(3 + static_cast<int>(i));
  child->child_output_fds_[0] = output_escrow;
  child->child_output_fds_[1] = output_escrow + 1;
  child->messages_ = std::move(messages->write);  // our read end closes: only the program reads
  child->child_message_escrow_fd_ = message_fd + 1;
  child->listeners_ = std::move(*listeners);
  if (!program.wait_ready && program.ready_delay) child->ready_at_ = child->started_at_ + *program.ready_delay;
  if (shared.steering && !program.wait_ready) {
    if (auto probed = child->start_probe(); !probed) child->fall_back_to_ready_delay(probed.error().message());
  }
  child->notify_ = std::move(notify->fd);
  child->notify_path_ = notify->path;
  // Our copies of the write ends close as `pipes` goes: the child holds the only ones, so its
  // exit is the pipes' EOF.
  child->output_[0].emplace(std::move(pipes->out));
  child->output_[1].emplace(std::move(pipes->err));
  auto watch = [&]() -> Result<void> {
    LBD_TRY(shared.poller->watch(child->notify_.get(), Source::kNotify, id));
    for (uint32_t stream = 0; stream < 2; stream++) {
      LBD_TRY(shared.poller->watch(child->output_[stream]->fd(), Source::kOutput, id * 2 + stream));
    }
    return {};
  };
  if (auto watched = watch(); !watched) {
    child->process().kill_and_reap(true);
    return watched.error();
  }
  return std::unique_ptr<Child>(std::move(child));
}

}  // namespace lbd

namespace lbd {

Result<std::unique_ptr<Child>> adopt_program_child(const nlohmann::json& record, const ProcessRecord& p,
                                                   ChildProcess owned, const FdTaker& taker, SharedResources& shared) {
  const int holder = owned.pidfd();
  auto child = std::make_unique<ProgramChild>(p.id, p.slot, shared, std::move(owned), p.started_at);
  child->start_time_ = record.value("start_time", uint64_t{0});
  child->serving_ = p.role == ProcessRole::kServing;
  child->retiring_ = p.role == ProcessRole::kRetiring;
  for (const auto& listener : record.value("listeners", nlohmann::json::array())) {
    const FdRef ref = fd_ref_from_json(listener);
    child->child_listener_fds_.push_back(ref.child);
    // A retiring program may have closed its listener already: then there is nothing to watch.
    auto fd = taker.take(ref, holder, p.pid);
    if (fd) {
      child->listeners_.push_back(std::move(*fd));
    } else if (!child->retiring_) {
      return fd.error().wrap("listener");
    }
  }
  if (child->retiring_) child->queue_moved_at_ = Clock::now();
  const char* streams[2] = {"stdout", "stderr"};
  for (uint32_t stream = 0; stream < 2; stream++) {
    const FdRef ref = fd_ref_from_json(record.value(streams[stream], nlohmann::json()));
    child->child_output_fds_[stream] = ref.child;
    auto fd = taker.take(ref, holder, p.pid);
    if (!fd) continue;  // its output is not ours to log any more; it still serves
    child->output_[stream].emplace(
        shared.logs->adopt_pipe(std::move(*fd), p.slot, stream == 0 ? logs::Stream::kOut : logs::Stream::kErr));
    LBD_TRY(shared.poller->watch(child->output_[stream]->fd(), Source::kOutput, p.id * 2 + stream));
  }
  // Its message pipe's write end: from the predecessor, or from the program's own copy. A program
  // an lbd without message pipes started has none: messages to it are not delivered, and say so.
  const FdRef messages = fd_ref_from_json(record.value("messages", nlohmann::json()));
  child->child_message_escrow_fd_ = messages.child;
  // Not looked for elsewhere in the program (no pid to take()): the pipe's read end is the same
  // file, and only the write end will do.
  if (auto fd = taker.take(messages, holder)) {
    const int flags = fcntl(fd->get(), F_GETFL);
    if (flags >= 0 && (flags & O_ACCMODE) == O_WRONLY && fcntl(fd->get(), F_SETFL, flags | O_NONBLOCK) == 0) {
      child->messages_ = std::move(*fd);
    }
  }
  // Its NOTIFY_SOCKET names the predecessor's socket: only a live predecessor can hand it over.
  if (auto notify = taker.take(fd_ref_from_json(record.value("notify", nlohmann::json())), -1)) {
    child->notify_ = std::move(*notify);
    LBD_TRY(shared.poller->watch(child->notify_.get(), Source::kNotify, p.id));
  }
  return std::unique_ptr<Child>(std::move(child));
}

}  // namespace lbd
