#include "supervisor/poller.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log.h"

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

bool AcceptPause::pause_if_out_of_fds(int err, Poller& poller, int listener, const char* what) {
  if (err != EMFILE && err != ENFILE) return false;
  if (until_) return true;
  poller.unwatch(listener);
  const auto now = Clock::now();
  until_ = now + kPause;
  if (warned_at_ && now - *warned_at_ < std::chrono::minutes(1)) return true;
  warned_at_ = now;
  spdlog::warn("{}: cannot accept: {} (out of descriptors); pausing {} ms at a time until it can", what,
               strerror(err), kPause.count());
  return true;
}

void AcceptPause::resume_if_due(Poller& poller, int listener, Source source, Clock::time_point now) {
  if (!until_ || now < *until_) return;
  until_.reset();
  if (auto watched = poller.watch(listener, source, 0); !watched) {
    spdlog::error("cannot watch a listener again: {}", watched.error().message());
  }
}

}  // namespace lbd
