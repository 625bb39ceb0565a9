#include "net/fd_passing.h"

#include <sys/socket.h>

#include <cstring>

namespace lbd::net {

namespace {

// One byte of payload and room for one SCM_RIGHTS descriptor: the message both sides use.
struct FdMessage {
  char byte = 'c';
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};

  FdMessage() {
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
  }
  FdMessage(const FdMessage&) = delete;
  FdMessage& operator=(const FdMessage&) = delete;
};

}  // namespace

Result<void> send_fd(int unix_socket, int fd) {
  FdMessage m;
  cmsghdr* cmsg = CMSG_FIRSTHDR(&m.msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
  if (sendmsg(unix_socket, &m.msg, MSG_NOSIGNAL) != 1) return Error::from_errno("send fd");
  return {};
}

Result<UniqueFd> receive_fd(int unix_socket) {
  FdMessage m;
  ssize_t n = recvmsg(unix_socket, &m.msg, MSG_CMSG_CLOEXEC);
  if (n < 0) return Error::from_errno("receive fd");
  if (n == 0) return UniqueFd();
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(&m.msg); cmsg; cmsg = CMSG_NXTHDR(&m.msg, cmsg)) {
    if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
      int fd = -1;
      std::memcpy(&fd, CMSG_DATA(cmsg), sizeof(int));
      return UniqueFd(fd);
    }
  }
  return Error::from_errno(EPROTO, "receive fd: message carried no descriptor");
}

}  // namespace lbd::net
