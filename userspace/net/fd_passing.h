// Short messages between lbd's processes over SOCK_SEQPACKET Unix sockets, optionally carrying
// one file descriptor (SCM_RIGHTS). Used for
//   - the status channel: a worker says "READY=1"; the supervisor says "DRAIN ..." and may pass
//     the socket on which to hand idle connections to the worker's successor;
//   - fd inboxes: connections passed to a worker (--mode handoff, or idle keep-alive
//     connections handed over by the worker it replaces during a reload);
//   - an operator's message to a worker (`lbctl send`): a header and up to 4 KiB of text.
#pragma once

#include <sys/socket.h>

#include <string>
#include <string_view>

#include "common/result.h"
#include "common/unique_fd.h"

namespace lbd::net {

// The longest message either way: a 4 KiB line of text and a header, with room to spare. Both
// sides use it, so a message that fits when sent is never cut short when received.
inline constexpr size_t kMaxMessageBytes = 4608;

struct Message {
  std::string text;
  UniqueFd fd;       // the descriptor it carried, if any
  bool end = false;  // the peer closed its end; nothing else is set
};

// Sends `text` (at most kMaxMessageBytes, not empty) and, if `fd` >= 0, a copy of `fd`. On a
// non-blocking socket a full buffer is an error whose code is
// std::errc::resource_unavailable_try_again.
Result<void> send_message(int unix_socket, std::string_view text, int fd = -1);

// Receives one message. On a non-blocking socket, no message is the error above. A message that
// came cut short (MSG_TRUNC, MSG_CTRUNC) or with more than one descriptor is an error
// (std::errc::protocol_error), and every descriptor it carried is closed.
Result<Message> receive_message(int unix_socket);

// Closes every descriptor the kernel installed for SCM_RIGHTS in a received message: a socket
// that expects none (a notify socket) must not let a sender fill the receiver's fd table.
// Returns how many there were.
size_t close_passed_fds(const msghdr& message);

}  // namespace lbd::net
