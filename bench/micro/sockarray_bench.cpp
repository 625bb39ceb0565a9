// What replacing the listener in a slot costs: one bpf_map_update_elem() on the steering
// program's REUSEPORT_SOCKARRAY (Steering::set_socket), the step of a reload that makes the new
// worker's listener receive the slot's connections. It is a syscall under the kernel's
// reuseport lock, run once per slot per reload; this shows it is nowhere near what a reload's
// timing depends on (starting a worker). Two real listeners of one reuseport group on loopback
// take turns in slot 0, as the old and the new worker of a reload do. Needs root (CAP_BPF).
#include <benchmark/benchmark.h>

#include "support.h"

namespace lbd {
namespace {

void BM_SockarraySwap(benchmark::State& state) {
  auto group = bench::make_steered_group(Policy::kLeast, 1);
  if (!group) return bench::skip(state, group.error());
  // The new worker's listener: in the group, in no slot yet (a socket sits in one slot at most).
  auto successor = bench::listen_on(group->address);
  if (!successor) return bench::skip(state, successor.error());
  if (auto attached = group->steering.attach(successor->get()); !attached) {
    return bench::skip(state, attached.error());
  }
  const int fds[2] = {successor->get(), group->listeners[0].get()};
  uint64_t swaps = 0;
  for (auto _ : state) {
    auto put = group->steering.set_socket(group->row, 0, fds[swaps++ & 1]);
    if (!put) {
      state.SkipWithError(put.error().message().c_str());
      break;
    }
  }
}
BENCHMARK(BM_SockarraySwap);

}  // namespace
}  // namespace lbd
