// The messages between the supervisor and lbd's own workers, one typed record for every message
// (nginx's ngx_channel_t is the same idea). They travel over SOCK_SEQPACKET Unix sockets, one
// record per packet, optionally with one descriptor (net/fd_passing.h):
//
//   the status channel (one per worker)
//     worker -> supervisor   kReady(features)           it listens and serves; what it understands
//                            kOpenConnections(n)        draining: connections it still holds
//                            kExecFailed(errno)         the child could not execute the worker
//     supervisor -> worker   kServing                   a replacement owns its slot now
//                            kDrain(mode, timeout)      stop accepting and finish (worker.h); for
//                                                       kHandover, with the successor's inbox
//                            kMessage(text)             an operator's line (`lbctl send`), for
//                                                       the service's on_message (handler.h)
//   an fd inbox (--mode handoff, and the handover from a predecessor)
//     kConnection                                       with the connection's descriptor
//
// A record is fixed-size; kMessage alone carries its text right after it, the text's length in
// `value`. Every packet is checked whole on receipt (size, magic, version, command, and a
// message's length and text by the one rule of common/message_text.h): anything else is an error,
// never a guess.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "common/result.h"
#include "common/unique_fd.h"

namespace lbd {

// What a draining worker does with its idle keep-alive connections (worker.h).
enum class DrainMode : uint32_t { kStop = 0, kDrain = 1, kHandover = 2 };
constexpr const char* drain_mode_name(DrainMode mode) {
  switch (mode) {
    case DrainMode::kStop: return "stop";
    case DrainMode::kDrain: return "drain";
    case DrainMode::kHandover: return "handover";
  }
  return "unknown";
}

enum class ChannelCommand : uint16_t {
  kReady = 1,
  kOpenConnections = 2,
  kExecFailed = 3,
  kServing = 4,
  kDrain = 5,
  kConnection = 6,
  kMessage = 7,
};

// kReady's value: what the worker understands beyond the first version of the channel. A worker
// from an older lbd says 0; after an upgrade it may still serve, and the supervisor must not send
// it what it would drop.
inline constexpr uint32_t kWorkerTakesMessages = 1u << 0;  // kMessage

struct ChannelMessage {
  ChannelCommand command = ChannelCommand::kReady;
  // kReady: kWorker* feature bits; kOpenConnections: the count; kExecFailed: errno; kDrain: DrainMode; kMessage: set from
  // `text` when encoded (its length on the wire)
  uint32_t value = 0;
  uint64_t timeout_ms = 0;  // kDrain
  std::string text;         // kMessage: one line, common/message_text.h
};

// The bytes on the wire. Plain and fixed, so that a forked child can build one without
// allocating (launch.cpp reports a failed exec with it).
struct ChannelRecord {
  uint32_t magic;
  uint16_t version;
  uint16_t command;
  uint32_t value;
  uint32_t reserved;
  uint64_t timeout_ms;
};
static_assert(sizeof(ChannelRecord) == 24);

inline constexpr uint32_t kChannelMagic = 0x6c62642e;  // "lbd."
inline constexpr uint16_t kChannelVersion = 1;

constexpr ChannelRecord encode_channel_message(const ChannelMessage& message) noexcept {
  return ChannelRecord{kChannelMagic, kChannelVersion, static_cast<uint16_t>(message.command), message.value, 0,
                       message.timeout_ms};
}
// The whole packet: the record, then for kMessage its text.
std::string encode_channel_packet(const ChannelMessage& message);
Result<ChannelMessage> decode_channel_message(const void* data, size_t size);

// Sends one message, with a copy of `fd` if it is >= 0. A full non-blocking socket is an error
// whose code is std::errc::resource_unavailable_try_again.
Result<void> send_channel_message(int socket, const ChannelMessage& message, int fd = -1);

struct ReceivedMessage {
  ChannelMessage message;
  UniqueFd fd;       // the descriptor it carried, if any
  bool end = false;  // the peer closed its end; nothing else is set
};
// Receives one message; on a non-blocking socket, none waiting is the error above. A record that
// does not decode is an error (EPROTO) with what was wrong; its descriptor is closed.
Result<ReceivedMessage> receive_channel_message(int socket);

}  // namespace lbd
