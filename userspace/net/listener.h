// TCP listeners. lbd (the supervisor) creates every listener itself, before it forks anything:
// sockets join one SO_REUSEPORT group only if the same effective uid created them.
#pragma once

#include <cstdint>

#include "common/result.h"
#include "common/unique_fd.h"
#include "net/address.h"

namespace lbd::net {

struct ListenerOptions {
  int backlog = 4096;
  bool reuseport = true;  // join the address's SO_REUSEPORT group
  bool nonblocking = false;
};

// A listening TCP socket bound to `address`: SO_REUSEADDR, optionally SO_REUSEPORT, TCP_NODELAY
// (accepted sockets inherit it, so no per-connection setsockopt), IPV6_V6ONLY for IPv6 so that
// "[::]:P" and "0.0.0.0:P" are two separate groups. Always close-on-exec.
Result<UniqueFd> listen_tcp(const Address& address, const ListenerOptions& options);
// A listener of the supervisor's own (the admin endpoint, the agent): non-blocking, on a port of
// its own that nobody may share.
inline Result<UniqueFd> listen_exclusive(const Address& address, int backlog) {
  return listen_tcp(address, {.backlog = backlog, .reuseport = false, .nonblocking = true});
}

// The address a socket is bound to (the real port after binding port 0).
Result<Address> local_address(int fd);

// Checks that no socket is bound to `address` and returns it with a concrete port: port 0 is
// replaced by a free port the kernel picks. Fails with EADDRINUSE if the address is taken; a
// reuseport bind alone would not fail, and a second lbd under the same uid would silently join
// the first one's group and split its traffic.
//
// Every listener then binds that explicit port. (A socket bound to port 0 forgets its port when
// it stops listening, before the kernel migrates its queue, and the steering program would no
// longer recognize its group.)
//
// The probe stays bound (with SO_REUSEPORT, so our own listeners can join it) until `hold` is
// closed: until then nobody else can take the port.
struct ReservedAddress {
  Address address;
  UniqueFd hold;
};
Result<ReservedAddress> reserve_port(const Address& address);

// The accept queue of a listening socket, from TCP_INFO: queued connections in tcpi_unacked and
// the backlog limit in tcpi_sacked (the kernel reuses those fields for listeners).
struct AcceptQueue {
  uint32_t queued = 0;
  uint32_t limit = 0;
};
Result<AcceptQueue> accept_queue(int listener_fd);

// Stops a listener without closing the fd: the kernel migrates its queued and half-open
// connections to another listener of the group (the steering program picks which). Works on
// any copy of the socket, so the supervisor can drain a worker that is stopped or stuck.
Result<void> stop_listening(int listener_fd);

// lbd's own connection to one of its listeners (exec mode's readiness probe). Bound first, to a
// source whose port the kernel picks, so that the steering program can be told which connection
// it is before its SYN goes out; then connected without waiting. A wildcard listen address is
// reached on its family's loopback; a specific one is local (lbd listens on it), so the source is
// that address itself and the probe never leaves the machine.
struct ProbeConnection {
  UniqueFd fd;
  Address source;
  Address target;
};
Result<ProbeConnection> bind_probe(const Address& listen_address);
Result<void> connect_probe(const ProbeConnection& probe);

// A connection's TCP state (TCP_INFO tcpi_state): TCP_SYN_SENT, TCP_ESTABLISHED, TCP_CLOSE, ...
Result<int> tcp_state(int fd);

}  // namespace lbd::net
