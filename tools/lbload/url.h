// The server lbload loads: "http://127.0.0.1:8080/path" or "http://[::1]:8080/". Only literal
// addresses, so a run never waits on DNS and never hits a different address halfway through.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace lbd::load {

struct Target {
  sockaddr_storage address{};
  socklen_t address_length = 0;
  std::string host_header;  // "127.0.0.1:8080" or "[::1]:8080", as written in the URL
  std::string path;         // "/" when the URL has none
  uint16_t port = 0;

  int family() const { return address.ss_family; }
  const sockaddr* sockaddr_ptr() const { return reinterpret_cast<const sockaddr*>(&address); }
};

// Throws ConfigError ("bad URL '...': ...") for anything but http://ADDRESS[:PORT][/PATH].
// The port defaults to 80.
Target parse_url(std::string_view url);

}  // namespace lbd::load
