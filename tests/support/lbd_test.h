// The fixture most integration tests share: start lbd (or a service embedding it) with some
// flags and wait until it says it is serving.
//
//   TEST_F(Crash, ...) {
//     ASSERT_NO_FATAL_FAILURE(start(lbd_flags("reuseport", 2)));
//     fetch(address(), http_get("/"), after(2s));
//   }
#pragma once

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "support/http_client.h"
#include "support/lbd_process.h"

namespace lbd::test {

// --mode MODE --workers N --listen 127.0.0.1:0, then `extra`.
inline std::vector<std::string> lbd_flags(const std::string& mode, unsigned workers,
                                          std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--mode", mode, "--workers", std::to_string(workers),
                                   "--listen", "127.0.0.1:0"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// Log lines that mean something went wrong: a worker died, or lbd logged an error.
inline constexpr char kTroubleInLog[] = R"(crashed|failed to start| (error|critical) +\[)";

class LbdTest : public ::testing::Test {
 protected:
  // Starts the binary and waits for its ready line; a fatal failure if it does not come.
  void start(std::vector<std::string> args, std::string binary = LBD_BINARY_PATH) {
    lbd_.emplace(LbdProcess::Options{std::move(binary), std::move(args), {}});
    auto ready = lbd_->wait_ready(after(10s));
    ASSERT_TRUE(ready) << "no ready line within 10 s";
    ready_ = *ready;
  }

  LbdProcess& lbd() { return *lbd_; }
  const net::Address& address() const { return ready_.address(); }

  std::optional<LbdProcess> lbd_;
  Ready ready_;
};

// Root tests begin with this: without root they skip, saying what they need root for.
#define LBD_REQUIRE_ROOT(why)                          \
  do {                                                 \
    if (geteuid() != 0) GTEST_SKIP() << "needs root: " << why; \
  } while (0)

}  // namespace lbd::test
