// The steering program in the kernel, driven through lbd::Steering alone: no lbd processes.
//
// Each test loads a fresh program (fresh maps, counters and round-robin cursor), builds a
// SO_REUSEPORT group of listeners on one ephemeral loopback port, puts listener i in slot i and
// sets the slot states by hand. Clients connect without anyone accepting: the kernel completes
// each handshake into the accept queue of the listener the program chose, and the test finds out
// which by accepting on every listener. That is the real selection path (BPF_PROG_TEST_RUN cannot
// run sk_reuseport programs), including migration when a listener shuts down.
//
// Needs root (or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN); skips otherwise.
#include <gtest/gtest.h>

#include <sched.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <numeric>
#include <optional>
#include <set>
#include <algorithm>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "net/address.h"
#include "net/listener.h"
#include "steering/slot_table.h"
#include "steering/steering.h"

namespace lbd {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// How long any expected kernel event may take before the test fails (loopback: microseconds).
constexpr auto kPatience = 5s;

uint64_t monotonic_coarse_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);  // the clock bpf_ktime_get_coarse_ns() reads
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(left);
}

// One reuseport group of listeners, listener i in slot i.
struct Group {
  net::Address address;
  uint32_t row = 0;  // the group's row in the sockarray
  std::vector<UniqueFd> listeners;
};

class SteeringTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: loads a BPF sk_reuseport steering program";
  }

  // Loads a fresh program. `stale_after` is long by default so that a heartbeat stamped at the
  // start of a test keeps a slot live however slowly the machine runs it.
  void load(Policy policy, std::chrono::milliseconds stale_after = std::chrono::hours(1)) {
    groups_.clear();
    clients_.clear();
    accepted_.clear();
    steering_.reset();
    SteeringOptions options;
    options.policy = policy;
    options.stale_after = stale_after;
    options.sticky_stale_after = stale_after;
    auto loaded = Steering::load(options);
    ASSERT_TRUE(loaded) << loaded.error().message();
    steering_.emplace(std::move(*loaded));
  }

  // `n` listeners on one ephemeral port of `host`, in slots 0..n-1 of a new group. Every slot
  // starts EMPTY; the slot count is set to n.
  //
  // Like the supervisor, it turns port 0 into a free port first and binds every listener to that
  // explicit port: a socket that bound port 0 forgets its port when it stops listening, and the
  // program could then not find the group of a queue that is migrating.
  Group& add_group(uint32_t n, const char* host = "127.0.0.1:0") {
    Group& g = groups_.emplace_back();
    auto reserved = net::reserve_port(net::Address::parse(host));
    EXPECT_TRUE(reserved) << reserved.error().message();
    if (!reserved) return g;
    g.address = reserved->address;  // the hold is released at the end of this function
    for (uint32_t i = 0; i < n; i++) {
      auto listener = listen_on(g.address);
      EXPECT_TRUE(listener) << listener.error().message();
      if (!listener) return g;
      g.listeners.push_back(std::move(*listener));
    }
    auto row = steering_->add_group(g.address);
    EXPECT_TRUE(row) << row.error().message();
    if (!row) return g;
    g.row = *row;
    for (uint32_t i = 0; i < n; i++) {
      auto attached = steering_->attach(g.listeners[i].get());
      EXPECT_TRUE(attached) << attached.error().message();
      auto put = steering_->set_socket(g.row, i, g.listeners[i].get());
      EXPECT_TRUE(put) << put.error().message();
    }
    steering_->set_slot_count(n);
    return g;
  }

  static Result<UniqueFd> listen_on(const net::Address& address) {
    net::ListenerOptions options;
    options.backlog = 256;
    options.nonblocking = true;
    return net::listen_tcp(address, options);
  }

  // Loads a program and builds one group of `n` slots, all ACTIVE and live.
  void start(uint32_t n, Policy policy) {
    ASSERT_NO_FATAL_FAILURE(load(policy));
    ASSERT_NO_FATAL_FAILURE(add_group(n));
    for (uint32_t i = 0; i < n; i++) set_state(i, LBD_SLOT_ACTIVE);
  }

  lbd_slot& slot(uint32_t i) { return steering_->table().slot(i); }
  // Sets the state as the supervisor does, and stamps a heartbeat as a live worker does.
  void set_state(uint32_t i, uint32_t state, uint64_t heartbeat_ns = monotonic_coarse_ns()) {
    store_field(slot(i).heartbeat_ns, heartbeat_ns);
    store_field(slot(i).state, state);
  }

  // `count` clients connect to `address` without waiting; the handshakes complete in the kernel.
  void connect_clients(const net::Address& address, int count) {
    for (int i = 0; i < count; i++) {
      UniqueFd fd(socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      ASSERT_TRUE(fd) << strerror(errno);
      int rc = connect(fd.get(), address.sockaddr_ptr(), address.length());
      ASSERT_TRUE(rc == 0 || errno == EINPROGRESS) << "connect: " << strerror(errno);
      clients_.push_back(std::move(fd));
    }
  }

  // Accepts on every listener of `g` until `expected` connections in all have been accepted (or
  // the patience runs out) and returns how many each listener had.
  std::vector<int> accept_all(Group& g, int expected) {
    std::vector<int> counts(g.listeners.size(), 0);
    int total = 0;
    auto deadline = Clock::now() + kPatience;
    while (total < expected) {
      std::vector<pollfd> fds;
      for (auto& l : g.listeners) fds.push_back({l.get(), POLLIN, 0});
      int ready = poll(fds.data(), fds.size(), remaining_ms(deadline));
      if (ready <= 0) break;
      for (size_t i = 0; i < fds.size(); i++) {
        if (!(fds[i].revents & POLLIN)) continue;
        while (true) {
          int fd = accept4(g.listeners[i].get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break;
          accepted_.emplace_back(fd);
          counts[i]++;
          total++;
        }
      }
    }
    EXPECT_EQ(total, expected) << "connections that reached some accept queue";
    return counts;
  }

  // Connects `count` clients to group `g` and returns where they landed.
  std::vector<int> distribute(Group& g, int count) {
    connect_clients(g.address, count);
    return accept_all(g, count);
  }

  // Waits until the accept queues of `g` hold `expected` connections in all.
  bool wait_queued(Group& g, uint32_t expected) {
    auto deadline = Clock::now() + kPatience;
    while (true) {
      uint32_t queued = 0;
      for (auto& l : g.listeners) {
        auto q = net::accept_queue(l.get());
        if (q) queued += q->queued;
      }
      if (queued >= expected) return queued == expected;
      if (Clock::now() >= deadline) return false;
      poll(nullptr, 0, 1);
    }
  }

  uint32_t queued_on(int listener_fd) {
    auto q = net::accept_queue(listener_fd);
    EXPECT_TRUE(q) << q.error().message();
    return q ? q->queued : 0;
  }

  // Exec mode's readiness probe on a group of `host`: slot 0 active, slot 1's listener starting
  // (in no slot). The probe reaches slot 1's listener and nothing else does; the probe is not
  // counted as a client's connection; once removed, the listener can take its slot.
  void expect_probe_reaches_only_the_starting_listener(const char* host) {
    ASSERT_NO_FATAL_FAILURE(load(Policy::kRoundRobin));
    Group& g = add_group(2, host);
    ASSERT_TRUE(steering_->clear_socket(g.row, 1));
    set_state(0, LBD_SLOT_ACTIVE);
    set_state(1, LBD_SLOT_STARTING);

    auto probe = net::bind_probe(g.address);
    ASSERT_TRUE(probe) << probe.error().message();
    auto added = steering_->add_probe(g.row, 1, g.listeners[1].get(), probe->source);
    ASSERT_TRUE(added) << added.error().message();
    std::optional<Steering::ProbeRegistration> registration(std::move(*added));
    EXPECT_FALSE(registration->delivered());
    ASSERT_TRUE(net::connect_probe(*probe));
    connect_clients(g.address, 10);
    EXPECT_EQ(accept_all(g, 11), (std::vector<int>{10, 1})) << "10 clients, and the probe on slot 1";
    EXPECT_EQ(steering_->counters(0).selected, 10u);
    EXPECT_EQ(steering_->counters(1).selected, 0u) << "a probe is not a client's connection";
    EXPECT_EQ(load_field(slot(1).steered), 0u);
    EXPECT_TRUE(registration->delivered());

    registration.reset();  // the registration ends: its place is free
    auto put = steering_->set_socket(g.row, 1, g.listeners[1].get());
    ASSERT_TRUE(put) << "the probe place still held the listener: " << put.error().message();
    set_state(1, LBD_SLOT_ACTIVE);
    EXPECT_EQ(distribute(g, 10), (std::vector<int>{5, 5}));
  }

  std::optional<Steering> steering_;
  std::deque<Group> groups_;  // a deque: add_group() hands out references that must stay valid
  std::vector<UniqueFd> clients_;
  std::vector<UniqueFd> accepted_;
};

// --- selection ------------------------------------------------------------------------------

TEST_F(SteeringTest, RoundRobinSendsExactlyTheSameNumberToEveryActiveSlot) {
  ASSERT_NO_FATAL_FAILURE(start(3, Policy::kRoundRobin));
  auto counts = distribute(groups_[0], 30);
  EXPECT_EQ(counts, (std::vector<int>{10, 10, 10}));
}

TEST_F(SteeringTest, RoundRobinSkipsTheGapsBetweenActiveSlots) {
  ASSERT_NO_FATAL_FAILURE(load(Policy::kRoundRobin));
  Group& g = add_group(5);
  set_state(0, LBD_SLOT_ACTIVE);
  set_state(2, LBD_SLOT_ACTIVE);
  set_state(4, LBD_SLOT_ACTIVE);
  EXPECT_EQ(distribute(g, 24), (std::vector<int>{8, 0, 8, 0, 8}));
}

TEST_F(SteeringTest, SelectedCountersAddUpToTheConnectionsMade) {
  ASSERT_NO_FATAL_FAILURE(start(3, Policy::kRoundRobin));
  auto counts = distribute(groups_[0], 21);
  uint64_t selected = 0;
  for (uint32_t i = 0; i < 3; i++) {
    SlotCounters c = steering_->counters(i);
    EXPECT_EQ(c.selected, static_cast<uint64_t>(counts[i])) << "slot " << i;
    EXPECT_EQ(c.migrated, 0u) << "slot " << i;
    EXPECT_EQ(c.select_failed, 0u) << "slot " << i;
    selected += c.selected;
  }
  EXPECT_EQ(selected, 21u);
  EXPECT_EQ(steering_->fallbacks(), 0u);
}

TEST_F(SteeringTest, EverySelectionIsCountedAgainstTheSlotsLoad) {
  // `steered` is the program's half of the load formula (steered - accepted + open).
  ASSERT_NO_FATAL_FAILURE(start(2, Policy::kRoundRobin));
  auto counts = distribute(groups_[0], 8);
  EXPECT_EQ(load_field(slot(0).steered), static_cast<uint64_t>(counts[0]));
  EXPECT_EQ(load_field(slot(1).steered), static_cast<uint64_t>(counts[1]));
}

TEST_F(SteeringTest, ASlotThatIsNotActiveGetsNothingWhileAnotherIsActive) {
  struct Case {
    const char* description;
    uint32_t state;
    Policy policy;
  };
  const Case cases[] = {
      {"empty, rr", LBD_SLOT_EMPTY, Policy::kRoundRobin},
      {"starting, rr", LBD_SLOT_STARTING, Policy::kRoundRobin},
      {"draining, rr", LBD_SLOT_DRAINING, Policy::kRoundRobin},
      {"empty, least", LBD_SLOT_EMPTY, Policy::kLeast},
      {"draining, least", LBD_SLOT_DRAINING, Policy::kLeast},
      {"empty, hash", LBD_SLOT_EMPTY, Policy::kHash},
      {"draining, hash", LBD_SLOT_DRAINING, Policy::kHash},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.description);
    ASSERT_NO_FATAL_FAILURE(load(c.policy));
    Group& g = add_group(3);
    set_state(0, LBD_SLOT_ACTIVE);
    set_state(1, c.state);  // its socket stays in the sockarray: only the state protects it
    set_state(2, LBD_SLOT_ACTIVE);
    auto counts = distribute(g, 20);
    EXPECT_EQ(counts[1], 0);
    EXPECT_EQ(counts[0] + counts[2], 20);
    EXPECT_EQ(steering_->fallbacks(), 0u);
  }
}

TEST_F(SteeringTest, LeastPrefersTheSlotWithTheLowestPublishedLoad) {
  ASSERT_NO_FATAL_FAILURE(start(3, Policy::kLeast));
  store_field(slot(0).open, 100u);
  store_field(slot(2).open, 100u);
  EXPECT_EQ(distribute(groups_[0], 20), (std::vector<int>{0, 20, 0}));
}

TEST_F(SteeringTest, LeastCountsConnectionsStillInTheQueue) {
  // Nobody accepts, so each connection sent to a slot stays steered-but-not-accepted and makes
  // that slot busier: two idle slots share the connections evenly.
  ASSERT_NO_FATAL_FAILURE(start(2, Policy::kLeast));
  EXPECT_EQ(distribute(groups_[0], 20), (std::vector<int>{10, 10}));
}

TEST_F(SteeringTest, LeastAvoidsASlotWhoseHeartbeatIsStale) {
  ASSERT_NO_FATAL_FAILURE(load(Policy::kLeast, 20ms));
  Group& g = add_group(2);
  set_state(0, LBD_SLOT_ACTIVE, /*heartbeat_ns=*/0);  // never beat: stalled, and idle-looking
  // A stamp from the future counts as live; it keeps slot 1 live however long the test takes.
  set_state(1, LBD_SLOT_ACTIVE, monotonic_coarse_ns() + 3600ull * 1'000'000'000);
  store_field(slot(1).open, 50u);
  EXPECT_EQ(distribute(g, 10), (std::vector<int>{0, 10}));
}

TEST_F(SteeringTest, LeastStillSteersWhenEverySlotIsStalled) {
  ASSERT_NO_FATAL_FAILURE(load(Policy::kLeast, 20ms));
  Group& g = add_group(2);
  set_state(0, LBD_SLOT_ACTIVE, 0);
  set_state(1, LBD_SLOT_ACTIVE, 0);
  auto counts = distribute(g, 10);
  EXPECT_EQ(counts[0] + counts[1], 10);
  EXPECT_EQ(steering_->counters(0).selected + steering_->counters(1).selected, 10u);
  EXPECT_EQ(steering_->fallbacks(), 0u);
}

TEST_F(SteeringTest, PolicyChangesAtRunTimeWithoutReattaching) {
  ASSERT_NO_FATAL_FAILURE(start(2, Policy::kRoundRobin));
  store_field(slot(0).open, 1000u);
  EXPECT_EQ(distribute(groups_[0], 10), (std::vector<int>{5, 5})) << "rr ignores load";

  steering_->set_policy(Policy::kLeast);
  EXPECT_EQ(steering_->policy(), Policy::kLeast);
  EXPECT_EQ(distribute(groups_[0], 10), (std::vector<int>{0, 10})) << "least avoids the loaded slot";

  steering_->set_policy(Policy::kRoundRobin);
  auto counts = distribute(groups_[0], 10);
  EXPECT_EQ(counts, (std::vector<int>{5, 5})) << "and back to rr";
}

TEST_F(SteeringTest, SlotsBeyondTheSlotCountAreNotChosen) {
  ASSERT_NO_FATAL_FAILURE(start(3, Policy::kRoundRobin));
  steering_->set_slot_count(2);  // scale-down: slot 2 is out of the program's view
  EXPECT_EQ(distribute(groups_[0], 10), (std::vector<int>{5, 5, 0}));
}

TEST_F(SteeringTest, AnActiveSlotWithoutASocketIsSkippedNotLeftToTheKernelHash) {
  ASSERT_NO_FATAL_FAILURE(start(3, Policy::kRoundRobin));
  auto cleared = steering_->clear_socket(groups_[0].row, 1);
  ASSERT_TRUE(cleared) << cleared.error().message();
  auto counts = distribute(groups_[0], 12);
  EXPECT_EQ(counts[1], 0);
  EXPECT_EQ(counts[0] + counts[2], 12);
  EXPECT_EQ(steering_->fallbacks(), 0u);
  EXPECT_GT(steering_->counters(1).select_failed, 0u);
}

TEST_F(SteeringTest, SetSocketSwapsTheListenerBehindASlot) {
  // A reload puts the new worker's listener into the old one's slot.
  ASSERT_NO_FATAL_FAILURE(start(2, Policy::kRoundRobin));
  Group& g = groups_[0];
  auto replacement = listen_on(g.address);
  ASSERT_TRUE(replacement) << replacement.error().message();
  ASSERT_TRUE(steering_->attach(replacement->get()));
  auto put = steering_->set_socket(g.row, 0, replacement->get());
  ASSERT_TRUE(put) << put.error().message();
  g.listeners.push_back(std::move(*replacement));  // index 2: slot 0's new listener

  EXPECT_EQ(distribute(g, 10), (std::vector<int>{0, 5, 5}));
}

TEST_F(SteeringTest, AReadinessProbeReachesOnlyTheStartingListenerItIsFor) {
  expect_probe_reaches_only_the_starting_listener("127.0.0.1:0");
}

TEST_F(SteeringTest, AReadinessProbeReachesOnlyTheStartingListenerItIsForOverIPv6) {
  if (auto v6_loopback = net::reserve_port(net::Address::parse("[::1]:0")); !v6_loopback) {
    GTEST_SKIP() << "no IPv6 loopback here: " << v6_loopback.error().message();
  }
  expect_probe_reaches_only_the_starting_listener("[::1]:0");
}

TEST_F(SteeringTest, AReadinessProbeToAWildcardListenerComesFromLoopback) {
  if (auto wildcard = net::reserve_port(net::Address::parse("0.0.0.0:0")); !wildcard) {
    GTEST_SKIP() << "cannot bind 0.0.0.0 here: " << wildcard.error().message();
  }
  expect_probe_reaches_only_the_starting_listener("0.0.0.0:0");
}

TEST_F(SteeringTest, NoActiveSlotFallsBackToTheKernelAndStillConnects) {
  ASSERT_NO_FATAL_FAILURE(load(Policy::kRoundRobin));
  Group& g = add_group(2);
  set_state(0, LBD_SLOT_DRAINING);
  set_state(1, LBD_SLOT_EMPTY);
  auto counts = distribute(g, 10);
  EXPECT_EQ(counts[0] + counts[1], 10) << "every connection reached some listener";
  EXPECT_EQ(steering_->fallbacks(), 10u);
  EXPECT_EQ(steering_->counters(0).selected + steering_->counters(1).selected, 0u);
}

TEST_F(SteeringTest, EachListenAddressIsSteeredAsItsOwnGroup) {
  ASSERT_NO_FATAL_FAILURE(load(Policy::kRoundRobin));
  Group& v4 = add_group(2, "127.0.0.1:0");
  if (auto v6_loopback = net::reserve_port(net::Address::parse("[::1]:0")); !v6_loopback) {
    GTEST_SKIP() << "no IPv6 loopback here: " << v6_loopback.error().message();
  }
  Group& v6 = add_group(2, "[::1]:0");
  set_state(0, LBD_SLOT_ACTIVE);
  set_state(1, LBD_SLOT_ACTIVE);
  ASSERT_NE(v4.row, v6.row);

  EXPECT_EQ(distribute(v4, 10), (std::vector<int>{5, 5}));
  EXPECT_EQ(distribute(v6, 10), (std::vector<int>{5, 5}));
  EXPECT_EQ(steering_->counters(0).selected, 10u);
  EXPECT_EQ(steering_->counters(1).selected, 10u);
  EXPECT_EQ(steering_->fallbacks(), 0u) << "the program found both groups";
}

// --- sticky ----------------------------------------------------------------------------------

// Clients from many addresses: all of 127.0.0.0/8 belongs to the loopback, so a socket bound to
// 127.1.0.1, 127.1.0.2, ... before it connects is a client of its own address, as far as the
// kernel (and the program, which reads the SYN's source) can tell.
class StickySteeringTest : public SteeringTest {
 protected:
  static constexpr uint32_t kAddresses = 300;
  static constexpr int kNotSeen = -1;
  static constexpr int kSplit = -2;  // the address's connections went to different slots

  // Client i: 127.1.0.1 + i, or with family_ AF_INET6, fd00:1bd::1 + i (Ipv6 test below).
  int family_ = AF_INET;
  static constexpr uint32_t kFirstClient = 0x7f010001u;

  sockaddr_storage client_address(uint32_t i) const {
    sockaddr_storage address{};
    if (family_ == AF_INET) {
      auto* v4 = reinterpret_cast<sockaddr_in*>(&address);
      v4->sin_family = AF_INET;
      v4->sin_addr.s_addr = htonl(kFirstClient + i);
    } else {
      auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
      v6->sin6_family = AF_INET6;
      inet_pton(AF_INET6, "fd00:1bd::", &v6->sin6_addr);
      const uint32_t low = htonl(1 + i);
      memcpy(&v6->sin6_addr.s6_addr[12], &low, sizeof(low));
    }
    return address;
  }

  // The client a peer address belongs to, or kAddresses if none.
  uint32_t client_index(const sockaddr_storage& peer) const {
    uint32_t index = kAddresses;
    if (peer.ss_family == AF_INET) {
      index = ntohl(reinterpret_cast<const sockaddr_in*>(&peer)->sin_addr.s_addr) - kFirstClient;
    } else if (peer.ss_family == AF_INET6) {
      uint32_t low = 0;
      memcpy(&low, &reinterpret_cast<const sockaddr_in6*>(&peer)->sin6_addr.s6_addr[12], sizeof(low));
      index = ntohl(low) - 1;
    }
    return std::min(index, kAddresses);
  }

  void connect_from_every_address(const Group& g) {
    for (uint32_t i = 0; i < kAddresses; i++) {
      UniqueFd fd(socket(family_, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      ASSERT_TRUE(fd) << strerror(errno);
      const int one = 1;
      // IPv6 binds only to an address configured on an interface; the route makes the whole
      // prefix local, the option lets a socket take any address of it.
      if (family_ == AF_INET6) {
        ASSERT_EQ(setsockopt(fd.get(), IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof(one)), 0);
      }
      const sockaddr_storage source = client_address(i);
      const socklen_t length = family_ == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
      ASSERT_EQ(bind(fd.get(), reinterpret_cast<const sockaddr*>(&source), length), 0) << strerror(errno);
      int rc = connect(fd.get(), g.address.sockaddr_ptr(), g.address.length());
      ASSERT_TRUE(rc == 0 || errno == EINPROGRESS) << "connect: " << strerror(errno);
      clients_.push_back(std::move(fd));
    }
  }

  // Accepts `expected` connections on the listeners of `g` whose slots are in `slots` (all when
  // empty) and records, per client address, the slot whose listener had its connection.
  void accept_into(Group& g, uint32_t expected, std::vector<int>& where, std::vector<uint32_t> slots = {}) {
    if (slots.empty()) {
      for (uint32_t i = 0; i < g.listeners.size(); i++) slots.push_back(i);
    }
    uint32_t total = 0;
    const auto deadline = Clock::now() + kPatience;
    while (total < expected) {
      std::vector<pollfd> fds;
      for (uint32_t slot : slots) fds.push_back({g.listeners[slot].get(), POLLIN, 0});
      if (poll(fds.data(), fds.size(), remaining_ms(deadline)) <= 0) break;
      for (size_t k = 0; k < fds.size(); k++) {
        if (!(fds[k].revents & POLLIN)) continue;
        while (true) {
          sockaddr_storage peer{};
          socklen_t len = sizeof(peer);
          int fd = accept4(fds[k].fd, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break;
          accepted_.emplace_back(fd);
          total++;
          const uint32_t index = client_index(peer);
          ASSERT_LT(index, kAddresses) << "a connection from an address no client used";
          int& w = where[index];
          const int slot = static_cast<int>(slots[k]);
          w = (w == kNotSeen || w == slot) ? slot : kSplit;
        }
      }
    }
    ASSERT_EQ(total, expected) << "connections that reached some accept queue";
  }

  // One connection from every client address: the slot each address landed on (among `slots`,
  // all when empty).
  std::vector<int> placement(Group& g, const std::vector<uint32_t>& slots = {}) {
    std::vector<int> where(kAddresses, kNotSeen);
    connect_from_every_address(g);
    accept_into(g, kAddresses, where, slots);
    return where;
  }

  static std::set<int> slots_used(const std::vector<int>& where) { return {where.begin(), where.end()}; }

  // Every client queues a connection, then slot 1 drains and its listener stops: its queue
  // migrates. Each migrated connection must land where that client's next connection goes.
  void expect_queue_of_slot_1_follows_the_clients_keys() {
    Group& g = groups_[0];
    const std::vector<int> before = placement(g);
    ASSERT_GT(std::count(before.begin(), before.end(), 1), 0) << "slot 1 had no client to migrate";

    connect_from_every_address(g);  // queued as `before` says, nobody accepts yet
    ASSERT_TRUE(wait_queued(g, kAddresses));
    set_state(1, LBD_SLOT_DRAINING);
    auto stopped = net::stop_listening(g.listeners[1].get());
    ASSERT_TRUE(stopped) << stopped.error().message();
    EXPECT_EQ(steering_->counters(1).migrated, 0u);
    std::vector<int> after_migration(kAddresses, kNotSeen);
    ASSERT_NO_FATAL_FAILURE(accept_into(g, kAddresses, after_migration, {0, 2, 3}));

    uint64_t migrated = 0;
    for (uint32_t slot : {0u, 2u, 3u}) migrated += steering_->counters(slot).migrated;
    EXPECT_EQ(migrated, static_cast<uint64_t>(std::count(before.begin(), before.end(), 1)));
    const std::vector<int> next_connections = placement(g, {0, 2, 3});
    EXPECT_EQ(after_migration, next_connections);
  }
};

TEST_F(StickySteeringTest, EachClientAddressStaysOnItsSlotAndTheAddressesSpread) {
  ASSERT_NO_FATAL_FAILURE(start(4, Policy::kSticky));
  Group& g = groups_[0];
  std::vector<int> where(kAddresses, kNotSeen);
  // Three connections from every address, each from a new source port (a new flow).
  for (int round = 0; round < 3; round++) {
    connect_from_every_address(g);
    ASSERT_NO_FATAL_FAILURE(accept_into(g, kAddresses, where));
  }
  EXPECT_EQ(slots_used(where), (std::set<int>{0, 1, 2, 3})) << "kSplit (-2): an address reached two slots";
  std::vector<int> per_slot(4, 0);
  for (int slot : where) per_slot.at(static_cast<size_t>(std::max(slot, 0)))++;
  for (int n : per_slot) EXPECT_GT(n, static_cast<int>(kAddresses) / 8) << "300 addresses over 4 slots";
}

TEST_F(StickySteeringTest, ADrainedSlotsClientsMoveAndNoOthersThenReturn) {
  ASSERT_NO_FATAL_FAILURE(start(4, Policy::kSticky));
  Group& g = groups_[0];
  const std::vector<int> before = placement(g);
  ASSERT_EQ(slots_used(before).count(kSplit), 0u);

  set_state(2, LBD_SLOT_DRAINING);
  const std::vector<int> drained = placement(g);
  for (uint32_t i = 0; i < kAddresses; i++) {
    if (before[i] == 2) {
      EXPECT_TRUE(drained[i] >= 0 && drained[i] != 2) << "client " << i << " went to " << drained[i];
    } else {
      EXPECT_EQ(drained[i], before[i]) << "client " << i << " was not on the drained slot, yet moved";
    }
  }

  set_state(2, LBD_SLOT_ACTIVE);
  EXPECT_EQ(placement(g), before) << "slot 2's clients came back, and nobody else moved";
}

TEST_F(StickySteeringTest, AReplacedListenerInheritsItsSlotsClients) {
  // A reload: the slot's new worker's listener takes the slot's place in the sockarray.
  ASSERT_NO_FATAL_FAILURE(start(3, Policy::kSticky));
  Group& g = groups_[0];
  const std::vector<int> before = placement(g);
  auto replacement = listen_on(g.address);
  ASSERT_TRUE(replacement) << replacement.error().message();
  ASSERT_TRUE(steering_->attach(replacement->get()));
  ASSERT_TRUE(steering_->set_socket(g.row, 1, replacement->get()));
  std::swap(g.listeners[1], *replacement);  // slot 1's listener is the new one now
  EXPECT_EQ(placement(g), before);
}

TEST_F(StickySteeringTest, AClosingListenersQueuedClientsGoWhereTheirNewConnectionsWill) {
  // The queue of a listener that stops migrates by the same key as a SYN: the program reads the
  // client's address from the migrating socket, since no packet comes with it.
  ASSERT_NO_FATAL_FAILURE(start(4, Policy::kSticky));
  ASSERT_NO_FATAL_FAILURE(expect_queue_of_slot_1_follows_the_clients_keys());
}

// The same over IPv6, in a network namespace of the test's own (the machine's is untouched): its
// loopback up, and all of fd00:1bd::/64 local to it (an AnyIP route), so 300 clients each have an
// IPv6 address. The program reads an IPv6 SYN's source, and an IPv6 migrating socket's peer.
TEST_F(StickySteeringTest, Ipv6ClientsKeepTheirSlotsAndAClosingListenersQueueFollowsTheSameKey) {
  ASSERT_EQ(unshare(CLONE_NEWNET), 0) << "a network namespace: " << strerror(errno);
  ASSERT_EQ(system("ip link set lo up && ip -6 route add local fd00:1bd::/64 dev lo"), 0);
  family_ = AF_INET6;
  ASSERT_NO_FATAL_FAILURE(load(Policy::kSticky));
  Group& g = add_group(4, "[::1]:0");
  for (uint32_t i = 0; i < 4; i++) set_state(i, LBD_SLOT_ACTIVE);
  std::vector<int> where(kAddresses, kNotSeen);
  for (int round = 0; round < 2; round++) {
    connect_from_every_address(g);
    ASSERT_NO_FATAL_FAILURE(accept_into(g, kAddresses, where));
  }
  EXPECT_EQ(slots_used(where), (std::set<int>{0, 1, 2, 3})) << "kSplit (-2): an address reached two slots";
  ASSERT_NO_FATAL_FAILURE(expect_queue_of_slot_1_follows_the_clients_keys());
}

// --- migration (docs/ARCHITECTURE.md, invariant 1) -------------------------------------------------------

// Two active slots under rr with kPerSlot connections queued on each listener; then listener 0
// stops and its queue must reappear, intact, on listener 1.
class SteeringMigrationTest : public SteeringTest {
 protected:
  static constexpr int kPerSlot = 10;

  void queue_on_both() {
    ASSERT_NO_FATAL_FAILURE(start(2, Policy::kRoundRobin));
    connect_clients(groups_[0].address, 2 * kPerSlot);
    ASSERT_TRUE(wait_queued(groups_[0], 2 * kPerSlot));
    ASSERT_EQ(queued_on(groups_[0].listeners[0].get()), static_cast<uint32_t>(kPerSlot));
  }

  void expect_migrated_to_slot_1() {
    Group& g = groups_[0];
    auto stopped = net::stop_listening(g.listeners[0].get());
    ASSERT_TRUE(stopped) << stopped.error().message();

    // Migration happens inside shutdown(): listener 1 now holds every connection.
    EXPECT_EQ(queued_on(g.listeners[1].get()), static_cast<uint32_t>(2 * kPerSlot));
    EXPECT_EQ(steering_->counters(1).migrated, static_cast<uint64_t>(kPerSlot));
    EXPECT_EQ(steering_->counters(0).migrated, 0u);

    EXPECT_EQ(accept4(g.listeners[0].get(), nullptr, nullptr, SOCK_NONBLOCK), -1)
        << "listener 0 no longer listens";
    Group only_slot_1;
    only_slot_1.listeners.push_back(UniqueFd(dup(g.listeners[1].get())));
    EXPECT_EQ(accept_all(only_slot_1, 2 * kPerSlot), (std::vector<int>{2 * kPerSlot}));

    // Nobody was reset: every client is still connected with nothing to read yet.
    for (size_t i = 0; i < clients_.size(); i++) {
      int error = 0;
      socklen_t len = sizeof(error);
      ASSERT_EQ(getsockopt(clients_[i].get(), SOL_SOCKET, SO_ERROR, &error, &len), 0);
      EXPECT_EQ(error, 0) << "client " << i << ": " << strerror(error);
      char byte;
      EXPECT_EQ(recv(clients_[i].get(), &byte, 1, MSG_DONTWAIT), -1) << "client " << i;
      EXPECT_EQ(errno, EAGAIN) << "client " << i << ": " << strerror(errno);
    }
  }
};

TEST_F(SteeringMigrationTest, DrainedListenersQueueMovesToTheActiveSlot) {
  // The supervisor's drain: mark the slot draining, then stop its listener.
  ASSERT_NO_FATAL_FAILURE(queue_on_both());
  set_state(0, LBD_SLOT_DRAINING);
  ASSERT_NO_FATAL_FAILURE(expect_migrated_to_slot_1());
}

TEST_F(SteeringMigrationTest, QueueMovesEvenBeforeTheSlotIsMarked) {
  // A crash: the listener goes away while its slot still says ACTIVE. The program finds the
  // slot's socket gone and offers the connections to the next active slot.
  ASSERT_NO_FATAL_FAILURE(queue_on_both());
  ASSERT_NO_FATAL_FAILURE(expect_migrated_to_slot_1());
  EXPECT_GT(steering_->counters(0).select_failed, 0u) << "rr offered slot 0 first about half the time";
}

TEST_F(SteeringMigrationTest, ClosingTheLastFdMigratesLikeShutdown) {
  ASSERT_NO_FATAL_FAILURE(queue_on_both());
  set_state(0, LBD_SLOT_DRAINING);
  Group& g = groups_[0];
  g.listeners[0].reset();  // the only fd: the socket closes
  EXPECT_EQ(queued_on(g.listeners[1].get()), static_cast<uint32_t>(2 * kPerSlot));
  EXPECT_EQ(steering_->counters(1).migrated, static_cast<uint64_t>(kPerSlot));
}

}  // namespace
}  // namespace lbd
