// HAProxy's agent-check (--agent ADDR:PORT): how an lbd host behind HAProxy tells it, in HAProxy's
// own protocol, whether to send new connections and how many (docs/ARCHITECTURE.md, "Behind a
// balancer").
//
// HAProxy connects every `agent-inter`, may send a line of its own (`agent-send`), and reads one
// line; lbd writes it at once and closes:
//   "up ready 73%\n"  a worker serves; the weight is the share of the host's capacity that is
//                     free (agent_weight_percent), 1-100, so a busy or half-drained host gets a
//                     smaller share of new connections ("ready" also ends a drain or maint state
//                     the agent set earlier)
//   "drain\n"         lbd is leaving: a drain --all or a graceful stop has begun (its workers
//                     still serve for --drain-grace, until HAProxy stops sending)
//   "maint\n"         no worker serves (all drained, or none ready yet)
//
// Served on the supervisor's epoll loop like the admin endpoint and as small: the answer is
// computed and written on accept (it fits any socket buffer), then the write side is shut and the
// connection kept only until HAProxy closes, at most 1 s, so that an unread agent-send line in our
// buffer does not turn our close into a reset. At most 32 connections are held; one more is
// answered and closed at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "net/address.h"
#include "supervisor/poller.h"

namespace lbd {

// One slot as the agent weighs it.
struct SlotLoad {
  bool active = false;   // serving and steered to
  bool stalled = false;  // its loop has not run for the policy's stall bound
  bool full = false;     // its connection table is full: it has stopped accepting
  double cpu_busy = 0;   // its worker's CPU use over the last second, as a fraction of one CPU
};

// The host's free capacity in percent: each slot counts 1 - its CPU use if it is active, not
// stalled and not full, else 0, averaged over every slot; at least 1 while a slot is active (0
// would mean "drain" to HAProxy), 0 when none is.
unsigned agent_weight_percent(const std::vector<SlotLoad>& slots);

// The agent's line: "drain" when `not_ready_because` is set and a worker still serves, "maint"
// when none does, else "up ready N%".
std::string agent_answer(const std::string& not_ready_because, bool any_active, unsigned weight_percent);

class AgentServer {
 public:
  using Clock = std::chrono::steady_clock;
  using Answer = std::function<std::string()>;

  // Listens on `address` (port 0: a free port, see address()) and starts watching it.
  static Result<AgentServer> open(const net::Address& address, Poller& poller, Answer answer);
  // Answers on a listener a predecessor opened (an upgrade): HAProxy's checks see no gap.
  static Result<AgentServer> adopt(UniqueFd listener, Poller& poller, Answer answer);

  AgentServer(AgentServer&&) noexcept = default;
  AgentServer& operator=(AgentServer&&) = delete;

  const net::Address& address() const { return address_; }
  int listener_fd() const { return listener_.get(); }

  // Poller events.
  void on_listener_ready();
  void on_client_event(uint32_t id);
  // Closes the connections HAProxy has not closed within their time.
  void expire(Clock::time_point now);
  std::optional<Clock::time_point> next_deadline() const;
  void resume_accepting(Clock::time_point now) {
    accept_pause_.resume_if_due(*poller_, listener_.get(), Source::kAgent, now);
  }
  std::optional<Clock::time_point> accepting_paused_until() const { return accept_pause_.until(); }

 private:
  struct Held {
    UniqueFd fd;
    Clock::time_point close_at;
  };

  AgentServer(net::Address address, UniqueFd listener, Poller& poller, Answer answer)
      : address_(address), listener_(std::move(listener)), poller_(&poller), answer_(std::move(answer)) {}
  void drop(uint32_t id);

  net::Address address_;
  UniqueFd listener_;
  Poller* poller_;
  AcceptPause accept_pause_;
  Answer answer_;
  std::map<uint32_t, Held> held_;
  uint32_t next_id_ = 1;
};

}  // namespace lbd
