// The load a program reports without knowing it (exec mode): every 10 ms the supervisor reads
// what the steering program sent to the program's slot (`steered`, counted at each SYN) and what
// still waits in its listener's accept queue (TCP_INFO), and publishes what it has taken
// (`accepted`) and whether it is making progress (its heartbeat) in the slot table. Pure
// arithmetic, unit-tested (tests/unit/program_load_test.cpp); program_child.cpp does the reading.
#pragma once

#include <algorithm>
#include <cstdint>

namespace lbd {

class ProgramLoadEstimate {
 public:
  struct Look {
    uint64_t accepted;  // connections it has taken off its queue, never less than before
    bool progress;      // its queue is empty, or it took something since the last look
  };

  // The first look, when the program starts serving in a slot whose `steered` counter already
  // holds what earlier programs there were sent: everything but its queue counts as taken.
  ProgramLoadEstimate(uint64_t steered, uint64_t queued)
      : accepted_(steered > queued ? steered - queued : 0), steered_last_look_(steered) {}

  // `steered` counts a connection at its SYN, and it reaches the accept queue only when its
  // handshake completes. So what was steered by now minus what is queued would count a
  // connection still in its handshake as taken: a stopped program would seem to take one, and
  // look live, and look less loaded than it is. Only what was steered by the previous look
  // (10 ms ago; on loopback and a LAN the handshake is done by then) counts.
  Look look(uint64_t steered, uint64_t queued) {
    const uint64_t taken = steered_last_look_ > queued ? steered_last_look_ - queued : 0;
    const uint64_t accepted = std::max(accepted_, taken);
    // The first look after it started serving counts as progress: nothing says otherwise yet.
    const bool progress = first_look_ || queued == 0 || accepted > accepted_;
    first_look_ = false;
    accepted_ = accepted;
    steered_last_look_ = steered;
    return {accepted, progress};
  }

  uint64_t accepted() const { return accepted_; }

 private:
  uint64_t accepted_;
  uint64_t steered_last_look_;
  bool first_look_ = true;
};

}  // namespace lbd
