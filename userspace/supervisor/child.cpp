// What every kind of child shares: its listeners, and putting them into the slot.
#include "supervisor/child.h"

#include "common/log.h"
#include "net/listener.h"

#include <algorithm>

#include <sys/syscall.h>
#include <unistd.h>

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

Result<void> Child::attach_steering(uint32_t group) {
  if (!shared_.steering || group >= listeners_.size()) return Error::from_errno(ENOENT, "no listener");
  return shared_.steering->attach(listeners_[group].get());
}

void Child::stop_listening() {
  for (UniqueFd& fd : listeners_) {
    if (auto ok = net::stop_listening(fd.get()); !ok) spdlog::warn("worker {}: {}", slot_, ok.error().message());
  }
  listeners_.clear();
}

nlohmann::json Child::record_base(const char* kind) const {
  // Ours while we keep copies (not in --mode shared, nor once it retires); the process's always.
  nlohmann::json listeners = nlohmann::json::array();
  for (size_t i = 0; i < std::max(listeners_.size(), child_listener_fds_.size()); i++) {
    listeners.push_back(to_json(fd_ref(i < listeners_.size() ? listeners_[i].get() : -1,
                                      i < child_listener_fds_.size() ? child_listener_fds_[i] : -1)));
  }
  return {{"kind", kind},
          {"id", id_},
          {"slot", slot_},
          {"pid", process_.pid()},
          {"start_time", start_time_},
          {"listeners", std::move(listeners)}};
}

Result<std::unique_ptr<Child>> adopt_child(const nlohmann::json& record, const ProcessRecord& p, const FdTaker& taker,
                                           SharedResources& shared) {
  if (!record.is_object() || record.value("pid", 0) != p.pid || record.value("id", 0u) != p.id) {
    return Error::invalid("the record does not describe process " + std::to_string(p.id));
  }
  // The pid must still be the process the record names: same pid, same start time.
  const auto started = process_start_time(p.pid);
  if (!started || *started != record.value("start_time", uint64_t{0})) {
    return Error::from_errno(ESRCH, "pid " + std::to_string(p.pid) + " is gone");
  }
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, p.pid, 0)));
  if (!pidfd) return Error::from_errno("pidfd_open for pid " + std::to_string(p.pid));
  // Checked again through the pidfd: the pid could have been reused between the two looks.
  if (process_start_time(p.pid) != started) return Error::from_errno(ESRCH, "pid " + std::to_string(p.pid) + " is gone");
  ChildProcess owned = ChildProcess::adopt(p.pid, std::move(pidfd));
  const std::string kind = record.value("kind", "");
  if (kind == "worker") return adopt_worker_child(record, p, std::move(owned), taker, shared);
  if (kind == "program") return adopt_program_child(record, p, std::move(owned), taker, shared);
  return Error::invalid("process " + std::to_string(p.id) + " is of an unknown kind '" + kind + "'");
}

uint64_t Child::resident_bytes() const {
  if (auto tree = tree_rss()) return *tree;
  auto usage = read_process_usage(process_.pid());
  return usage ? usage->rss_bytes : 0;
}

}  // namespace lbd
