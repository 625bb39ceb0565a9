#include "worker/channel.h"

#include <string>

#include "common/message_text.h"
#include "net/fd_passing.h"

namespace lbd {

namespace {

Error malformed(const std::string& what) { return Error::from_errno(EPROTO, "malformed channel message: " + what); }

}  // namespace

std::string encode_channel_packet(const ChannelMessage& message) {
  ChannelRecord record = encode_channel_message(message);
  if (message.command == ChannelCommand::kMessage) record.value = static_cast<uint32_t>(message.text.size());
  std::string packet(reinterpret_cast<const char*>(&record), sizeof(record));
  if (message.command == ChannelCommand::kMessage) packet += message.text;
  return packet;
}

Result<ChannelMessage> decode_channel_message(const void* data, size_t size) {
  if (size < sizeof(ChannelRecord)) return malformed(std::to_string(size) + " bytes");
  ChannelRecord record;
  std::memcpy(&record, data, sizeof(record));
  if (record.magic != kChannelMagic) return malformed("bad magic");
  if (record.version != kChannelVersion) return malformed("version " + std::to_string(record.version));
  if (record.command < static_cast<uint16_t>(ChannelCommand::kReady) ||
      record.command > static_cast<uint16_t>(ChannelCommand::kMessage)) {
    return malformed("unknown command " + std::to_string(record.command));
  }
  ChannelMessage message{static_cast<ChannelCommand>(record.command), record.value, record.timeout_ms, {}};
  // Only a message has more than the record, exactly as much text as it says.
  const size_t text_size = message.command == ChannelCommand::kMessage ? record.value : 0;
  if (text_size > kMaxMessageText) return malformed("a message of " + std::to_string(text_size) + " bytes");
  if (size != sizeof(ChannelRecord) + text_size) return malformed(std::to_string(size) + " bytes");
  if (message.command == ChannelCommand::kDrain && message.value > static_cast<uint32_t>(DrainMode::kHandover)) {
    return malformed("unknown drain mode " + std::to_string(message.value));
  }
  if (message.command == ChannelCommand::kMessage) {
    message.text.assign(static_cast<const char*>(data) + sizeof(ChannelRecord), text_size);
    if (std::string problem = message_text_problem(message.text); !problem.empty()) return malformed(problem);
  }
  return message;
}

Result<void> send_channel_message(int socket, const ChannelMessage& message, int fd) {
  if (message.command == ChannelCommand::kMessage) return net::send_message(socket, encode_channel_packet(message), fd);
  const ChannelRecord record = encode_channel_message(message);  // no allocation for the frequent ones
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
