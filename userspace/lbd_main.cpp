#include <signal.h>
#include <linux/close_range.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "common/log.h"
#include "service.h"
#include "sandbox/confine.h"
#include "supervisor/app_launcher.h"
#include "config/options.h"
#include "config/systemd_unit.h"
#include "supervisor/launch.h"
#include "supervisor/supervisor.h"
#include "worker/worker.h"
#include "worker/worker_spec.h"

namespace lbd {

namespace {

// The worker gives up its privileges once everything that needs them is done (its ring, its
// file table and descriptor limit, its listeners are all set up in Worker::create), and before
// it reads a byte from a client.
Result<void> confine_worker(const WorkerSpec& spec) {
  auto guard = SeccompProgram::steering_guard();
  if (!guard) return guard.error();
  const RunAs* as = spec.run_as ? &*spec.run_as : nullptr;
  if (ConfineFailure failed = confine(as, false, &*guard)) {
    return Error::from_errno(failed.err, std::string("confine: ") + failed.step);
  }
#if defined(__SANITIZE_ADDRESS__)
  // Changing uid made the worker non-dumpable, and LeakSanitizer's check at exit must ptrace
  // the process from a helper thread: a sanitizer build (tests only) keeps it dumpable.
  prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
#endif
  return {};
}

int run_worker(const char* spec_text, const ServiceFactory& make_service) {
  WorkerSpec spec;
  try {
    spec = decode_worker_spec(spec_text);
  } catch (const ConfigError& e) {
    fprintf(stderr, "lbd worker: %s\n", e.what());
    return 2;
  }
  unsetenv(kWorkerSpecEnv);
  init_logging("worker " + std::to_string(spec.slot), spec.log_level);
  // The terminal's ^C and ^\ reach the whole process group; the supervisor decides what happens
  // to workers, so they ignore those and act on its SIGTERM (drain) or SIGKILL.
  signal(SIGINT, SIG_IGN);
  signal(SIGQUIT, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);

  auto worker = Worker::create(spec, make_service(spec));
  if (!worker) {
    spdlog::error("cannot start: {}", worker.error().message());
    return 1;
  }
  if (auto confined = confine_worker(spec); !confined) {
    spdlog::error("cannot start: {}", confined.error().message());
    return 1;
  }
  if (auto ok = (*worker)->run(); !ok) {
    spdlog::error("{}", ok.error().message());
    return 1;
  }
  return 0;
}

// `lbd startup ARGS...`: the unit on stdout, how to install it on stderr.
int print_startup_unit(const ParsedCommandLine& parsed) {
  UnitOptions unit;
  unit.lbd_args = *parsed.startup_args;
  unit.lbd_path = current_binary_path();
  const auto lbctl = std::filesystem::path(unit.lbd_path).parent_path() / "lbctl";
  const std::string lbctl_path = std::filesystem::exists(lbctl) ? lbctl.string() : "lbctl";
  unit.working_directory = std::filesystem::current_path().string();
  if (parsed.options) {
    const SupervisorOptions& options = *parsed.options;
    unit.app = options.app;
    unit.exec_reload = systemd_word(lbctl_path) + " reload" + (options.app == "lbd" ? "" : " " + systemd_word(options.app));
    unit.runs_program = options.program.has_value();
    if (options.program) unit.writable.push_back(options.program->log_dir);
    // A stop may first keep serving for --drain-grace while balancers are told, then drain.
    unit.stop_timeout_s =
        static_cast<int>((options.drain_grace.count() + options.shutdown_timeout.count()) / 1000) + 20;
  } else {
    unit.app = "lbd";
    unit.exec_reload = "/bin/kill -HUP $MAINPID";  // `lbd start` reloads every app on HUP
    unit.runs_program = true;
  }
  fputs(systemd_unit(unit).c_str(), stdout);
  fprintf(stderr, "lbd: save this as /etc/systemd/system/%s, then: systemctl daemon-reload && systemctl enable --now %s\n",
          unit_name(unit.app).c_str(), unit_name(unit.app).c_str());
  return 0;
}

int run_supervisor(int argc, char** argv) {
  // Descriptors lbd did not open itself (whatever its parent left open) must not reach its workers
  // and programs: close-on-exec for all of them. (An upgrade's channel is one: lbd takes it first.)
  close_range(3, ~0u, CLOSE_RANGE_CLOEXEC);
  SupervisorOptions options;
  try {
    auto parsed = parse_command_line(argc, argv);
    // Who the children run as: refused here, in one line, rather than at the first spawn.
    if (parsed.options) settle_run_as(*parsed.options, geteuid());
    if (parsed.startup_args) return print_startup_unit(parsed);
    if (parsed.config_file) {
      init_logging("lbd", "info");
      try {
        return parsed.check_only ? check_apps(*parsed.config_file) : run_apps(*parsed.config_file);
      } catch (const ConfigError& e) {
        fprintf(stderr, "lbd: %s\n", e.what());  // names the file, line and key already
        return 2;
      }
    }
    if (!parsed.options) return 0;  // --help or --version
    options = std::move(*parsed.options);
  } catch (const ConfigError& e) {
    fprintf(stderr, "lbd: %s (see lbd --help)\n", e.what());
    return 2;
  }
  // An exec-mode app logs under its name: `lbd start` runs several side by side.
  init_logging(options.program ? "lbd " + options.app : "lbd", options.log_level);
  Supervisor supervisor(std::move(options));
  return supervisor.run();
}

}  // namespace

int run(int argc, char** argv, const ServiceFactory& make_service) {
  if (const char* spec = getenv(kWorkerSpecEnv)) return run_worker(spec, make_service);
  return run_supervisor(argc, argv);
}

int run(int argc, char** argv, const HandlerFactory& make_handler) {
  return run(argc, argv, ServiceFactory([&make_handler](const WorkerSpec& spec) { return Service{make_handler(spec), {}}; }));
}

int run(int argc, char** argv, Service service) {
  return run(argc, argv, ServiceFactory([&service](const WorkerSpec&) { return service; }));
}

int run(int argc, char** argv, Handler handler) { return run(argc, argv, Service{std::move(handler), {}}); }

}  // namespace lbd
