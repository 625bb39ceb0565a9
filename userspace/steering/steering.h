// Owns the steering program (bpf/steer.bpf.c) and its maps: loads the skeleton, registers each
// reuseport group, puts listeners into slots, switches the policy, and reads the counters.
// Knows nothing about processes: the supervisor tells it which socket serves which slot.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "net/address.h"
#include "steer_abi.h"
#include "steering/slot_table.h"

struct steer_bpf;

namespace lbd {

enum class Policy : uint32_t {
  kRoundRobin = LBD_POLICY_RR,
  kLeast = LBD_POLICY_LEAST,
  kHash = LBD_POLICY_HASH,
  kSticky = LBD_POLICY_STICKY,
};
const char* policy_name(Policy policy);

struct SteeringOptions {
  Policy policy = Policy::kLeast;
  // `least` skips a worker whose heartbeat is older than this (a stopped or stuck worker).
  std::chrono::milliseconds stale_after{50};
};

struct SlotCounters {
  uint64_t selected = 0;
  uint64_t migrated = 0;
  uint64_t select_failed = 0;
};

class Steering {
 public:
  // Loads and verifies the program. EPERM here means no CAP_BPF/CAP_NET_ADMIN; the error says so.
  static Result<Steering> load(const SteeringOptions& options);
  // Loads the program again over the maps a predecessor pinned under `dir` (pin()): the groups,
  // the slot table, the counters and the sockets in the slots carry on, and so does everything
  // the workers write. `groups` listen addresses were registered. Not attached yet: attach() it
  // to each group to take charge. The program's own variables (policy, slot count) are set anew.
  static Result<Steering> adopt(const SteeringOptions& options, const std::string& dir, uint32_t groups);

  Steering(Steering&&) noexcept;
  Steering& operator=(Steering&&) noexcept;
  ~Steering();

  // Registers a listen address as a reuseport group and returns its row in the sockarray. The
  // address must carry the real port (after binding port 0).
  Result<uint32_t> add_group(const net::Address& bound);
  // Attaches the program to the group `listener_fd` belongs to. Attaching again on every new
  // listener keeps the group steered even if all its earlier members have closed.
  Result<void> attach(int listener_fd);
  // Puts a listening socket into (group, slot); replaces whatever socket was there.
  Result<void> set_socket(uint32_t group, uint32_t slot, int listener_fd);
  Result<void> clear_socket(uint32_t group, uint32_t slot);

  // Readiness probes (exec mode): while the returned registration lives, a connection from
  // `source` (address and port) goes to `listener_fd`, a starting worker's listener that is in no
  // slot yet, whatever the slots' states. Register before connecting. The listener can go into
  // its slot (set_socket) only once the registration is gone: a socket sits in one place. A
  // registration refers to this Steering, which must outlive it (and not move meanwhile).
  class ProbeRegistration {
   public:
    ProbeRegistration(ProbeRegistration&& other) noexcept;
    ProbeRegistration& operator=(ProbeRegistration&&) = delete;
    ~ProbeRegistration();
    // The probe's SYN reached the listener (not some other one because the place was empty).
    bool delivered() const;

   private:
    friend class Steering;
    ProbeRegistration(Steering* steering, uint32_t place, const net::Address& source)
        : steering_(steering), place_(place), source_(source) {}
    Steering* steering_;
    uint32_t place_;
    net::Address source_;
  };
  Result<ProbeRegistration> add_probe(uint32_t group, uint32_t slot, int listener_fd,
                                      const net::Address& source);

  // Pins the maps under `dir` on the BPF filesystem (created 0700; pins a crashed run left there
  // are replaced), so that an lbd started after this one dies can adopt them.
  Result<void> pin(const std::string& dir);
  // Removes the pins: a clean stop leaves nothing to adopt.
  void unpin(const std::string& dir);

  void set_policy(Policy policy);
  Policy policy() const;
  // Slots [0, count) are considered by the program.
  void set_slot_count(uint32_t count);

  SlotTable& table() { return table_; }
  // The loaded program, for reading the kernel's run-time statistics (bench/micro).
  int program_fd() const;
  // Summed over CPUs.
  SlotCounters counters(uint32_t slot) const;
  uint64_t fallbacks() const;

 private:
  Steering(std::unique_ptr<steer_bpf, void (*)(steer_bpf*)> skeleton, SlotTable table);
  uint64_t sum_stats(uint32_t index, SlotCounters* out) const;
  void remove_probe(uint32_t place, const net::Address& source);

  std::unique_ptr<steer_bpf, void (*)(steer_bpf*)> skeleton_;
  SlotTable table_;
  uint32_t groups_ = 0;
};

}  // namespace lbd
