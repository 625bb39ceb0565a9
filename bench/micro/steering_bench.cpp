// What the steering program costs per decision, by the kernel's own account: with
// kernel.bpf_stats_enabled on, the kernel adds every run of a program to its run_time_ns and
// run_cnt (bpf_prog_info). The real program (bpf/steer.bpf.c) steers real connections to a
// reuseport group of 2 and of 8 listeners on loopback, once per policy; the figure is
// run_time_ns / run_cnt over those connections, counter ns_per_decision. It is the price lbd's
// steering adds to every new connection over the kernel's plain reuseport hash, against the
// ~30 µs of server CPU a new connection costs in all (README, Benchmarks). Every policy visits
// every slot (bpf_loop), so the cost grows with the number of workers; `least` also reads each
// slot's second cache line (its load), `sticky` scores every slot for the client and reads the
// client's address from the packet.
//
// Each iteration is one connection: connect, accept on whichever listener the program chose
// (bumping the slot's accepted count as a worker does, so `least` sees queues drain), close with
// a reset so no TIME_WAIT piles up. The time column is that whole cycle in wall time; the counter
// is the program alone. decisions_per_connect should read 1. Needs root (CAP_BPF).
//
// BM_SteeringFloor is the same measurement with a program that does nothing (pass) or only
// selects a fixed listener (select): what the kernel's statistics charge any run, on this
// machine, below which no steering program can go.
#include <benchmark/benchmark.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "net/listener.h"
#include "steer_floor_bpf.skel.h"
#include "steering/slot_table.h"
#include "support.h"

namespace lbd {
namespace {

constexpr const char* kStatsSysctl = "/proc/sys/kernel/bpf_stats_enabled";
constexpr int kAcceptTimeoutMs = 1000;
constexpr int64_t kConnections = 2000;

// Keeps the kernel's per-program run-time statistics on while it lives. Preferred:
// BPF_ENABLE_STATS, whose fd turns them off when closed, even if this process dies. Older
// kernels: the sysctl, set back to its old value by the destructor.
class RunTimeStats {
 public:
  static Result<RunTimeStats> enable() {
    RunTimeStats stats;
    int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
    if (fd >= 0) {
      stats.fd_.reset(fd);
      return stats;
    }
    const int enable_errno = errno;
    std::optional<char> old = read_sysctl();
    if (!old) return Error::from_errno(enable_errno, "enable BPF run-time statistics");
    if (*old != '1') {
      if (!write_sysctl('1')) return Error::from_errno(std::string("write ") + kStatsSysctl);
      stats.restore_ = *old;
    }
    return stats;
  }

  RunTimeStats(RunTimeStats&& other) noexcept
      : fd_(std::move(other.fd_)), restore_(std::exchange(other.restore_, std::nullopt)) {}
  RunTimeStats& operator=(RunTimeStats&&) = delete;
  RunTimeStats(const RunTimeStats&) = delete;
  RunTimeStats& operator=(const RunTimeStats&) = delete;
  ~RunTimeStats() {
    if (restore_) write_sysctl(*restore_);
  }

 private:
  RunTimeStats() = default;

  static std::optional<char> read_sysctl() {
    UniqueFd fd(open(kStatsSysctl, O_RDONLY | O_CLOEXEC));
    char value = 0;
    if (!fd || read(fd.get(), &value, 1) != 1) return std::nullopt;
    return value;
  }
  static bool write_sysctl(char value) {
    UniqueFd fd(open(kStatsSysctl, O_WRONLY | O_CLOEXEC));
    return fd && write(fd.get(), &value, 1) == 1;
  }

  UniqueFd fd_;                  // BPF_ENABLE_STATS
  std::optional<char> restore_;  // the sysctl's value before we set it
};

struct ProgramRuns {
  uint64_t run_time_ns = 0;
  uint64_t run_cnt = 0;
};

Result<ProgramRuns> program_runs(int prog_fd) {
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(prog_fd, &info, &len) != 0) {
    return Error::from_errno("bpf_obj_get_info_by_fd on the steering program");
  }
  return ProgramRuns{info.run_time_ns, info.run_cnt};
}

// One connection to `address`, accepted on whichever of `fds` got it (on_accept(i) then), closed
// on both sides.
template <class OnAccept>
Result<void> connect_once(const net::Address& address, std::vector<pollfd>& fds, OnAccept on_accept) {
  UniqueFd client(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!client) return Error::from_errno("client socket");
  // Close with a reset: neither side keeps a TIME_WAIT entry, so thousands of connections in a
  // row leave the kernel's tables as they found them.
  linger reset{1, 0};
  if (setsockopt(client.get(), SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)) != 0) {
    return Error::from_errno("SO_LINGER");
  }
  if (connect(client.get(), address.sockaddr_ptr(), address.length()) != 0) {
    return Error::from_errno("connect to " + address.to_string());
  }
  for (auto& p : fds) p.revents = 0;
  int ready = poll(fds.data(), fds.size(), kAcceptTimeoutMs);
  if (ready < 0) return Error::from_errno("poll listeners");
  if (ready == 0) return Error::from_errno(ETIMEDOUT, "no listener got the connection");
  for (size_t i = 0; i < fds.size(); i++) {
    if (!(fds[i].revents & POLLIN)) continue;
    UniqueFd accepted(accept4(fds[i].fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!accepted) continue;
    on_accept(i);
  }
  return {};
}

// Connections through the group until the state is done; the program's runs over them.
template <class OnAccept>
Result<ProgramRuns> measure(benchmark::State& state, int prog_fd, const net::Address& address,
                            const std::vector<UniqueFd>& listeners, OnAccept on_accept) {
  std::vector<pollfd> fds;
  for (auto& l : listeners) fds.push_back({l.get(), POLLIN, 0});
  auto before = program_runs(prog_fd);
  if (!before) return before.error();
  for (auto _ : state) {
    if (auto ok = connect_once(address, fds, on_accept); !ok) return ok.error();
  }
  auto after = program_runs(prog_fd);
  if (!after) return after.error();
  return ProgramRuns{after->run_time_ns - before->run_time_ns, after->run_cnt - before->run_cnt};
}

void report(benchmark::State& state, const ProgramRuns& runs) {
  if (runs.run_cnt == 0) {
    state.SkipWithError("the steering program never ran (is it attached?)");
    return;
  }
  state.counters["ns_per_decision"] =
      static_cast<double>(runs.run_time_ns) / static_cast<double>(runs.run_cnt);
  state.counters["decisions_per_connect"] =
      static_cast<double>(runs.run_cnt) / static_cast<double>(state.iterations());
  state.SetItemsProcessed(state.iterations());
}

void BM_SteeringDecision(benchmark::State& state, Policy policy, uint32_t workers) {
  auto group = bench::make_steered_group(policy, workers);
  if (!group) return bench::skip(state, group.error());
  auto stats = RunTimeStats::enable();
  if (!stats) return bench::skip(state, stats.error());
  // Each accept bumps the slot's `accepted` as a worker does, so `least` sees queues drain.
  auto runs = measure(state, group->steering.program_fd(), group->address, group->listeners,
                      [&](size_t i) {
                        lbd_slot& slot = group->steering.table().slot(static_cast<uint32_t>(i));
                        store_field(slot.accepted, load_field(slot.accepted) + 1);
                      });
  if (!runs) return state.SkipWithError(runs.error().message().c_str());
  report(state, *runs);
}

// The floor: the same connections through a group of `workers` listeners with a test-only program
// attached instead (bench/micro/steer_floor.bpf.c). `pass` returns SK_PASS and nothing else: what
// the kernel's statistics charge any program (two clock reads and the call into it). `select`
// also makes the one bpf_sk_select_reuseport call every steering decision needs.
void BM_SteeringFloor(benchmark::State& state, bool select, uint32_t workers) {
  std::unique_ptr<steer_floor_bpf, void (*)(steer_floor_bpf*)> floor(steer_floor_bpf__open_and_load(),
                                                                     steer_floor_bpf__destroy);
  if (!floor) return bench::skip(state, Error::from_errno("load the floor program"));
  const int prog_fd = bpf_program__fd(select ? floor->progs.floor_select : floor->progs.floor_pass);
  auto reserved = net::reserve_port(net::Address::parse("127.0.0.1:0"));
  if (!reserved) return bench::skip(state, reserved.error());
  std::vector<UniqueFd> listeners;
  for (uint32_t i = 0; i < workers; i++) {
    auto listener = bench::listen_on(reserved->address);
    if (!listener) return bench::skip(state, listener.error());
    if (setsockopt(listener->get(), SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &prog_fd, sizeof(prog_fd)) != 0) {
      return bench::skip(state, Error::from_errno("SO_ATTACH_REUSEPORT_EBPF"));
    }
    uint64_t fd = static_cast<uint64_t>(listener->get());
    if (bpf_map__update_elem(floor->maps.floor_sockarray, &i, sizeof(i), &fd, sizeof(fd), BPF_ANY) != 0) {
      return bench::skip(state, Error::from_errno("floor sockarray"));
    }
    listeners.push_back(std::move(*listener));
  }
  auto stats = RunTimeStats::enable();
  if (!stats) return bench::skip(state, stats.error());
  auto runs = measure(state, prog_fd, reserved->address, listeners, [](size_t) {});
  if (!runs) return state.SkipWithError(runs.error().message().c_str());
  report(state, *runs);
}

BENCHMARK_CAPTURE(BM_SteeringDecision, rr_2, Policy::kRoundRobin, 2)->Iterations(kConnections);
BENCHMARK_CAPTURE(BM_SteeringDecision, least_2, Policy::kLeast, 2)->Iterations(kConnections);
BENCHMARK_CAPTURE(BM_SteeringDecision, hash_2, Policy::kHash, 2)->Iterations(kConnections);
BENCHMARK_CAPTURE(BM_SteeringDecision, sticky_2, Policy::kSticky, 2)->Iterations(kConnections);
BENCHMARK_CAPTURE(BM_SteeringDecision, rr_8, Policy::kRoundRobin, 8)->Iterations(kConnections);
BENCHMARK_CAPTURE(BM_SteeringDecision, least_8, Policy::kLeast, 8)->Iterations(kConnections);
BENCHMARK_CAPTURE(BM_SteeringDecision, hash_8, Policy::kHash, 8)->Iterations(kConnections);
BENCHMARK_CAPTURE(BM_SteeringDecision, sticky_8, Policy::kSticky, 8)->Iterations(kConnections);
BENCHMARK_CAPTURE(BM_SteeringFloor, pass_2, false, 2)->Iterations(kConnections);
BENCHMARK_CAPTURE(BM_SteeringFloor, select_2, true, 2)->Iterations(kConnections);

}  // namespace
}  // namespace lbd
