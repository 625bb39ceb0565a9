// The supervisor's epoll set: each watched fd carries a tag saying what it is (a Source) and
// which one (an index), so the loop can dispatch without a lookup table of fds.
#pragma once

#include <sys/epoll.h>

#include <chrono>
#include <cstdint>
#include <optional>

#include "common/result.h"
#include "common/unique_fd.h"

namespace lbd {

enum class Source : uint32_t {
  kSignal = 1,       // the signalfd
  kStatus,           // a worker's status channel; index = process id (slot_manager.h)
  kExit,             // a child's pidfd, readable once it has exited; index = process id
  kHandoffListener,  // --mode handoff: a listener the supervisor accepts on; index = address
  kControl,          // the control socket's listener
  kControlClient,    // one lbctl connection; index = client id
  kAdmin,            // the admin HTTP listener (--admin)
  kAdminClient,      // one admin HTTP connection; index = client id
  kAgent,            // the HAProxy agent-check listener (--agent)
  kAgentClient,      // one agent-check connection, answered, until it closes; index = its id
  kNotify,           // exec mode: a program's NOTIFY_SOCKET; index = process id
  kOutput,           // exec mode: a program's stdout (index = process id * 2) or stderr (+1)
};

struct PollEvent {
  Source source;
  uint32_t index;
  uint32_t events;  // EPOLLIN, EPOLLOUT, EPOLLHUP, ...
};

class Poller {
 public:
  static Result<Poller> create();

  Result<void> watch(int fd, Source source, uint32_t index, uint32_t events = EPOLLIN);
  Result<void> modify(int fd, Source source, uint32_t index, uint32_t events);
  void unwatch(int fd);
  // Waits up to timeout_ms (-1: forever); returns the number of events written to `out`.
  int wait(PollEvent* out, int capacity, int timeout_ms);

 private:
  explicit Poller(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

// A listener that accept() cannot serve for lack of descriptors (EMFILE, ENFILE): the connection
// stays queued and the listener readable, so a level-triggered loop would spin on it. Watching it
// stops for a moment instead, and resumes from the loop's timers; the log says so at most once a
// minute.
class AcceptPause {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kPause{100};

  // After accept4 failed with `err`: true if it was for lack of descriptors (the listener is then
  // unwatched until resume_if_due()).
  bool pause_if_out_of_fds(int err, Poller& poller, int listener, const char* what);
  // From the timers: watches the listener again once the pause is over.
  void resume_if_due(Poller& poller, int listener, Source source, Clock::time_point now);
  std::optional<Clock::time_point> until() const { return until_; }

 private:
  std::optional<Clock::time_point> until_;
  std::optional<Clock::time_point> warned_at_;
};

}  // namespace lbd
