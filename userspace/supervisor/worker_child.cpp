// lbd's own worker as a child of the supervisor: started by executing the lbd binary with its
// spec in the environment (launch.h), it talks over its status channel (worker/channel.h): it
// says when it is ready, the supervisor tells it when it serves and when to drain.
#include <linux/sockios.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>

#include "common/log.h"
#include "supervisor/child.h"
#include "supervisor/launch.h"
#include "worker/channel.h"

namespace lbd {

namespace {

// Operators' messages may fill at most this much of a worker's status channel (what the kernel
// charges for packets it has not read, SIOCOUTQ), and at most half of its send buffer: a worker
// that does not read its messages must still find room for a kDrain.
constexpr int kMessageRoom = 64 * 1024;

Result<std::pair<UniqueFd, UniqueFd>> seqpacket_pair() {
  int pair[2];
  // Non-blocking both ways: the supervisor never waits on a worker, and the worker drives its
  // end from its ring.
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) != 0) {
    return Error::from_errno("socketpair");
  }
  return std::pair{UniqueFd(pair[0]), UniqueFd(pair[1])};
}

class WorkerChild final : public Child {
 public:
  WorkerChild(ProcessId id, uint32_t slot, SharedResources& shared, ChildProcess process)
      : Child(id, slot, shared, std::move(process)) {}
  // Its status channel stays open in the worker (its copy of our end): unwatched explicitly.
  ~WorkerChild() override { close_status(); }

  void serving() override {
    if (!status_ || !send_channel_message(status_.get(), {.command = ChannelCommand::kServing})) {
      spdlog::warn("worker {}: cannot tell pid {} that it serves", slot_, pid());
    }
    handover_sender_.reset();  // a predecessor, if any, holds its own copy now
  }

  void retire(DrainMode how, std::chrono::milliseconds timeout, Child* successor) override {
    retiring_ = true;
    stop_listening();
    handoff_.reset();  // --mode handoff: no new connections for it
    tell_to_drain(how, timeout, how == DrainMode::kHandover && successor ? successor->handover_inbox() : -1);
  }

  void hurry(std::chrono::milliseconds timeout) override { tell_to_drain(DrainMode::kStop, timeout, -1); }

  void kill() override { process_.signal(SIGKILL); }

  Result<void> deliver_message(const std::string& text) override {
    if (!status_) return Error::invalid("its status channel is closed");
    if (!takes_messages_) {
      return Error::invalid("it runs an lbd from before `lbctl send`, which would drop the message (reload it)");
    }
    int unread = 0;
    int send_buffer = 0;
    socklen_t length = sizeof(send_buffer);
    if (ioctl(status_.get(), SIOCOUTQ, &unread) != 0) return Error::from_errno("SIOCOUTQ");
    if (getsockopt(status_.get(), SOL_SOCKET, SO_SNDBUF, &send_buffer, &length) != 0) {
      return Error::from_errno("SO_SNDBUF");
    }
    if (unread >= std::min(kMessageRoom, send_buffer / 2)) {
      return Error::invalid("its channel is full (" + std::to_string(unread) +
                            " bytes it has not read): the worker is not reading it");
    }
    auto sent = send_channel_message(status_.get(), {.command = ChannelCommand::kMessage, .text = text});
    if (!sent && sent.error().code() == std::errc::resource_unavailable_try_again) {
      return Error::invalid("its channel is full: the worker is not reading it");
    }
    return sent;
  }

  ChildNews on_readable(Source source, uint32_t /*stream*/) override {
    ChildNews news = ChildNews::kNothing;
    if (source != Source::kStatus || !status_) return news;
    while (true) {
      auto received = receive_channel_message(status_.get());
      if (!received) {
        if (received.error().code() == std::errc::resource_unavailable_try_again) return news;
        if (received.error().code() == std::errc::protocol_error) {
          spdlog::warn("worker {}: pid {}: {}", slot_, pid(), received.error().message());
          continue;
        }
      }
      if (!received || received->end) {  // the worker exited; its pidfd says how
        close_status();
        return news;
      }
      const ChannelMessage& message = received->message;
      switch (message.command) {
        case ChannelCommand::kReady:
          takes_messages_ = (message.value & kWorkerTakesMessages) != 0;
          news = ChildNews::kReady;
          break;
        case ChannelCommand::kOpenConnections:
          reported_open_ = message.value;
          break;
        case ChannelCommand::kExecFailed:
          spdlog::error("worker {}: cannot execute {}: {}", slot_, shared_.binary,
                        strerror(static_cast<int>(message.value)));
          break;
        default:
          spdlog::warn("worker {}: pid {} sent command {}, which only the supervisor sends", slot_, pid(),
                       static_cast<unsigned>(message.command));
          break;
      }
    }
  }

  void on_exit() override {
    close_status();
    stop_listening();  // a dead worker's queue moves on now, not when we get round to it
  }

  uint32_t draining_connections() const override { return reported_open_; }
  int handover_inbox() const override { return handover_sender_.get(); }

  nlohmann::json record() const override {
    nlohmann::json r = record_base("worker");
    r["status"] = to_json(fd_ref(status_.get(), child_status_escrow_fd_));
    r["stats"] = to_json(fd_ref(stats_ ? stats_->fd() : -1, child_stats_fd_));
    r["takes_messages"] = takes_messages_;
    return r;
  }
  int handoff_inbox() const override { return handoff_.get(); }

 private:
  friend Result<std::unique_ptr<Child>> lbd::start_worker_child(ProcessId, uint32_t, int, bool, SharedResources&);
  friend Result<std::unique_ptr<Child>> lbd::adopt_worker_child(const nlohmann::json&, const ProcessRecord&,
                                                                ChildProcess, const FdTaker&, SharedResources&);

  void tell_to_drain(DrainMode how, std::chrono::milliseconds timeout, int successor_inbox) {
    const ChannelMessage drain{.command = ChannelCommand::kDrain,
                               .value = static_cast<uint32_t>(how),
                               .timeout_ms = static_cast<uint64_t>(timeout.count())};
    if (!status_ || !send_channel_message(status_.get(), drain, successor_inbox)) {
      process_.signal(SIGTERM);  // no channel: the signal means the same, without a handover
    }
  }

  void close_status() {
    if (!status_) return;
    shared_.poller->unwatch(status_.get());
    status_.reset();
  }

  UniqueFd status_;           // our end of its status channel
  UniqueFd handoff_;          // --mode handoff: our end of its connection inbox
  UniqueFd handover_sender_;  // a replacement: the end its predecessor hands over on
  uint32_t reported_open_ = 0;  // draining: connections it still holds
  bool takes_messages_ = false;  // its kReady said kWorkerTakesMessages (channel.h)
  // Where the worker keeps what a successor takes from it when this supervisor is gone.
  int child_status_escrow_fd_ = -1;
  int child_stats_fd_ = -1;
};

}  // namespace

Result<std::unique_ptr<Child>> start_worker_child(ProcessId id, uint32_t slot, int cpu, bool replacement,
                                                  SharedResources& shared) {
  const SupervisorOptions& options = shared.options;
  WorkerLaunch launch;
  launch.binary = shared.binary;
  launch.binary_fd = shared.binary_fd.get();
  launch.title = "lbd: worker " + std::to_string(slot);
  launch.cpu = cpu;
  launch.spec.slot = slot;
  launch.spec.cpu = cpu;
  launch.spec.http = options.http;
  launch.spec.idle_timeout = options.idle_timeout;
  launch.spec.header_timeout = options.header_timeout;
  launch.spec.min_body_rate = options.min_body_rate;
  launch.spec.body_memory = options.body_memory;
  launch.spec.drain_timeout = options.shutdown_timeout;
  launch.spec.max_connections = options.max_connections;
  launch.spec.log_level = options.log_level;
  launch.spec.run_as = options.run_as;
  launch.spec.demo_routes = options.demo_routes;
  launch.spec.reconcile_queue = options.mode == Mode::kBpf;
  launch.spec.publish_at_start = !replacement;  // a replacement waits for kServing
  launch.slot_table_fd = shared.table().fd();
  auto stats = WorkerStatsBlock::create();
  if (!stats) return stats.error();
  launch.stats_fd = stats->fd();

  auto status = seqpacket_pair();
  if (!status) return status.error().wrap("status channel");
  launch.status_fd = status->second.get();
  launch.status_escrow_fd = status->first.get();

  std::vector<UniqueFd> listeners;
  std::optional<std::pair<UniqueFd, UniqueFd>> handoff, handover;
  switch (options.mode) {
    case Mode::kBpf:
    case Mode::kReuseport: {
      auto opened = shared.open_listeners();
      if (!opened) return opened.error();
      listeners = std::move(*opened);
      for (const auto& fd : listeners) launch.listener_fds.push_back(fd.get());
      break;
    }
    case Mode::kShared:
      for (const auto& fd : shared.shared_listeners) launch.listener_fds.push_back(fd.get());
      break;
    case Mode::kHandoff: {
      launch.spec.accept_mode = AcceptMode::kHandoff;
      auto pair = seqpacket_pair();
      if (!pair) return pair.error().wrap("handoff channel");
      handoff.emplace(std::move(*pair));
      launch.handoff_fd = handoff->second.get();
      break;
    }
  }
  if (replacement) {
    auto pair = seqpacket_pair();
    if (!pair) return pair.error().wrap("handover channel");
    handover.emplace(std::move(*pair));
    launch.handover_in_fd = handover->second.get();
  }

  WorkerSpec placed;
  auto pid = spawn_worker(launch, &placed);
  if (!pid) return pid.error();
  auto process = ChildProcess::own(*pid);
  if (!process) return process.error();
  auto child = std::make_unique<WorkerChild>(id, slot, shared, std::move(*process));
  child->start_time_ = process_start_time(*pid).value_or(0);
  child->listeners_ = std::move(listeners);
  child->child_listener_fds_ = placed.listener_fds;
  child->child_status_escrow_fd_ = placed.status_escrow_fd;
  child->child_stats_fd_ = placed.stats_fd;
  child->stats_.emplace(std::move(*stats));
  child->status_ = std::move(status->first);
  if (handoff) child->handoff_ = std::move(handoff->first);
  if (handover) child->handover_sender_ = std::move(handover->first);
  if (auto watched = shared.poller->watch(child->status_.get(), Source::kStatus, id); !watched) {
    child->process().kill_and_reap(false);
    return watched.error();
  }
  return std::unique_ptr<Child>(std::move(child));
}

}  // namespace lbd

namespace lbd {

Result<std::unique_ptr<Child>> adopt_worker_child(const nlohmann::json& record, const ProcessRecord& p,
                                                  ChildProcess owned, const FdTaker& taker, SharedResources& shared) {
  const int holder = owned.pidfd();
  auto child = std::make_unique<WorkerChild>(p.id, p.slot, shared, std::move(owned));
  child->start_time_ = record.value("start_time", uint64_t{0});
  // A record from an lbd before `lbctl send` has no such entry: its workers would drop a message.
  child->takes_messages_ = record.value("takes_messages", false);
  const FdRef status = fd_ref_from_json(record.value("status", nlohmann::json()));
  const FdRef stats = fd_ref_from_json(record.value("stats", nlohmann::json()));
  child->child_status_escrow_fd_ = status.child;
  child->child_stats_fd_ = stats.child;

  auto status_fd = taker.take(status, holder, p.pid);
  if (!status_fd) return status_fd.error().wrap("status channel");
  child->status_ = std::move(*status_fd);
  if (auto stats_fd = taker.take(stats, holder, p.pid)) {
    auto block = WorkerStatsBlock::map(stats_fd->get());
    if (block) child->stats_.emplace(std::move(*block));
  }
  // Its own listeners (--mode bpf and reuseport; in --mode shared they are everyone's, and the
  // supervisor takes them once): a retiring worker's were shut and let go already.
  child->retiring_ = p.role == ProcessRole::kRetiring;
  const bool own_listeners = shared.options.mode == Mode::kBpf || shared.options.mode == Mode::kReuseport;
  for (const auto& listener : record.value("listeners", nlohmann::json::array())) {
    const FdRef ref = fd_ref_from_json(listener);
    child->child_listener_fds_.push_back(ref.child);
    if (!own_listeners || child->retiring_) continue;
    auto fd = taker.take(ref, holder, p.pid);
    if (!fd) return fd.error().wrap("listener");
    child->listeners_.push_back(std::move(*fd));
  }
  LBD_TRY(shared.poller->watch(child->status_.get(), Source::kStatus, p.id));
  return std::unique_ptr<Child>(std::move(child));
}

}  // namespace lbd
