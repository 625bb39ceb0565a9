// Ports for tests that must name one up front (a config file's `listen = "127.0.0.1:PORT"`)
// rather than let lbd bind port 0 and read the address back.
//
//   FreePorts ports;                       // one per test
//   const uint16_t web = ports.pick(), api = ports.pick();
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <random>
#include <set>
#include <string>

#include "net/listener.h"

namespace lbd::test {

class FreePorts {
 public:
  // A port of 127.0.0.1 nobody has: a random one below the kernel's range of ephemeral ports,
  // checked free, and not handed out before by this object. Not the kernel's own pick (bind to
  // port 0, then release it): that one could become a client's source port in another test
  // running beside this one before lbd binds it. Below the range, only an explicit bind takes a
  // port, and two tests choosing the same one at random is unlikely.
  uint16_t pick() {
    unsigned ephemeral_low = 32768, ephemeral_high = 60999;
    std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> ephemeral_low >> ephemeral_high;
    constexpr unsigned kLowest = 10000;
    EXPECT_GT(ephemeral_low, kLowest + 1000) << "no room below the ephemeral ports for test ports";
    std::uniform_int_distribution<unsigned> choose(kLowest, ephemeral_low - 1);
    for (int attempt = 0; attempt < 100; attempt++) {
      const auto port = static_cast<uint16_t>(choose(random_));
      if (handed_out_.count(port)) continue;
      auto probe = net::listen_tcp(net::Address::parse("127.0.0.1:" + std::to_string(port)),
                                   {.backlog = 1, .reuseport = false});
      if (!probe) continue;  // someone has it
      handed_out_.insert(port);
      return port;
    }
    ADD_FAILURE() << "no free port below " << ephemeral_low << " in 100 tries";
    return 0;
  }

 private:
  std::mt19937 random_{std::random_device{}()};
  std::set<uint16_t> handed_out_;
};

}  // namespace lbd::test
