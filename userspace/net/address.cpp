#include "net/address.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace lbd::net {

namespace {

Error bad(std::string_view text, const std::string& why) {
  return Error::invalid("bad listen address '" + std::string(text) + "': " + why);
}

}  // namespace

Address Address::parse(std::string_view text) {
  auto address = try_parse(text);
  if (!address) throw ConfigError(address.error().message());
  return *address;
}

Result<Address> Address::try_parse(std::string_view text) {
  Address address;
  std::string host;
  std::string_view port_text;

  if (text.find(':') == std::string_view::npos) {
    host = "0.0.0.0";  // a bare port: every IPv4 interface
    port_text = text;
  } else if (text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return bad(text, "expected [IPv6]:PORT");
    }
    host = std::string(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (text.find(':') != colon) {
      return bad(text, "write IPv6 addresses in brackets, e.g. [::]:8080");
    }
    host = colon == 0 ? "0.0.0.0" : std::string(text.substr(0, colon));
    port_text = text.substr(colon + 1);
  }
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() || port > 65535) {
    return bad(text, "port must be 0-65535");
  }

  auto* v4 = reinterpret_cast<sockaddr_in*>(&address.storage_);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&address.storage_);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    address.length_ = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    address.length_ = sizeof(sockaddr_in6);
  } else {
    return bad(text, "'" + host + "' is not an IPv4 or IPv6 address");
  }
  return address;
}

Address Address::from_sockaddr(const sockaddr* sa, socklen_t len) {
  Address address;
  std::memcpy(&address.storage_, sa, std::min<size_t>(len, sizeof(address.storage_)));
  address.length_ = len;
  return address;
}

uint16_t Address::port() const {
  if (is_v6()) return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
  return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
}

Address Address::with_port(uint16_t port) const {
  Address copy = *this;
  if (is_v6()) {
    reinterpret_cast<sockaddr_in6*>(&copy.storage_)->sin6_port = htons(port);
  } else {
    reinterpret_cast<sockaddr_in*>(&copy.storage_)->sin_port = htons(port);
  }
  return copy;
}

std::string Address::to_string() const {
  char host[INET6_ADDRSTRLEN] = {};
  if (is_v6()) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, host,
              sizeof(host));
    return "[" + std::string(host) + "]:" + std::to_string(port());
  }
  inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, host, sizeof(host));
  return std::string(host) + ":" + std::to_string(port());
}

bool Address::is_loopback() const {
  if (family() == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&storage_);
    return (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
  }
  if (family() == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&storage_);
    if (IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr)) return true;
    return IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr) && v6->sin6_addr.s6_addr[12] == 127;
  }
  return false;
}

}  // namespace lbd::net
