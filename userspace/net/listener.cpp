#include "net/listener.h"

#include <netinet/tcp.h>
#include <sys/socket.h>

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>

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

namespace {

// The listen address with a wildcard host replaced by its family's loopback, and port 0.
Address probe_host(const Address& listen_address) {
  sockaddr_storage storage{};
  std::memcpy(&storage, listen_address.sockaddr_ptr(), listen_address.length());
  if (listen_address.is_v6()) {
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
    if (IN6_IS_ADDR_UNSPECIFIED(&v6->sin6_addr)) v6->sin6_addr = in6addr_loopback;
  } else {
    auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
    if (v4->sin_addr.s_addr == htonl(INADDR_ANY)) v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  }
  return Address::from_sockaddr(reinterpret_cast<const sockaddr*>(&storage), listen_address.length());
}

}  // namespace

Result<ProbeConnection> bind_probe(const Address& listen_address) {
  const Address host = probe_host(listen_address);
  UniqueFd fd(socket(host.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return Error::from_errno("probe socket");
  const Address source = host.with_port(0);
  if (bind(fd.get(), source.sockaddr_ptr(), source.length()) != 0) {
    return Error::from_errno("bind probe to " + source.to_string());
  }
  auto bound = local_address(fd.get());
  if (!bound) return bound.error();
  return ProbeConnection{std::move(fd), *bound, host.with_port(listen_address.port())};
}

Result<void> connect_probe(const ProbeConnection& probe) {
  if (connect(probe.fd.get(), probe.target.sockaddr_ptr(), probe.target.length()) != 0 && errno != EINPROGRESS) {
    return Error::from_errno("connect probe to " + probe.target.to_string());
  }
  return {};
}

Result<int> tcp_state(int fd) {
  tcp_info info{};
  socklen_t len = sizeof(info);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return Error::from_errno("TCP_INFO");
  return static_cast<int>(info.tcpi_state);
}

}  // namespace lbd::net
