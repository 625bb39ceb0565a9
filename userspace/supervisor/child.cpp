// What every kind of child shares: its listeners, and putting them into the slot.
#include "supervisor/child.h"

#include "common/log.h"
#include "net/listener.h"

namespace lbd {

Result<std::vector<UniqueFd>> SharedResources::open_listeners() {
  std::vector<UniqueFd> fds;
  for (const auto& address : bound) {
    net::ListenerOptions listener_options;
    listener_options.backlog = options.backlog;
    auto fd = net::listen_tcp(address, listener_options);
    if (!fd) return fd.error();
    if (steering) LBD_TRY(steering->attach(fd->get()));
    fds.push_back(std::move(*fd));
  }
  return fds;
}

Result<void> Child::swap_in(Child* previous) {
  if (!shared_.steering) return {};
  for (uint32_t g = 0; g < shared_.groups.size(); g++) {
    // Into the slot; for a replacement this is the swap: from now on the slot's connections go
    // to the new process.
    if (auto ok = shared_.steering->set_socket(shared_.groups[g], slot_, listeners_[g].get()); !ok) {
      for (uint32_t back = 0; previous && back < g && back < previous->listeners_.size(); back++) {
        (void)shared_.steering->set_socket(shared_.groups[back], slot_, previous->listeners_[back].get());
      }
      return ok.error();
    }
  }
  return {};
}

void Child::stop_listening() {
  for (UniqueFd& fd : listeners_) {
    if (auto ok = net::stop_listening(fd.get()); !ok) spdlog::warn("worker {}: {}", slot_, ok.error().message());
  }
  listeners_.clear();
}

uint64_t Child::resident_bytes() const {
  auto usage = read_process_usage(process_.pid());
  return usage ? usage->rss_bytes : 0;
}

}  // namespace lbd
