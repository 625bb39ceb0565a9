#include "support.h"

#include <time.h>

#include <cerrno>
#include <chrono>
#include <utility>

#include "net/listener.h"
#include "steering/slot_table.h"

namespace lbd::bench {

uint64_t monotonic_coarse_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);  // the clock bpf_ktime_get_coarse_ns() reads
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

Result<UniqueFd> listen_on(const net::Address& address) {
  net::ListenerOptions options;
  options.nonblocking = true;
  return net::listen_tcp(address, options);
}

Result<SteeredGroup> make_steered_group(Policy policy, uint32_t workers) {
  SteeringOptions options;
  options.policy = policy;
  options.stale_after = std::chrono::hours(1);
  options.sticky_stale_after = std::chrono::hours(1);
  auto steering = Steering::load(options);
  if (!steering) return steering.error();

  // Like the supervisor: turn port 0 into a concrete port first, then bind every listener to it
  // (a listener bound to port 0 would forget its port when it stops listening).
  auto reserved = net::reserve_port(net::Address::parse("127.0.0.1:0"));
  if (!reserved) return reserved.error();
  SteeredGroup group{std::move(*steering), reserved->address, 0, {}};
  for (uint32_t i = 0; i < workers; i++) {
    auto listener = listen_on(group.address);
    if (!listener) return listener.error();
    group.listeners.push_back(std::move(*listener));
  }
  auto row = group.steering.add_group(group.address);
  if (!row) return row.error();
  group.row = *row;
  for (uint32_t i = 0; i < workers; i++) {
    LBD_TRY(group.steering.attach(group.listeners[i].get()));
    LBD_TRY(group.steering.set_socket(group.row, i, group.listeners[i].get()));
    lbd_slot& slot = group.steering.table().slot(i);
    store_field(slot.heartbeat_ns, monotonic_coarse_ns());
    store_field(slot.state, static_cast<uint32_t>(LBD_SLOT_ACTIVE));
  }
  group.steering.set_slot_count(workers);
  return group;
}

void skip(benchmark::State& state, const Error& error) {
  const int code = error.code().value();
  const bool privilege = error.code().category() == std::system_category() &&
                         (code == EPERM || code == EACCES);
  const std::string reason =
      (privilege ? "needs root (CAP_BPF): " : "set-up failed: ") + error.message();
  state.SkipWithError(reason.c_str());
}

}  // namespace lbd::bench
