// Listen addresses: "0.0.0.0:8080", "127.0.0.1:0", "[::]:8080", "[::1]:9000", ":8080" (all IPv4
// interfaces) or a bare port "8080". Port 0 asks the kernel for a free port; the listener then
// reports the port it got.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace lbd::net {

class Address {
 public:
  // The error names the bad text and what is wrong with it.
  static Result<Address> try_parse(std::string_view text);
  // The same, throwing ConfigError: for reading flags at start-up, and for tests.
  static Address parse(std::string_view text);
  static Address from_sockaddr(const sockaddr* sa, socklen_t len);

  int family() const { return storage_.ss_family; }
  uint16_t port() const;
  Address with_port(uint16_t port) const;
  bool is_v6() const { return family() == AF_INET6; }
  // 127.0.0.0/8, ::1, or ::ffff:127.x.y.z: reachable from this machine only.
  bool is_loopback() const;

  const sockaddr* sockaddr_ptr() const { return reinterpret_cast<const sockaddr*>(&storage_); }
  socklen_t length() const { return length_; }

  // "127.0.0.1:8080" or "[::1]:8080".
  std::string to_string() const;

 private:
  sockaddr_storage storage_{};
  socklen_t length_ = 0;
};

}  // namespace lbd::net
