// lbload's command line, parsed and checked before anything runs. Every problem is a ConfigError
// with a one-line message; main() prints it as "lbload: ..." and exits 2.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "lbload/mix.h"
#include "lbload/url.h"

namespace lbd::load {

enum class ConnectionMode {
  kKeepAlive,    // requests back to back on long-lived connections
  kNew,          // --new-connection: connect, send, read the whole response, close (client closes)
  kConnectOnly,  // --connect-only: connect, send nothing, wait for the server to close
};
const char* connection_mode_name(ConnectionMode mode);  // "keep-alive", "new", "connect-only"

struct Options {
  std::string url;
  Target target;
  // Closed loop: this many connections, each sending its next request when the last is answered.
  // Open loop: the most connections in use at once.
  unsigned connections = 64;
  std::chrono::nanoseconds duration = std::chrono::seconds(10);
  uint64_t max_requests = 0;  // 0: bounded by the duration only
  unsigned threads = 1;
  ConnectionMode connection = ConnectionMode::kKeepAlive;
  // Open loop: requests per second in total, at fixed intended times; empty: closed loop.
  std::optional<double> rate;
  PathMix mix;
  std::chrono::milliseconds timeout{2000};
  unsigned hold = 0;
  std::chrono::milliseconds hold_interval{100};
  bool close_header = false;  // send "Connection: close"
  bool json = false;

  bool open_loop() const { return rate.has_value(); }
};

struct CommandLine {
  Options options;
  // Set when --help was asked for: print it and exit 0.
  std::optional<std::string> help;
};

// Throws ConfigError.
CommandLine parse_command_line(int argc, const char* const* argv);

// The exact bytes of a GET for `path` (Host from the URL; "Connection: close" with
// --close-header).
std::string build_request(const Options& options, const std::string& path);

}  // namespace lbd::load
