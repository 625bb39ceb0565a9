#include "net/fd_passing.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace lbd::net {

namespace {

constexpr size_t kMaxText = kMaxMessageBytes;

// Room for the text and one SCM_RIGHTS descriptor: the layout both sides use.
struct Envelope {
  char text[kMaxText];
  iovec iov{text, kMaxText};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};

  Envelope() {
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
  }
  Envelope(const Envelope&) = delete;
  Envelope& operator=(const Envelope&) = delete;
};

}  // namespace

Result<void> send_message(int unix_socket, std::string_view text, int fd) {
  if (text.empty() || text.size() > kMaxText) return Error::from_errno(EMSGSIZE, "send message");
  Envelope e;
  std::memcpy(e.text, text.data(), text.size());
  e.iov.iov_len = text.size();
  if (fd >= 0) {
    cmsghdr* cmsg = CMSG_FIRSTHDR(&e.msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
  } else {
    e.msg.msg_control = nullptr;
    e.msg.msg_controllen = 0;
  }
  ssize_t n = sendmsg(unix_socket, &e.msg, MSG_NOSIGNAL);
  if (n < 0) return Error::from_errno("send message");
  if (static_cast<size_t>(n) != text.size()) return Error::from_errno(EMSGSIZE, "send message");
  return {};
}

size_t close_passed_fds(const msghdr& message) {
  size_t closed = 0;
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(&message); cmsg; cmsg = CMSG_NXTHDR(const_cast<msghdr*>(&message), cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++) {
      int fd = -1;
      std::memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
      if (fd >= 0) close(fd);
      closed++;
    }
  }
  return closed;
}

Result<Message> receive_message(int unix_socket) {
  Envelope e;
  ssize_t n = recvmsg(unix_socket, &e.msg, MSG_CMSG_CLOEXEC);
  if (n < 0) return Error::from_errno("receive message");
  // What does not fit is lost (text) or was never installed (descriptors past the buffer): a
  // message cut short is not acted on, and what did arrive with it is closed.
  size_t descriptors = 0;
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(&e.msg); cmsg; cmsg = CMSG_NXTHDR(&e.msg, cmsg)) {
    if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
      descriptors += (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    }
  }
  if ((e.msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || descriptors > 1) {
    close_passed_fds(e.msg);
    return Error::from_errno(EPROTO, "receive message: cut short or with more than one descriptor; dropped");
  }
  Message message;
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(&e.msg); cmsg; cmsg = CMSG_NXTHDR(&e.msg, cmsg)) {
    if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
      int fd = -1;
      std::memcpy(&fd, CMSG_DATA(cmsg), sizeof(int));
      message.fd.reset(fd);
    }
  }
  if (n == 0 && !message.fd) {
    message.end = true;  // SOCK_SEQPACKET: a zero-length read is the peer's close
    return message;
  }
  message.text.assign(e.text, static_cast<size_t>(n));
  return message;
}

}  // namespace lbd::net
