#include "config/options.h"

#include <sched.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <cmath>
#include <limits>
#include <iostream>
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <set>

#include "common/app_name.h"
#include "config/values.h"

namespace lbd {

namespace {

// A shared value parser's verdict on a flag: the value, or a ConfigError naming the flag.
template <class T>
T flag_value(Result<T> parsed, const std::string& flag) {
  if (!parsed) throw ConfigError(flag + ": " + parsed.error().message());
  return std::move(*parsed);
}

std::chrono::milliseconds seconds_to_ms(double seconds, const char* flag) {
  if (!(seconds > 0) || seconds > 86400) {
    throw ConfigError(std::string(flag) + ": expected seconds, more than 0 and at most 86400");
  }
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

}  // namespace

namespace {

// The flags `lbd` and `lbd run` share, as typed.
struct ServingFlags {
  std::string workers_text = "auto";
  std::vector<std::string> listen_text;
  std::string cpus_text;
  std::string policy_text = "least";
  std::string mode_text = "bpf";
  bool no_pin = false;
  double idle_timeout_s = 60;
  double header_timeout_s = 10;
  std::string min_body_rate_text = "1K";
  std::string body_memory_text = "64M";
  double shutdown_timeout_s = 10;
  unsigned max_restarts = 5;
  double restart_window_s = 60;
  unsigned max_connections = 65536;
  int backlog = 4096;
  unsigned stale_after_ms = 50;
  unsigned sticky_stale_after_ms = 1000;
  std::string log_level = "info";
  std::string control_path;
  std::string admin_text;
  std::string agent_text;
  double drain_grace_s = std::numeric_limits<double>::quiet_NaN();  // not given: 0, or kDrainGraceWithAgent with --agent
  std::string max_memory_text;
  std::string user;
};

// `workers_flag` names the worker-count flag: lbd's "-w,--workers", `lbd run`'s PM2-style
// "-i,--instances,-w,--workers". `stop_flag` likewise: run also accepts --kill-timeout.
void add_serving_flags(CLI::App& app, ServingFlags& f, const std::string& workers_flag,
                       const std::string& stop_flag) {
  app.add_option(workers_flag, f.workers_text,
                 "Worker processes: a number; 'auto' (or 'max') for one per CPU; 'max-N' (or -N, as in PM2) "
                 "for one per CPU but N, at least one")
      ->capture_default_str();
  app.add_option("-l,--listen", f.listen_text,
                 "Address to serve, ADDR:PORT or [IPv6]:PORT; repeat for more (default 0.0.0.0:8080)");
  app.add_option("--cpus", f.cpus_text, "CPUs for the workers, e.g. 0-3,6 (default: all allowed)");
  app.add_flag("--no-pin", f.no_pin, "Do not pin each worker to its CPU");
  app.add_option("-p,--policy", f.policy_text, "Steering policy: rr, least, hash or sticky (one client address, one worker)")->capture_default_str();
  app.add_option("--header-timeout", f.header_timeout_s,
                 "A request's head must arrive within this long of its first byte, or it gets 408 and the "
                 "connection closes (s; trickling bytes do not extend it)")
      ->capture_default_str();
  app.add_option("--min-body-rate", f.min_body_rate_text,
                 "After its first --header-timeout a request body must average at least this many bytes a "
                 "second (e.g. 1K), or it gets 408 and the connection closes; 0: no minimum")
      ->capture_default_str();
  app.add_option("--body-memory", f.body_memory_text,
                 "Request bodies one worker holds in memory at once, all connections together (e.g. 64M); "
                 "a body past it gets 503")
      ->capture_default_str();
  app.add_option("--idle-timeout", f.idle_timeout_s, "Close keep-alive connections idle this long (s)")
      ->capture_default_str();
  app.add_option(stop_flag, f.shutdown_timeout_s,
                 "On stop or drain, wait this long for in-flight requests before killing (s)")
      ->capture_default_str();
  app.add_option("--max-restarts", f.max_restarts,
                 "Stop restarting a worker that crashed this many times within --restart-window")
      ->capture_default_str();
  app.add_option("--restart-window", f.restart_window_s, "Window for --max-restarts (s)")->capture_default_str();
  app.add_option("--max-memory", f.max_memory_text,
                 "Replace a worker whose resident memory passes this (e.g. 512M, 2G): a new one "
                 "first, then the old one drained (default: no limit)");
  app.add_option("--max-connections", f.max_connections, "Open connections per worker")->capture_default_str();
  app.add_option("--backlog", f.backlog, "Accept queue length of each listener")->capture_default_str();
  app.add_option("--stale-after", f.stale_after_ms,
                 "Policy least skips a worker whose loop has not run for this long (ms)")
      ->capture_default_str();
  app.add_option("--sticky-stale-after", f.sticky_stale_after_ms,
                 "Policy sticky moves the clients of a worker whose loop has not run for this long (ms)")
      ->capture_default_str();
  app.add_option("--log-level", f.log_level, "trace, debug, info, warn, error")->capture_default_str();
  app.add_option("--control", f.control_path,
                 "Control socket for lbctl (default /run/lbd/<name>.sock; 'none' for no socket)");
  app.add_option("-u,--user", f.user,
                 "Run the workers as USER[:GROUP] (names or numbers). Started as root, lbd's own workers default "
                 "to nobody:nogroup, and `lbd run` needs --user or --allow-root");
  app.add_option("--admin", f.admin_text,
                 "Serve /metrics (Prometheus), /healthz and /readyz over HTTP on ADDR:PORT, e.g. "
                 "127.0.0.1:9180 (default: off; port 0 picks a free port, logged)");
  app.add_option("--agent", f.agent_text,
                 "Answer HAProxy's agent-check on ADDR:PORT: 'up ready N%' with a weight from the workers' "
                 "load, 'drain' once a drain --all or a graceful stop begins, 'maint' while no worker serves "
                 "(default: off; port 0 picks a free port, logged)");
  app.add_option("--drain-grace", f.drain_grace_s,
                 "On drain --all and a graceful stop, first say not ready (agent, /readyz) and keep serving "
                 "until balancers stop sending, at most this long (s; default 0, or 10 with --agent)");
}

unsigned parse_count(const std::string& text, const char* flag) {
  unsigned n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || n == 0) {
    throw ConfigError(std::string(flag) + ": expected a number or 'auto', got '" + text + "'");
  }
  return n;
}

// How many workers `text` asks for on `cpus` CPUs: a number; "auto" or "max", one per CPU; or
// "max-K" (PM2's "-K"), one per CPU but K, to leave CPUs free for something else; at least one.
unsigned worker_count(const std::string& text, size_t cpus, const char* flag) {
  if (text == "auto" || text == "max") return static_cast<unsigned>(cpus);
  std::string_view spare;
  if (text.starts_with("max-")) spare = std::string_view(text).substr(4);
  if (text.starts_with("-")) spare = std::string_view(text).substr(1);
  if (spare.empty()) return parse_count(text, flag);
  unsigned k = 0;
  auto [end, ec] = std::from_chars(spare.data(), spare.data() + spare.size(), k);
  if (ec != std::errc() || end != spare.data() + spare.size()) {
    throw ConfigError(std::string(flag) + ": expected a number, 'max' or 'max-N', got '" + text + "'");
  }
  return k >= cpus ? 1u : static_cast<unsigned>(cpus - k);
}

SupervisorOptions serving_options(const ServingFlags& f, const char* workers_flag) {
  SupervisorOptions options;
  options.cpus = f.cpus_text.empty() ? allowed_cpus() : flag_value(parse_cpu_list(f.cpus_text), "--cpus");
  options.workers = worker_count(f.workers_text, options.cpus.size(), workers_flag);
  if (options.workers > LBD_MAX_SLOTS) {
    throw ConfigError(std::string(workers_flag) + ": at most " + std::to_string(LBD_MAX_SLOTS));
  }
  std::vector<std::string> listen_text = f.listen_text;
  if (listen_text.empty()) listen_text.push_back("0.0.0.0:8080");
  if (listen_text.size() > LBD_MAX_GROUPS) {
    throw ConfigError("--listen: at most " + std::to_string(LBD_MAX_GROUPS) + " addresses");
  }
  for (const auto& text : listen_text) {
    auto address = parse_address(text);
    if (!address) throw ConfigError(address.error().message());
    options.listen.push_back(*address);
  }
  options.pin = !f.no_pin;
  options.steering.policy = flag_value(parse_policy(f.policy_text), "--policy");
  options.mode = flag_value(parse_mode(f.mode_text), "--mode");
  if (options.steering.policy == Policy::kSticky && options.mode != Mode::kBpf) {
    throw ConfigError("--policy sticky needs --mode bpf: without lbd's steering the kernel's hash spreads one client's "
                      "connections over every worker");
  }
  options.idle_timeout = seconds_to_ms(f.idle_timeout_s, "--idle-timeout");
  options.header_timeout = seconds_to_ms(f.header_timeout_s, "--header-timeout");
  options.min_body_rate = f.min_body_rate_text == "0" ? 0 : flag_value(parse_size(f.min_body_rate_text), "--min-body-rate");
  options.body_memory = flag_value(parse_size(f.body_memory_text), "--body-memory");
  options.shutdown_timeout = seconds_to_ms(f.shutdown_timeout_s, "--shutdown-timeout");
  options.max_restarts = f.max_restarts;
  options.restart_window = seconds_to_ms(f.restart_window_s, "--restart-window");
  if (!f.max_memory_text.empty()) options.max_memory = flag_value(parse_size(f.max_memory_text), "--max-memory");
  if (f.max_connections < 16 || f.max_connections > 1'000'000) {
    throw ConfigError("--max-connections: expected 16 to 1000000");
  }
  options.max_connections = f.max_connections;
  if (f.backlog < 1) throw ConfigError("--backlog: expected a positive number");
  options.backlog = f.backlog;
  if (f.stale_after_ms < 20) throw ConfigError("--stale-after: at least 20 ms (idle workers beat every 10 ms)");
  options.steering.stale_after = std::chrono::milliseconds(f.stale_after_ms);
  if (f.sticky_stale_after_ms < 20) throw ConfigError("--sticky-stale-after: at least 20 ms (idle workers beat every 10 ms)");
  options.steering.sticky_stale_after = std::chrono::milliseconds(f.sticky_stale_after_ms);
  static const std::set<std::string> levels = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  if (!levels.count(f.log_level)) throw ConfigError("--log-level: unknown level '" + f.log_level + "'");
  options.log_level = f.log_level;
  if (!f.control_path.empty()) {
    options.control_path = f.control_path == "none" ? std::string() : f.control_path;
    options.control_path_given = true;
  }
  if (!f.admin_text.empty()) options.admin = flag_value(parse_address(f.admin_text), "--admin");
  if (!f.agent_text.empty()) options.agent = flag_value(parse_address(f.agent_text), "--agent");
  if (std::isnan(f.drain_grace_s)) {
    if (options.agent) options.drain_grace = kDrainGraceWithAgent;
  } else if (!(f.drain_grace_s >= 0 && f.drain_grace_s <= 86400)) {
    throw ConfigError("--drain-grace: expected seconds, 0 to 86400 (0: drain at once)");
  } else {
    options.drain_grace = std::chrono::milliseconds(static_cast<int64_t>(f.drain_grace_s * 1000));
  }
  options.user = f.user;
  return options;
}

}  // namespace

std::string default_control_path(const std::string& app) { return "/run/lbd/" + app + ".sock"; }

void settle_run_as(SupervisorOptions& options, uid_t euid) {
  options.run_as.reset();
  if (!options.user.empty()) {
    auto as = resolve_user(options.user);
    if (!as) throw ConfigError("--user: " + as.error().message());
    if (euid != 0 && as->uid != euid) {
      throw ConfigError("--user " + options.user + ": only root can run workers as another user");
    }
    if (euid == 0) options.run_as = std::move(*as);
    return;
  }
  if (euid != 0) return;  // the children run as lbd's own user
  if (options.program) {
    if (options.allow_root) return;
    throw ConfigError("refusing to run " + options.program->command[0] +
                      " as root: name a user with --user USER (or pass --allow-root)");
  }
  auto nobody = default_worker_user();
  if (!nobody) throw ConfigError("no user 'nobody' to run the workers as: name one with --user");
  options.run_as = std::move(*nobody);
}

ParsedCommandLine parse_command_line(int argc, char** argv) {
  // `lbd startup ARGS...`: ARGS are another lbd command line, checked here like one.
  if (argc >= 2 && std::string_view(argv[1]) == "startup") {
    if (argc >= 3 && (std::string_view(argv[2]) == "--help" || std::string_view(argv[2]) == "-h")) {
      std::cout << "Usage: lbd startup [LBD ARGUMENTS...]\n"
                   "Prints the systemd unit that runs `lbd LBD ARGUMENTS...` (Type=notify, ExecReload=lbctl reload,\n"
                   "Restart=always, hardened), e.g. lbd startup run -i max --listen 0.0.0.0:80 -- node app.js\n";
      return {};
    }
    std::vector<char*> rest = {argv[0]};
    for (int i = 2; i < argc; i++) rest.push_back(argv[i]);
    ParsedCommandLine inner = parse_command_line(static_cast<int>(rest.size()), rest.data());
    if (!inner.options && !inner.config_file) return {};  // --help or --version
    inner.startup_args = std::vector<std::string>(argv + 2, argv + argc);
    return inner;
  }
  CLI::App app{
      "lbd: runs one worker process per CPU behind a single port and steers every new connection "
      "to a worker in the kernel (eBPF on an SO_REUSEPORT group).\n"
      "  lbd [flags]                     serve the bundled HTTP app\n"
      "  lbd run [flags] -- PROGRAM ARGS run any program that takes its listener as fd 3 (systemd "
      "LISTEN_FDS), one per CPU\n"
      "  lbd start FILE.toml             run the apps a config file declares\n"
      "  lbd startup [ARGS...]           print a systemd unit that runs `lbd ARGS...`\n"
      "Signals: HUP reloads, USR2 upgrades lbd itself (lbctl upgrade), TERM/INT stop gracefully, QUIT stops at once.\n"
      "A crashed lbd restarted with the same arguments takes its still-running workers over.",
      "lbd"};
  app.set_version_flag("--version", std::string("lbd ") + LBD_VERSION);

  // Everything after "--" is the program `lbd run` executes, never lbd's flags.
  std::vector<std::string> command;
  int cli_argc = argc;
  for (int i = 1; i < argc; i++) {
    if (std::string_view(argv[i]) == "--") {
      command.assign(argv + i + 1, argv + argc);
      cli_argc = i;
      break;
    }
  }

  ServingFlags flags;
  add_serving_flags(app, flags, "-w,--workers", "--shutdown-timeout");
  bool demo_routes = false;
  app.add_flag("--demo-routes", demo_routes,
               "Also serve the bundled app's /work?us=N (burns CPU) and /sleep?ms=N (holds the connection), "
               "for demos and benchmarks; off by default, since any client could use them to load the workers");
  app.add_option("-m,--mode", flags.mode_text,
                 "How connections reach workers: bpf (lbd's steering), reuseport (kernel hash), "
                 "shared (one listener), handoff (supervisor accepts and passes fds)")
      ->capture_default_str();

  auto* run = app.add_subcommand(
      "run", "Run any program as the workers: each gets its own listener of the group as fd 3 "
             "(LISTEN_FDS=1, LISTEN_PID, LISTEN_FDNAMES), LB_WORKER_ID and LB_WORKERS, and "
             "NOTIFY_SOCKET for READY=1. Usage: lbd run [flags] -- PROGRAM ARGS...");
  ServingFlags run_flags;
  add_serving_flags(*run, run_flags, "-i,--instances,-w,--workers", "--kill-timeout,--shutdown-timeout");
  run->add_option("-m,--mode", run_flags.mode_text, "bpf (lbd's steering) or reuseport (kernel hash)")
      ->capture_default_str();
  std::string name;
  ProgramOptions program;
  double ready_delay_s = 1;  // the default applies only where a program cannot be probed
  double ready_timeout_s = 30;
  std::string log_max_text = "10M";
  std::vector<std::string> positional_command;
  run->add_option("--name", name, "The app's name, for lbctl and the logs (default: the program's file name)");
  run->add_option("--cwd", program.cwd, "The program's working directory");
  run->add_option("--env", program.env, "KEY=VALUE for the program; repeat for more");
  auto* ready_delay_option = run->add_option(
      "--ready-delay", ready_delay_s,
      "A worker counts as ready this long after it started, even if it has neither sent READY=1 nor been "
      "seen accepting (s). Default: in --mode bpf a worker is ready once it accepts lbd's probe connection "
      "(a worker that never accepts never is); in --mode reuseport, 1 s");
  bool allow_root = false;
  run->add_flag("--allow-root", allow_root,
                "Run the program as root when lbd is root and no --user is given (refused otherwise)");
  run->add_flag("--wait-ready", program.wait_ready, "Only READY=1 on NOTIFY_SOCKET makes a worker ready");
  run->add_option("--ready-timeout", ready_timeout_s, "A worker not ready by then is killed and reported (s)")
      ->capture_default_str();
  run->add_option("--log-dir", program.log_dir, "Where <name>.log goes: the workers' stdout and stderr, stamped")
      ->capture_default_str();
  run->add_option("--log-max-size", log_max_text, "Rotate the log at this size (e.g. 10M)")->capture_default_str();
  run->add_option("--log-files", program.log_files, "Rotated log files to keep")->capture_default_str();
  run->add_option("command", positional_command, "PROGRAM ARGS... (put them after --)");

  std::string config_file;
  auto* start = app.add_subcommand("start", "Run every app a TOML config file declares (see examples/lbd.toml)");
  start->add_option("file", config_file, "The config file")->required();
  bool check_only = false;
  start->add_flag("-t,--check", check_only, "Only check the file (like nginx -t): exit 0 if it is good");

  try {
    app.parse(cli_argc, argv);
  } catch (const CLI::CallForHelp& e) {
    app.exit(e);
    return {};
  } catch (const CLI::CallForAllHelp& e) {
    app.exit(e);
    return {};
  } catch (const CLI::CallForVersion& e) {
    app.exit(e);
    return {};
  } catch (const CLI::ParseError& e) {
    throw ConfigError(e.what());
  }

  if (*start) {
    if (!command.empty()) throw ConfigError("lbd start takes a config file, not a program");
    return {.options = std::nullopt, .config_file = config_file, .check_only = check_only};
  }
  const std::vector<std::string> command_line(argv + 1, argv + argc);
  if (!*run) {
    if (!command.empty()) throw ConfigError("a program to run needs `lbd run`: lbd run [flags] -- PROGRAM ARGS");
    SupervisorOptions options = serving_options(flags, "--workers");
    options.command_line = command_line;
    options.demo_routes = demo_routes;
    return {.options = std::move(options), .config_file = std::nullopt, .check_only = false};
  }

  if (command.empty()) command = positional_command;
  if (command.empty()) throw ConfigError("lbd run: no program given (lbd run [flags] -- PROGRAM ARGS)");
  SupervisorOptions options = serving_options(run_flags, "--instances");
  if (options.mode != Mode::kBpf && options.mode != Mode::kReuseport) {
    throw ConfigError("--mode: lbd run supports bpf or reuseport (a program takes its own listener)");
  }
  if (name.empty()) {  // the program's file name, made a name: "node", "gunicorn"
    name = command[0].substr(command[0].rfind('/') + 1);
    for (char& c : name) {
      if (!is_app_name(std::string("a") + c)) c = '_';
    }
    if (!is_app_name(name)) name = "app-" + name;
  }
  if (!is_app_name(name)) throw ConfigError("--name: '" + name + "' is not a name (" + kAppNameRule + ")");
  for (const auto& entry : program.env) {
    const size_t eq = entry.find('=');
    if (eq == 0 || eq == std::string::npos) throw ConfigError("--env: expected KEY=VALUE, got '" + entry + "'");
  }
  program.command = std::move(command);
  if (ready_delay_option->count() > 0 || options.mode != Mode::kBpf) {
    program.ready_delay = seconds_to_ms(ready_delay_s, "--ready-delay");
  }
  program.ready_timeout = seconds_to_ms(ready_timeout_s, "--ready-timeout");
  if (!program.wait_ready && program.ready_delay && *program.ready_delay >= program.ready_timeout) {
    throw ConfigError("--ready-delay must be shorter than --ready-timeout (a worker would be killed before it "
                      "counts as ready)");
  }
  // Absolute: the child changes into it before exec, and a relative program path is found from it.
  if (!program.cwd.empty()) program.cwd = std::filesystem::absolute(program.cwd).lexically_normal().string();
  program.log_max_bytes = flag_value(parse_size(log_max_text), "--log-max-size");
  if (program.log_max_bytes < 4096) throw ConfigError("--log-max-size: at least 4K");
  if (program.log_files < 1 || program.log_files > 1000) throw ConfigError("--log-files: expected 1 to 1000");
  options.command_line = command_line;
  options.allow_root = allow_root;
  options.app = name;
  if (!options.control_path_given) options.control_path = default_control_path(name);
  options.program = std::move(program);
  return {.options = std::move(options), .config_file = std::nullopt, .check_only = false};
}

}  // namespace lbd
