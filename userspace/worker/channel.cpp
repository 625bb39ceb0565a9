#include "worker/channel.h"

#include <string>

#include "net/fd_passing.h"

namespace lbd {

namespace {

Error malformed(const std::string& what) { return Error::from_errno(EPROTO, "malformed channel message: " + what); }

}  // namespace

Result<ChannelMessage> decode_channel_message(const void* data, size_t size) {
  if (size != sizeof(ChannelRecord)) return malformed(std::to_string(size) + " bytes");
  ChannelRecord record;
  std::memcpy(&record, data, sizeof(record));
  if (record.magic != kChannelMagic) return malformed("bad magic");
  if (record.version != kChannelVersion) return malformed("version " + std::to_string(record.version));
  if (record.command < static_cast<uint16_t>(ChannelCommand::kReady) ||
      record.command > static_cast<uint16_t>(ChannelCommand::kConnection)) {
    return malformed("unknown command " + std::to_string(record.command));
  }
  ChannelMessage message{static_cast<ChannelCommand>(record.command), record.value, record.timeout_ms};
  if (message.command == ChannelCommand::kDrain && message.value > static_cast<uint32_t>(DrainMode::kHandover)) {
    return malformed("unknown drain mode " + std::to_string(message.value));
  }
  return message;
}

Result<void> send_channel_message(int socket, const ChannelMessage& message, int fd) {
  const ChannelRecord record = encode_channel_message(message);
  return net::send_message(socket, std::string_view(reinterpret_cast<const char*>(&record), sizeof(record)), fd);
}

Result<ReceivedMessage> receive_channel_message(int socket) {
  auto received = net::receive_message(socket);
  if (!received) return received.error();
  ReceivedMessage out;
  if (received->end) {
    out.end = true;
    return out;
  }
  auto message = decode_channel_message(received->text.data(), received->text.size());
  if (!message) return message.error();  // the UniqueFd closes any descriptor it carried
  out.message = *message;
  out.fd = std::move(received->fd);
  return out;
}

}  // namespace lbd
