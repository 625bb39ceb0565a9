#include "supervisor/poller.h"

#include <algorithm>
#include <cerrno>

namespace lbd {

namespace {
uint64_t pack(Source source, uint32_t index) { return static_cast<uint64_t>(source) << 32 | index; }
}  // namespace

Result<Poller> Poller::create() {
  UniqueFd fd(epoll_create1(EPOLL_CLOEXEC));
  if (!fd) return Error::from_errno("epoll_create1");
  return Poller(std::move(fd));
}

Result<void> Poller::watch(int fd, Source source, uint32_t index, uint32_t events) {
  epoll_event event{};
  event.events = events;
  event.data.u64 = pack(source, index);
  if (epoll_ctl(fd_.get(), EPOLL_CTL_ADD, fd, &event) != 0) return Error::from_errno("epoll_ctl add");
  return {};
}

Result<void> Poller::modify(int fd, Source source, uint32_t index, uint32_t events) {
  epoll_event event{};
  event.events = events;
  event.data.u64 = pack(source, index);
  if (epoll_ctl(fd_.get(), EPOLL_CTL_MOD, fd, &event) != 0) return Error::from_errno("epoll_ctl mod");
  return {};
}

void Poller::unwatch(int fd) { epoll_ctl(fd_.get(), EPOLL_CTL_DEL, fd, nullptr); }

int Poller::wait(PollEvent* out, int capacity, int timeout_ms) {
  epoll_event events[64];
  int n = epoll_wait(fd_.get(), events, std::min(capacity, 64), timeout_ms);
  if (n < 0) return errno == EINTR ? 0 : -1;
  for (int i = 0; i < n; i++) {
    out[i].source = static_cast<Source>(events[i].data.u64 >> 32);
    out[i].index = static_cast<uint32_t>(events[i].data.u64);
    out[i].events = events[i].events;
  }
  return n;
}

}  // namespace lbd
