#include "lbload/options.h"

#include <CLI/CLI.hpp>
#include <cmath>

#include "common/result.h"

namespace lbd::load {

namespace {

// Beyond these the run could not be set up anyway (file table, memory), so say so up front.
constexpr unsigned kMaxConnections = 1'000'000;
constexpr unsigned kMaxThreads = 1024;

}  // namespace

const char* connection_mode_name(ConnectionMode mode) {
  switch (mode) {
    case ConnectionMode::kKeepAlive: return "keep-alive";
    case ConnectionMode::kNew: return "new";
    case ConnectionMode::kConnectOnly: return "connect-only";
  }
  return "?";
}

CommandLine parse_command_line(int argc, const char* const* argv) {
  CLI::App app{"lbload: an HTTP/1.1 load generator on io_uring (closed or open loop)", "lbload"};
  CommandLine result;
  Options& o = result.options;
  double duration_s = 10;
  double rate = 0;
  uint64_t timeout_ms = 2000;
  uint64_t hold_interval_ms = 100;
  std::string mix;
  bool new_connection = false;
  bool connect_only = false;

  app.add_option("URL", o.url, "http://HOST:PORT/PATH (IPv4, or [IPv6]); PATH is the default path")->required();
  app.add_option("-c,--connections", o.connections,
                 "Closed loop: concurrent connections. Open loop: most connections in use")
      ->capture_default_str();
  app.add_option("-d,--duration", duration_s, "Seconds to run (fractions allowed)")->capture_default_str();
  app.add_option("-n,--requests", o.max_requests, "Stop after this many requests (0: no limit)")
      ->capture_default_str();
  app.add_option("-t,--threads", o.threads, "Threads, each with its own ring and share of the connections")
      ->capture_default_str();
  auto* new_flag = app.add_flag("--new-connection", new_connection,
                                "One request per connection; the client closes it after the response");
  app.add_flag("--connect-only", connect_only,
               "Connect, send nothing, wait for the server to close (EOF or reset is success)")
      ->excludes(new_flag);
  auto* rate_option = app.add_option(
      "--rate", rate, "Open loop: requests per second in total, latency from the intended send time");
  app.add_option("--mix", mix, "Weighted paths, e.g. \"95:/,5:/work?us=5000\"");
  app.add_option("--timeout", timeout_ms, "Per-request timeout in ms: connect, send and the whole response")
      ->capture_default_str();
  app.add_option("--hold", o.hold, "Extra keep-alive connections held open all run, one request each per interval");
  app.add_option("--hold-interval", hold_interval_ms, "Milliseconds between a held connection's requests")
      ->capture_default_str();
  app.add_flag("--close-header", o.close_header, "Send \"Connection: close\" with every request");
  app.add_flag("--json", o.json, "Print one JSON object instead of the table");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    result.help = app.help();
    return result;
  } catch (const CLI::ParseError& e) {
    throw ConfigError(e.what());
  }

  o.target = parse_url(o.url);
  o.mix = mix.empty() ? PathMix(o.target.path) : PathMix::parse(mix);
  if (connect_only) o.connection = ConnectionMode::kConnectOnly;
  if (new_connection) o.connection = ConnectionMode::kNew;

  if (o.connections < 1 || o.connections > kMaxConnections) {
    throw ConfigError("--connections must be 1-" + std::to_string(kMaxConnections));
  }
  if (!std::isfinite(duration_s) || duration_s <= 0 || duration_s > 1e6) {
    throw ConfigError("--duration must be a positive number of seconds");
  }
  o.duration = std::chrono::nanoseconds(static_cast<int64_t>(duration_s * 1e9));
  if (o.threads < 1 || o.threads > kMaxThreads) {
    throw ConfigError("--threads must be 1-" + std::to_string(kMaxThreads));
  }
  if (o.threads > o.connections) {
    throw ConfigError("--threads (" + std::to_string(o.threads) + ") is more than --connections (" +
                      std::to_string(o.connections) + "): each thread needs a connection");
  }
  if (rate_option->count() > 0) {
    if (!std::isfinite(rate) || rate <= 0) throw ConfigError("--rate must be a positive number of requests per second");
    o.rate = rate;
  }
  if (timeout_ms < 1 || timeout_ms > 3'600'000) throw ConfigError("--timeout must be 1-3600000 ms");
  o.timeout = std::chrono::milliseconds(timeout_ms);
  if (hold_interval_ms < 1 || hold_interval_ms > 3'600'000) {
    throw ConfigError("--hold-interval must be 1-3600000 ms");
  }
  o.hold_interval = std::chrono::milliseconds(hold_interval_ms);
  if (o.hold > kMaxConnections) throw ConfigError("--hold must be at most " + std::to_string(kMaxConnections));
  if (o.close_header && o.connection == ConnectionMode::kConnectOnly) {
    throw ConfigError("--close-header has nothing to go on: --connect-only sends no request");
  }
  if (!mix.empty() && o.connection == ConnectionMode::kConnectOnly) {
    throw ConfigError("--mix has nothing to choose: --connect-only sends no request");
  }
  return result;
}

std::string build_request(const Options& options, const std::string& path) {
  std::string request = "GET " + path + " HTTP/1.1\r\nHost: " + options.target.host_header + "\r\n";
  if (options.close_header) request += "Connection: close\r\n";
  request += "\r\n";
  return request;
}

}  // namespace lbd::load
