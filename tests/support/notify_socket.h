// The service manager's side of systemd's notify protocol, for tests of lbd's READY=1,
// STOPPING=1 and MAINPID= (lifecycle_test, upgrade_test).
#pragma once

#include <gtest/gtest.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "support/deadline.h"
#include "support/lbd_process.h"

namespace lbd::test {

// The service manager's end of NOTIFY_SOCKET, as systemd binds it for a Type=notify unit: a
// datagram socket (here in the test's temp dir). Each message comes with its sender's pid
// (SO_PASSCRED): under systemd's default NotifyAccess=main only the main process is believed.
class NotifySocket {
 public:
  struct Message {
    std::string text;
    pid_t sender = 0;
  };

  explicit NotifySocket(std::string path) : path_(std::move(path)) {
    fd_.reset(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    int one = 1;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (!fd_ || setsockopt(fd_.get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) != 0 ||
        path_.size() >= sizeof(addr.sun_path)) {
      ADD_FAILURE() << "cannot make the notify socket: " << strerror(errno);
      return;
    }
    memcpy(addr.sun_path, path_.data(), path_.size());
    if (bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ADD_FAILURE() << "bind " << path_ << ": " << strerror(errno);
    }
  }

  const std::string& path() const { return path_; }

  // The next message, or empty at the deadline.
  std::optional<Message> next(Deadline deadline) {
    while (true) {
      char data[4096];
      iovec iov{data, sizeof(data)};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      ssize_t n = recvmsg(fd_.get(), &msg, MSG_CMSG_CLOEXEC);
      if (n >= 0) {
        Message m{std::string(data, static_cast<size_t>(n)), 0};
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
          if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
            ucred cred{};
            memcpy(&cred, CMSG_DATA(c), sizeof(cred));
            m.sender = cred.pid;
          }
        }
        return m;
      }
      if (errno != EAGAIN && errno != EINTR) {
        ADD_FAILURE() << "recvmsg on the notify socket: " << strerror(errno);
        return std::nullopt;
      }
      if (Clock::now() >= deadline) return std::nullopt;
      pollfd p{fd_.get(), POLLIN, 0};
      poll(&p, 1, std::max(1, remaining_ms(deadline)));
    }
  }

  // Nothing has been sent (or everything sent has been read).
  bool empty() {
    char byte;
    return recv(fd_.get(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) < 0 && errno == EAGAIN;
  }

 private:
  std::string path_;
  UniqueFd fd_;
};

// lbd ARGS with NOTIFY_SOCKET set, the way systemd starts it (env(1) executes lbd in its own
// place, so the pid is lbd's).
inline LbdProcess::Options with_notify_socket(const std::string& socket, const std::vector<std::string>& args,
                                              const std::string& binary = LBD_BINARY_PATH) {
  std::vector<std::string> env_args = {"NOTIFY_SOCKET=" + socket, binary};
  env_args.insert(env_args.end(), args.begin(), args.end());
  return {"/usr/bin/env", env_args, {}};
}

}  // namespace lbd::test
