#include "supervisor/options.h"

#include <sched.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <iostream>
#include <set>

namespace lbd {

namespace {

int parse_int(std::string_view text, const std::string& what) {
  int value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value < 0) {
    throw ConfigError(what + ": '" + std::string(text) + "' is not a CPU number");
  }
  return value;
}

std::chrono::milliseconds seconds_to_ms(double seconds, const char* flag) {
  if (!(seconds > 0) || seconds > 86400) {
    throw ConfigError(std::string(flag) + ": expected seconds between 0 and 86400");
  }
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

}  // namespace

const char* mode_name(Mode mode) {
  switch (mode) {
    case Mode::kBpf: return "bpf";
    case Mode::kReuseport: return "reuseport";
    case Mode::kShared: return "shared";
    case Mode::kHandoff: return "handoff";
  }
  return "unknown";
}

std::vector<int> parse_cpu_list(const std::string& text) {
  std::set<int> cpus;
  std::string_view rest = text;
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    size_t dash = item.find('-');
    if (dash == std::string_view::npos) {
      cpus.insert(parse_int(item, "--cpus"));
    } else {
      int first = parse_int(item.substr(0, dash), "--cpus");
      int last = parse_int(item.substr(dash + 1), "--cpus");
      if (last < first) throw ConfigError("--cpus: range '" + std::string(item) + "' is backwards");
      for (int cpu = first; cpu <= last; cpu++) cpus.insert(cpu);
    }
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  if (cpus.empty()) throw ConfigError("--cpus: empty list");
  for (int cpu : cpus) {
    if (cpu >= CPU_SETSIZE) throw ConfigError("--cpus: CPU " + std::to_string(cpu) + " is out of range");
  }
  return {cpus.begin(), cpus.end()};
}

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
      if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
    }
  }
  if (cpus.empty()) cpus.push_back(0);
  return cpus;
}

ParsedCommandLine parse_command_line(int argc, char** argv) {
  CLI::App app{
      "lbd: runs one worker process per CPU behind a single port and steers every new connection "
      "to a worker in the kernel (eBPF on an SO_REUSEPORT group).\n"
      "Signals: TERM/INT stop gracefully, QUIT stops at once.",
      "lbd"};
  app.set_version_flag("--version", std::string("lbd ") + LBD_VERSION);

  std::string workers_text = "auto";
  std::vector<std::string> listen_text;
  std::string cpus_text;
  std::string policy_text = "least";
  std::string mode_text = "bpf";
  bool no_pin = false;
  double idle_timeout_s = 60;
  double shutdown_timeout_s = 10;
  unsigned max_restarts = 5;
  double restart_window_s = 60;
  unsigned max_connections = 16384;
  int backlog = 4096;
  unsigned stale_after_ms = 50;
  std::string log_level = "info";
  std::string control_path;
  std::string admin_text;

  app.add_option("-w,--workers", workers_text, "Worker processes: a number, or 'auto' for one per CPU")
      ->capture_default_str();
  app.add_option("-l,--listen", listen_text,
                 "Address to serve, ADDR:PORT or [IPv6]:PORT; repeat for more (default 0.0.0.0:8080)");
  app.add_option("--cpus", cpus_text, "CPUs for the workers, e.g. 0-3,6 (default: all allowed)");
  app.add_flag("--no-pin", no_pin, "Do not pin each worker to its CPU");
  app.add_option("-p,--policy", policy_text, "Steering policy: rr, least or hash")
      ->capture_default_str();
  app.add_option("-m,--mode", mode_text,
                 "How connections reach workers: bpf (lbd's steering), reuseport (kernel hash), "
                 "shared (one listener), handoff (supervisor accepts and passes fds)")
      ->capture_default_str();
  app.add_option("--idle-timeout", idle_timeout_s, "Close keep-alive connections idle this long (s)")
      ->capture_default_str();
  app.add_option("--shutdown-timeout", shutdown_timeout_s,
                 "On stop or drain, wait this long for in-flight requests before killing (s)")
      ->capture_default_str();
  app.add_option("--max-restarts", max_restarts,
                 "Stop restarting a worker that crashed this many times within --restart-window")
      ->capture_default_str();
  app.add_option("--restart-window", restart_window_s, "Window for --max-restarts (s)")
      ->capture_default_str();
  app.add_option("--max-connections", max_connections, "Open connections per worker")
      ->capture_default_str();
  app.add_option("--backlog", backlog, "Accept queue length of each listener")->capture_default_str();
  app.add_option("--stale-after", stale_after_ms,
                 "Policy least skips a worker whose loop has not run for this long (ms)")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")->capture_default_str();
  app.add_option("--control", control_path,
                 "Control socket for lbctl (default /run/lbd/lbd.sock; 'none' for no socket)");
  app.add_option("--admin", admin_text,
                 "Serve /metrics (Prometheus), /healthz and /readyz over HTTP on ADDR:PORT, e.g. "
                 "127.0.0.1:9180 (default: off; port 0 picks a free port, logged)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    app.exit(e);
    return {};
  } catch (const CLI::CallForVersion& e) {
    app.exit(e);
    return {};
  } catch (const CLI::ParseError& e) {
    throw ConfigError(e.what());
  }

  SupervisorOptions options;
  options.cpus = cpus_text.empty() ? allowed_cpus() : parse_cpu_list(cpus_text);
  if (workers_text == "auto") {
    options.workers = static_cast<unsigned>(options.cpus.size());
  } else {
    unsigned n = 0;
    auto [end, ec] = std::from_chars(workers_text.data(), workers_text.data() + workers_text.size(), n);
    if (ec != std::errc() || end != workers_text.data() + workers_text.size() || n == 0) {
      throw ConfigError("--workers: expected a number or 'auto', got '" + workers_text + "'");
    }
    options.workers = n;
  }
  if (options.workers > LBD_MAX_SLOTS) {
    throw ConfigError("--workers: at most " + std::to_string(LBD_MAX_SLOTS));
  }
  if (listen_text.empty()) listen_text.push_back("0.0.0.0:8080");
  if (listen_text.size() > LBD_MAX_GROUPS) {
    throw ConfigError("--listen: at most " + std::to_string(LBD_MAX_GROUPS) + " addresses");
  }
  for (const auto& text : listen_text) options.listen.push_back(net::Address::parse(text));
  options.pin = !no_pin;
  options.steering.policy = parse_policy(policy_text);
  if (mode_text == "bpf") {
    options.mode = Mode::kBpf;
  } else if (mode_text == "reuseport") {
    options.mode = Mode::kReuseport;
  } else if (mode_text == "shared") {
    options.mode = Mode::kShared;
  } else if (mode_text == "handoff") {
    options.mode = Mode::kHandoff;
  } else {
    throw ConfigError("--mode: unknown mode '" + mode_text + "' (expected bpf, reuseport, shared or handoff)");
  }
  options.idle_timeout = seconds_to_ms(idle_timeout_s, "--idle-timeout");
  options.shutdown_timeout = seconds_to_ms(shutdown_timeout_s, "--shutdown-timeout");
  options.max_restarts = max_restarts;
  options.restart_window = seconds_to_ms(restart_window_s, "--restart-window");
  if (max_connections < 16 || max_connections > 1'000'000) {
    throw ConfigError("--max-connections: expected 16 to 1000000");
  }
  options.max_connections = max_connections;
  if (backlog < 1) throw ConfigError("--backlog: expected a positive number");
  options.backlog = backlog;
  if (stale_after_ms < 20) throw ConfigError("--stale-after: at least 20 ms (idle workers beat every 10 ms)");
  options.steering.stale_after = std::chrono::milliseconds(stale_after_ms);
  static const std::set<std::string> levels = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  if (!levels.count(log_level)) throw ConfigError("--log-level: unknown level '" + log_level + "'");
  options.log_level = log_level;
  if (!control_path.empty()) {
    options.control_path = control_path == "none" ? std::string() : control_path;
    options.control_path_given = true;
  }
  if (!admin_text.empty()) {
    try {
      options.admin = net::Address::parse(admin_text);
    } catch (const ConfigError& e) {
      throw ConfigError(std::string("--admin: ") + e.what());
    }
  }
  return {std::move(options)};
}

}  // namespace lbd
