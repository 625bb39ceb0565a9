// How `--policy sticky` places clients, measured with the real program in the kernel: 10,000
// client addresses (127.1.0.1 and up: all of 127.0.0.0/8 is the loopback's) connect once each to
// a reuseport group of 2, 4 and 8 listeners; then slot 1 is marked draining and every address
// connects again. Counters:
//   largest_share, smallest_share   the busiest and idlest slot's clients over an even share
//                                   (1.00 = exactly N-th of the clients each)
//   drained_slot_share              the share of the clients slot 1 had: those that must move
//   moved_share                     the share that moved when slot 1 was drained
//   moved_from_elsewhere            clients of another slot that moved anyway (the promise is 0)
// The cost of a sticky decision is BM_SteeringDecision/sticky_* in steering_bench.cpp. Needs root.
#include <benchmark/benchmark.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "steering/slot_table.h"
#include "support.h"

namespace lbd {
namespace {

constexpr uint32_t kClients = 10'000;
constexpr uint32_t kBatch = 100;  // connections in flight at once, well below any backlog
constexpr int kAcceptTimeoutMs = 2000;

in_addr_t client_address(uint32_t i) { return htonl(0x7f010001u + i); }

// Connects from client addresses [first, first + count) and records which slot's listener
// accepted each. The client closes with a reset: no TIME_WAIT is left behind.
Result<void> place_batch(bench::SteeredGroup& group, uint32_t first, uint32_t count, std::vector<int>& slot_of) {
  std::vector<UniqueFd> clients;
  for (uint32_t i = first; i < first + count; i++) {
    UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) return Error::from_errno("client socket");
    linger reset{1, 0};
    if (setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)) != 0) return Error::from_errno("SO_LINGER");
    sockaddr_in source{};
    source.sin_family = AF_INET;
    source.sin_addr.s_addr = client_address(i);
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&source), sizeof(source)) != 0) {
      return Error::from_errno("bind a client to 127.1.x.y");
    }
    if (connect(fd.get(), group.address.sockaddr_ptr(), group.address.length()) != 0 && errno != EINPROGRESS) {
      return Error::from_errno("connect to " + group.address.to_string());
    }
    clients.push_back(std::move(fd));
  }
  std::vector<pollfd> fds;
  for (auto& l : group.listeners) fds.push_back({l.get(), POLLIN, 0});
  uint32_t accepted = 0;
  while (accepted < count) {
    int ready = poll(fds.data(), fds.size(), kAcceptTimeoutMs);
    if (ready < 0) return Error::from_errno("poll listeners");
    if (ready == 0) return Error::from_errno(ETIMEDOUT, "connections never reached a listener");
    for (size_t slot = 0; slot < fds.size(); slot++) {
      if (!(fds[slot].revents & POLLIN)) continue;
      while (true) {
        sockaddr_in peer{};
        socklen_t len = sizeof(peer);
        UniqueFd conn(accept4(fds[slot].fd, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC));
        if (!conn) break;
        const uint32_t index = ntohl(peer.sin_addr.s_addr) - ntohl(client_address(0));
        if (index < slot_of.size()) slot_of[index] = static_cast<int>(slot);
        accepted++;
      }
    }
  }
  return {};
}

Result<std::vector<int>> place_every_client(bench::SteeredGroup& group) {
  std::vector<int> slot_of(kClients, -1);
  for (uint32_t first = 0; first < kClients; first += kBatch) LBD_TRY(place_batch(group, first, kBatch, slot_of));
  return slot_of;
}

void BM_StickyPlacement(benchmark::State& state, uint32_t workers) {
  auto group = bench::make_steered_group(Policy::kSticky, workers);
  if (!group) return bench::skip(state, group.error());
  for (auto _ : state) {
    auto before = place_every_client(*group);
    if (!before) return bench::skip(state, before.error());
    store_field(group->steering.table().slot(1).state, static_cast<uint32_t>(LBD_SLOT_DRAINING));
    auto drained = place_every_client(*group);
    store_field(group->steering.table().slot(1).state, static_cast<uint32_t>(LBD_SLOT_ACTIVE));
    if (!drained) return bench::skip(state, drained.error());

    std::vector<uint32_t> per_slot(workers, 0);
    uint32_t on_drained = 0, moved = 0, moved_from_elsewhere = 0;
    for (uint32_t i = 0; i < kClients; i++) {
      if ((*before)[i] >= 0) per_slot[static_cast<size_t>((*before)[i])]++;
      if ((*before)[i] == 1) on_drained++;
      if ((*drained)[i] != (*before)[i]) {
        moved++;
        if ((*before)[i] != 1) moved_from_elsewhere++;
      }
    }
    uint32_t largest = 0, smallest = kClients;
    for (uint32_t n : per_slot) {
      largest = std::max(largest, n);
      smallest = std::min(smallest, n);
    }
    const double even = static_cast<double>(kClients) / workers;
    state.counters["largest_share"] = largest / even;
    state.counters["smallest_share"] = smallest / even;
    state.counters["drained_slot_share"] = static_cast<double>(on_drained) / kClients;
    state.counters["moved_share"] = static_cast<double>(moved) / kClients;
    state.counters["moved_from_elsewhere"] = moved_from_elsewhere;
  }
}

BENCHMARK_CAPTURE(BM_StickyPlacement, slots_2, 2)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_StickyPlacement, slots_4, 4)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_StickyPlacement, slots_8, 8)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace lbd
