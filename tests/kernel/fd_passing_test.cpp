// fd passing between lbd's processes (net/fd_passing.h) with a sender that breaks the layout: a
// message with more descriptors than the layout has room for, or several in one, is refused and
// leaves no descriptor behind in the receiver; a well-formed one still passes.
#include <gtest/gtest.h>
#include <dirent.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "net/fd_passing.h"

namespace lbd::net {
namespace {

size_t open_fds() {
  size_t n = 0;
  DIR* dir = opendir("/proc/self/fd");
  while (dirent* entry = readdir(dir)) n += entry->d_name[0] != '.';
  closedir(dir);
  return n;
}

// Sends "x" with `count` copies of `fd` in one SCM_RIGHTS message, as a hostile peer could.
void send_with_fds(int sock, int fd, size_t count) {
  char text = 'x';
  iovec iov{&text, 1};
  std::vector<char> control(CMSG_SPACE(sizeof(int) * count));
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int) * count);
  for (size_t i = 0; i < count; i++) std::memcpy(CMSG_DATA(cmsg) + i * sizeof(int), &fd, sizeof(int));
  ASSERT_EQ(sendmsg(sock, &msg, 0), 1) << strerror(errno);
}

TEST(FdPassing, AMessageWithExtraDescriptorsIsRefusedAndLeavesNoneOpen) {
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd ours(pair[0]), theirs(pair[1]);
  UniqueFd passed(dup(0));
  const size_t before = open_fds();

  for (size_t count : {2u, 8u}) {
    SCOPED_TRACE(count);
    send_with_fds(theirs.get(), passed.get(), count);
    auto received = receive_message(ours.get());
    ASSERT_FALSE(received);
    EXPECT_EQ(received.error().code(), std::errc::protocol_error);
    EXPECT_EQ(open_fds(), before) << "a descriptor of the refused message stayed open";
  }

  // One descriptor, as the layout has it: received.
  ASSERT_TRUE(send_message(theirs.get(), "ok", passed.get()));
  auto received = receive_message(ours.get());
  ASSERT_TRUE(received) << received.error().message();
  EXPECT_EQ(received->text, "ok");
  EXPECT_TRUE(received->fd);
}

}  // namespace
}  // namespace lbd::net
