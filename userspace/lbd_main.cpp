#include <signal.h>
#include <linux/close_range.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>

#include "common/log.h"
#include "service.h"
#include "supervisor/app_launcher.h"
#include "config/options.h"
#include "supervisor/supervisor.h"
#include "worker/worker.h"
#include "worker/worker_spec.h"

namespace lbd {

namespace {

int run_worker(const char* spec_text, Handler handler) {
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

  auto worker = Worker::create(spec, std::move(handler));
  if (!worker) {
    spdlog::error("cannot start: {}", worker.error().message());
    return 1;
  }
  if (auto ok = (*worker)->run(); !ok) {
    spdlog::error("{}", ok.error().message());
    return 1;
  }
  return 0;
}

int run_supervisor(int argc, char** argv) {
  // Descriptors lbd did not open itself (whatever its parent left open) must not reach its workers
  // and programs: close-on-exec for all of them. (An upgrade's channel is one: lbd takes it first.)
  close_range(3, ~0u, CLOSE_RANGE_CLOEXEC);
  SupervisorOptions options;
  try {
    auto parsed = parse_command_line(argc, argv);
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

int run(int argc, char** argv, Handler handler) {
  if (const char* spec = getenv(kWorkerSpecEnv)) return run_worker(spec, std::move(handler));
  return run_supervisor(argc, argv);
}

}  // namespace lbd
