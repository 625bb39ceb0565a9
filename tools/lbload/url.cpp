#include "lbload/url.h"

#include <arpa/inet.h>

#include <charconv>

#include "common/result.h"
#include "lbload/mix.h"

namespace lbd::load {

Target parse_url(std::string_view url) {
  auto bad = [&](const std::string& why) { return ConfigError("bad URL '" + std::string(url) + "': " + why); };
  constexpr std::string_view kScheme = "http://";
  if (url.substr(0, kScheme.size()) != kScheme) throw bad("expected http://HOST:PORT/PATH");
  std::string_view rest = url.substr(kScheme.size());

  const size_t slash = rest.find('/');
  const std::string_view authority = rest.substr(0, slash);
  Target target;
  target.path = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (!is_valid_request_path(target.path)) throw bad("the path may not contain spaces or control characters");

  std::string host;
  std::string_view port_text;
  bool bracketed = false;
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) throw bad("missing ']' after the IPv6 address");
    host = std::string(authority.substr(1, close - 1));
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty() && after.front() != ':') throw bad("expected ':PORT' after ']'");
    port_text = after.empty() ? std::string_view() : after.substr(1);
    if (!after.empty() && port_text.empty()) throw bad("empty port");
    bracketed = true;
  } else {
    const size_t colon = authority.find(':');
    if (colon != std::string_view::npos && authority.find(':', colon + 1) != std::string_view::npos) {
      throw bad("write IPv6 addresses in brackets, e.g. http://[::1]:8080/");
    }
    host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) throw bad("empty port");
    }
  }
  if (host.empty()) throw bad("no host");

  unsigned port = 80;
  if (!port_text.empty()) {
    auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc() || end != port_text.data() + port_text.size() || port == 0 || port > 65535) {
      throw bad("the port must be 1-65535");
    }
  }
  target.port = static_cast<uint16_t>(port);

  auto* v4 = reinterpret_cast<sockaddr_in*>(&target.address);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&target.address);
  if (!bracketed && inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(target.port);
    target.address_length = sizeof(sockaddr_in);
  } else if (bracketed && inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(target.port);
    target.address_length = sizeof(sockaddr_in6);
  } else {
    throw bad("the host must be an IPv4 address or a bracketed IPv6 address (no names: lbload does not resolve)");
  }
  target.host_header = std::string(authority);
  return target;
}

}  // namespace lbd::load
