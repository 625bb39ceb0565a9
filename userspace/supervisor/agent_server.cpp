#include "supervisor/agent_server.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cmath>

#include "common/log.h"
#include "net/listener.h"

namespace lbd {

namespace {

constexpr size_t kMaxHeld = 32;
constexpr int kBacklog = 64;
// After the answer, how long we wait for HAProxy to close before we do.
constexpr auto kLinger = std::chrono::seconds(1);

}  // namespace

unsigned agent_weight_percent(const std::vector<SlotLoad>& slots) {
  if (slots.empty()) return 0;
  double free = 0;
  bool any_active = false;
  for (const SlotLoad& slot : slots) {
    if (!slot.active) continue;
    any_active = true;
    if (slot.stalled || slot.full) continue;
    free += 1.0 - std::clamp(slot.cpu_busy, 0.0, 1.0);
  }
  if (!any_active) return 0;
  const auto percent = static_cast<unsigned>(std::lround(100.0 * free / static_cast<double>(slots.size())));
  return std::clamp(percent, 1u, 100u);
}

std::string agent_answer(const std::string& not_ready_because, bool any_active, unsigned weight_percent) {
  if (!any_active) return "maint\n";
  if (!not_ready_because.empty()) return "drain\n";
  return "up ready " + std::to_string(std::clamp(weight_percent, 1u, 100u)) + "%\n";
}

Result<AgentServer> AgentServer::open(const net::Address& address, Poller& poller, Answer answer) {
  auto fd = net::listen_exclusive(address, kBacklog);
  if (!fd) return fd.error().wrap("agent");
  return adopt(std::move(*fd), poller, std::move(answer));
}

Result<AgentServer> AgentServer::adopt(UniqueFd listener, Poller& poller, Answer answer) {
  auto bound = net::local_address(listener.get());
  if (!bound) return bound.error().wrap("agent");
  LBD_TRY(poller.watch(listener.get(), Source::kAgent, 0));
  return AgentServer(*bound, std::move(listener), poller, std::move(answer));
}

void AgentServer::on_listener_ready() {
  while (true) {
    UniqueFd fd(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd) {  // EAGAIN, or a transient error: nothing to do until the next event
      accept_pause_.pause_if_out_of_fds(errno, *poller_, listener_.get(), "agent");
      return;
    }
    // A few bytes into an empty socket buffer: the send cannot block or be partial.
    const std::string line = answer_();
    (void)send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL);
    (void)shutdown(fd.get(), SHUT_WR);
    if (held_.size() >= kMaxHeld) continue;  // closed now: a flood must not hold descriptors
    const uint32_t id = next_id_++;
    if (!poller_->watch(fd.get(), Source::kAgentClient, id, EPOLLIN | EPOLLRDHUP)) continue;
    held_.emplace(id, Held{std::move(fd), Clock::now() + kLinger});
  }
}

void AgentServer::on_client_event(uint32_t id) {
  auto it = held_.find(id);
  if (it == held_.end()) return;
  char buffer[512];
  // Whatever HAProxy sends (agent-send) is read and discarded; its close ends the connection.
  for (int reads = 0; reads < 16; reads++) {
    const ssize_t n = recv(it->second.fd.get(), buffer, sizeof(buffer), 0);
    if (n > 0) continue;
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    return drop(id);
  }
}

void AgentServer::expire(Clock::time_point now) {
  std::vector<uint32_t> due;
  for (const auto& [id, held] : held_) {
    if (held.close_at <= now) due.push_back(id);
  }
  for (uint32_t id : due) drop(id);
}

std::optional<AgentServer::Clock::time_point> AgentServer::next_deadline() const {
  std::optional<Clock::time_point> next;
  for (const auto& [id, held] : held_) {
    if (!next || held.close_at < *next) next = held.close_at;
  }
  return next;
}

void AgentServer::drop(uint32_t id) {
  auto it = held_.find(id);
  if (it == held_.end()) return;
  poller_->unwatch(it->second.fd.get());
  held_.erase(it);
}

}  // namespace lbd
