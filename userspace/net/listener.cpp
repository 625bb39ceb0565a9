#include "net/listener.h"

#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>

namespace lbd::net {

namespace {

Result<void> set_int_option(int fd, int level, int name, int value, const char* what) {
  if (setsockopt(fd, level, name, &value, sizeof(value)) != 0) return Error::from_errno(what);
  return {};
}

}  // namespace

Result<UniqueFd> listen_tcp(const Address& address, const ListenerOptions& options) {
  const std::string where = address.to_string();
  int type = SOCK_STREAM | SOCK_CLOEXEC | (options.nonblocking ? SOCK_NONBLOCK : 0);
  UniqueFd fd(socket(address.family(), type, IPPROTO_TCP));
  if (!fd) return Error::from_errno("socket for " + where);

  LBD_TRY(set_int_option(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR"));
  if (options.reuseport) {
    LBD_TRY(set_int_option(fd.get(), SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT"));
  }
  LBD_TRY(set_int_option(fd.get(), IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY"));
  if (address.is_v6()) {
    LBD_TRY(set_int_option(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY"));
  }
  if (bind(fd.get(), address.sockaddr_ptr(), address.length()) != 0) {
    return Error::from_errno("cannot listen on " + where);
  }
  if (listen(fd.get(), options.backlog) != 0) return Error::from_errno("listen on " + where);
  return fd;
}

Result<Address> local_address(int fd) {
  sockaddr_storage storage{};
  socklen_t len = sizeof(storage);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &len) != 0) {
    return Error::from_errno("getsockname");
  }
  return Address::from_sockaddr(reinterpret_cast<sockaddr*>(&storage), len);
}

Result<ReservedAddress> reserve_port(const Address& address) {
  UniqueFd probe(socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP));
  if (!probe) return Error::from_errno("socket");
  // SO_REUSEADDR so that connections lingering in TIME_WAIT from a previous run do not count.
  LBD_TRY(set_int_option(probe.get(), SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR"));
  if (address.is_v6()) {
    LBD_TRY(set_int_option(probe.get(), IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY"));
  }
  if (bind(probe.get(), address.sockaddr_ptr(), address.length()) != 0) {
    return Error::from_errno("cannot listen on " + address.to_string());
  }
  // Only now, so that the bind above conflicts with any socket already there.
  LBD_TRY(set_int_option(probe.get(), SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT"));
  auto bound = local_address(probe.get());
  if (!bound) return bound.error();
  return ReservedAddress{*bound, std::move(probe)};
}

Result<AcceptQueue> accept_queue(int listener_fd) {
  tcp_info info{};
  socklen_t len = sizeof(info);
  if (getsockopt(listener_fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) {
    return Error::from_errno("TCP_INFO on listener");
  }
  return AcceptQueue{info.tcpi_unacked, info.tcpi_sacked};
}

Result<void> stop_listening(int listener_fd) {
  // shutdown(SHUT_RD) on a listener runs the same kernel path as its last close
  // (inet_csk_listen_stop): the socket leaves the group and its queue migrates.
  if (shutdown(listener_fd, SHUT_RD) != 0 && errno != ENOTCONN) {
    return Error::from_errno("shutdown listener");
  }
  return {};
}

}  // namespace lbd::net
