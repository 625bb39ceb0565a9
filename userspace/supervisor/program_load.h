// The load a program reports without knowing it (exec mode): at each look the supervisor reads
// what the steering program sent to the program's slot (`steered`, counted at each SYN) and what
// still waits in its listener's accept queue (TCP_INFO), and publishes what it has taken
// (`accepted`) and whether it is making progress (its heartbeat) in the slot table. Pure
// arithmetic, unit-tested (tests/unit/program_load_test.cpp); program_child.cpp does the reading.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace lbd {

// How often the supervisor looks at the programs (docs/ARCHITECTURE.md, section 5).
inline constexpr std::chrono::milliseconds kLookInterval{10};

// The time to the next look. While anything moves (a connection steered since the last look, a
// queue, a program starting or retiring) every 10 ms. While every program is quiet a look only
// renews heartbeats, and it must come before the previous stamp is older than the stall bound
// (`stall_bound`, the shorter of --stale-after and --sticky-stale-after): half of it leaves the
// other half for a late wake-up (and since one look stamps every program, a late one makes them
// all stale together, which ranks none below another). At most 100 ms, so the load of the first
// connection after a quiet spell is counted soon. A program that stalls while quiet is skipped
// as soon as before: no look after a connection reached its queue stamps its heartbeat, so the
// last stamp is older than the connection, and the program counts as stalled at most the stall
// bound after the connection arrived (plus its handshake), whatever the interval.
inline std::chrono::milliseconds look_interval(bool every_program_quiet, std::chrono::milliseconds stall_bound) {
  if (!every_program_quiet) return kLookInterval;
  return std::clamp(stall_bound / 2, kLookInterval, std::chrono::milliseconds(100));
}

class ProgramLoadEstimate {
 public:
  struct Look {
    uint64_t accepted;  // connections it has taken off its queue, never less than before
    bool progress;      // its queue is empty, or it took something since the last look
    bool quiet;         // nothing steered to it since the last look, and nothing in its queue
  };

  // The first look, when the program starts serving in a slot whose `steered` counter already
  // holds what earlier programs there were sent: everything but its queue counts as taken.
  ProgramLoadEstimate(uint64_t steered, uint64_t queued)
      : accepted_(steered > queued ? steered - queued : 0), steered_last_look_(steered) {}

  // `steered` counts a connection at its SYN, and it reaches the accept queue only when its
  // handshake completes. So what was steered by now minus what is queued would count a
  // connection still in its handshake as taken: a stopped program would seem to take one, and
  // look live, and look less loaded than it is. Only what was steered by the previous look
  // (10 ms ago or more; on loopback and a LAN the handshake is done by then) counts.
  Look look(uint64_t steered, uint64_t queued) {
    const uint64_t taken = steered_last_look_ > queued ? steered_last_look_ - queued : 0;
    const uint64_t accepted = std::max(accepted_, taken);
    // The first look after it started serving counts as progress: nothing says otherwise yet.
    const bool progress = first_look_ || queued == 0 || accepted > accepted_;
    const bool quiet = steered == steered_last_look_ && queued == 0;
    first_look_ = false;
    accepted_ = accepted;
    steered_last_look_ = steered;
    return {accepted, progress, quiet};
  }

  uint64_t accepted() const { return accepted_; }

 private:
  uint64_t accepted_;
  uint64_t steered_last_look_;
  bool first_look_ = true;
};

}  // namespace lbd
