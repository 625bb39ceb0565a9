// The encoding of io_uring `user_data` in a worker. Never a raw fd: fd numbers and fixed-file
// slots are reused before late completions arrive, so every request on a connection carries the
// connection's generation, and a completion whose generation no longer matches is stale.
//
//   bits 63..56  operation (Op)
//   bits 55..32  generation of the connection (24 bits, wraps)
//   bits 31..0   index: the connection's fixed-file slot, or the listener / install entry
#pragma once

#include <cstdint>

namespace lbd {

enum class Op : uint8_t {
  kAccept = 1,    // multishot accept on listener `index`
  kRecv,          // multishot recv on connection `index`
  kSend,          // send on connection `index`
  kClose,         // close of connection `index`'s fixed file
  kTimer,         // a deferred response's timer on connection `index`
  kCancel,        // cancellation of another request; completion ignored
  kShutdown,      // shutdown(SHUT_WR) before a lingering close; completion ignored
  kSignal,        // read on the signalfd
  kInboxPoll,     // POLLIN on fd inbox `index` (handoff from the supervisor, or handover)
  kInstall,       // a received fd being installed as fixed file; `index` = install entry
  kStatusPoll,    // POLLIN on the status channel: a command from the supervisor
  kExport,        // connection `index`'s fixed file installed as a regular fd, to hand over
  kHandoverWritable,  // POLLOUT on the successor's inbox: more handovers fit
};

struct UserData {
  Op op;
  uint32_t generation;
  uint32_t index;
};

inline constexpr uint32_t kGenerationMask = 0xFFFFFF;

constexpr uint64_t pack_user_data(Op op, uint32_t index, uint32_t generation) {
  return static_cast<uint64_t>(op) << 56 |
         static_cast<uint64_t>(generation & kGenerationMask) << 32 | index;
}

constexpr UserData unpack_user_data(uint64_t data) {
  return UserData{static_cast<Op>(data >> 56), static_cast<uint32_t>(data >> 32) & kGenerationMask,
                  static_cast<uint32_t>(data)};
}

}  // namespace lbd
