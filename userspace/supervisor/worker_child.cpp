// lbd's own worker as a child of the supervisor: started by executing the lbd binary with its
// spec in the environment (launch.h), it talks over its status channel (worker/channel.h): it
// says when it is ready, the supervisor tells it when it serves and when to drain.
#include <signal.h>
#include <string.h>
#include <sys/socket.h>

#include "common/log.h"
#include "supervisor/child.h"
#include "supervisor/launch.h"
#include "worker/channel.h"

namespace lbd {

namespace {

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
  int handoff_inbox() const override { return handoff_.get(); }

 private:
  friend Result<std::unique_ptr<Child>> lbd::start_worker_child(ProcessId, uint32_t, int, bool, SharedResources&);

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
};

}  // namespace

Result<std::unique_ptr<Child>> start_worker_child(ProcessId id, uint32_t slot, int cpu, bool replacement,
                                                  SharedResources& shared) {
  const SupervisorOptions& options = shared.options;
  WorkerLaunch launch;
  launch.binary = shared.binary;
  launch.title = "lbd: worker " + std::to_string(slot);
  launch.cpu = cpu;
  launch.spec.slot = slot;
  launch.spec.cpu = cpu;
  launch.spec.http = options.http;
  launch.spec.idle_timeout = options.idle_timeout;
  launch.spec.drain_timeout = options.shutdown_timeout;
  launch.spec.max_connections = options.max_connections;
  launch.spec.log_level = options.log_level;
  launch.spec.reconcile_queue = options.mode == Mode::kBpf;
  launch.spec.publish_at_start = !replacement;  // a replacement waits for kServing
  launch.slot_table_fd = shared.table().fd();
  auto stats = WorkerStatsBlock::create();
  if (!stats) return stats.error();
  launch.stats_fd = stats->fd();

  auto status = seqpacket_pair();
  if (!status) return status.error().wrap("status channel");
  launch.status_fd = status->second.get();

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

  auto pid = spawn_worker(launch);
  if (!pid) return pid.error();
  auto process = ChildProcess::own(*pid);
  if (!process) return process.error();
  auto child = std::make_unique<WorkerChild>(id, slot, shared, std::move(*process));
  child->listeners_ = std::move(listeners);
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
