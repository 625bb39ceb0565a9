// Set-up shared by the benchmarks that need the real steering program (root, or CAP_BPF and
// CAP_NET_ADMIN): a loaded program and one SO_REUSEPORT group of real listeners on a loopback
// port, built the way the supervisor builds it (explicit port, attach, listener i in slot i,
// every slot ACTIVE with a fresh heartbeat).
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "net/address.h"
#include "steering/steering.h"

namespace lbd::bench {

struct SteeredGroup {
  Steering steering;
  net::Address address;  // 127.0.0.1 and the group's port
  uint32_t row = 0;      // the group's row in the sockarray
  std::vector<UniqueFd> listeners;
};

// `workers` listeners in slots 0..workers-1, steered by `policy`. `least` treats a slot as
// stalled only after an hour, so the heartbeat stamped here keeps every slot live throughout.
Result<SteeredGroup> make_steered_group(Policy policy, uint32_t workers);

// One more non-blocking listener in the group at `address` (not yet in any slot).
Result<UniqueFd> listen_on(const net::Address& address);

// Marks the benchmark skipped with `error`, saying "needs root" when that is why it failed.
void skip(benchmark::State& state, const Error& error);

uint64_t monotonic_coarse_ns();

}  // namespace lbd::bench
