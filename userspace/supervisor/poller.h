// The supervisor's epoll set: each watched fd carries a tag saying what it is (a Source) and
// which one (an index), so the loop can dispatch without a lookup table of fds.
#pragma once

#include <sys/epoll.h>

#include <cstdint>

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

}  // namespace lbd
