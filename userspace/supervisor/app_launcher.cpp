#include "supervisor/app_launcher.h"

#include "supervisor/child_process.h"

#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <optional>
#include <cstdio>
#include <vector>

#include "common/log.h"
#include "common/unique_fd.h"
#include "config/app_config.h"
#include "config/options.h"
#include "supervisor/notify.h"
#include "supervisor/restart_policy.h"
#include "supervisor/launch.h"

namespace lbd {

namespace {

using Clock = std::chrono::steady_clock;

// How long an app's supervisor may take to say READY=1 beyond its workers' --ready-timeout.
constexpr std::chrono::seconds kAppStartMargin{60};

struct App {
  size_t index = 0;  // in the config file
  std::string name;
  std::optional<ChildProcess> process;  // its supervisor, while it runs
  UniqueFd notify;  // its supervisor's NOTIFY_SOCKET: READY=1 once every worker serves
  bool ready = false;
  bool running() const { return process && !process->reaped(); }
  pid_t pid() const { return process ? process->pid() : 0; }
  // An app supervisor that dies while serving (killed, out of memory, a bug) is started again,
  // with backoff; after 5 deaths in a minute it is left down and lbd start exits 1 in the end.
  RestartPolicy restarts{5, std::chrono::minutes(1), std::chrono::milliseconds(500), std::chrono::seconds(30)};
  std::optional<Clock::time_point> restart_at;
  bool died = false;  // ended on its own while serving; not restarted yet
};

// What an app's supervisor said on its NOTIFY_SOCKET since the last look.
struct Notifications {
  bool ready = false;
  pid_t main_pid = 0;  // MAINPID=: an upgrade's successor, in charge of the app from now on
};

Notifications read_notifications(int fd) {
  Notifications said;
  char buffer[512];
  ssize_t n;
  while ((n = recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT)) > 0) {
    std::string_view text(buffer, static_cast<size_t>(n));
    while (!text.empty()) {
      const size_t end = text.find('\n');
      const std::string_view line = text.substr(0, end);
      if (line == "READY=1") said.ready = true;
      if (line.starts_with("MAINPID=")) said.main_pid = static_cast<pid_t>(atoi(std::string(line.substr(8)).c_str()));
      if (end == std::string_view::npos) break;
      text.remove_prefix(end + 1);
    }
  }
  return said;
}

class AppLauncher {
 public:
  explicit AppLauncher(config::FileConfig file) : file_(std::move(file)) {}

  int run() {
    if (auto ok = start_all(); !ok) {
      spdlog::error("{}", ok.error().message());
      stop_all(SIGTERM);
      wait_all();
      return 1;
    }
    return serve();
  }

 private:
  Result<void> start_all() {
    sigset_t mask;
    sigemptyset(&mask);
    for (int sig : {SIGTERM, SIGINT, SIGQUIT, SIGHUP}) sigaddset(&mask, sig);
    if (sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) return Error::from_errno("block signals");
    signal_fd_.reset(signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!signal_fd_) return Error::from_errno("signalfd");

    spdlog::info("starting {} apps from the config file", file_.apps.size());
    for (size_t i = 0; i < file_.apps.size(); i++) {
      App& app = apps_.emplace_back();
      app.index = i;
      app.name = file_.apps[i].name;
      const std::string notify_name = notify_name_of(app);
      auto notify = notify_listener(notify_name);
      if (!notify) return notify.error().wrap("app '" + app.name + "'");
      app.notify = std::move(*notify);
      LBD_TRY(spawn(app));
    }

    // All ready, or one failed: nothing half-started stays up.
    double longest_ready_s = 30;
    for (const auto& app : file_.apps) longest_ready_s = std::max(longest_ready_s, app.ready_timeout_s.value_or(30));
    const auto start_timeout = std::chrono::seconds(static_cast<int64_t>(longest_ready_s)) + kAppStartMargin;
    const auto deadline = Clock::now() + start_timeout;
    while (true) {
      size_t ready = 0;
      for (auto& app : apps_) {
        if (!app.ready && app.notify && listen_to(app).ready) {
          app.ready = true;
          spdlog::info("app {} ready (pid {})", app.name, app.pid());
        }
        ready += app.ready ? 1 : 0;
      }
      if (ready == apps_.size()) break;
      if (auto failed = reap(); !failed.empty()) {
        return Error(std::error_code(), failed + "; stopping the other apps");
      }
      if (stop_signal_) return Error(std::error_code(), "stopped before every app was ready");
      if (Clock::now() >= deadline) {
        return Error(std::error_code(), "not every app was ready within " +
                                            std::to_string(start_timeout.count()) + " s");
      }
      wait_for_events(100);
    }
    spdlog::info("ready: {} apps", apps_.size());
    notify_service_manager("READY=1");
    return {};
  }

  // The app's supervisor: `lbd run` with the app's flags, telling us READY=1 on our socket.
  std::string notify_name_of(const App& app) const {
    return "lbd/" + std::to_string(getpid()) + "/app/" + std::to_string(app.index);
  }

  Result<void> spawn(App& app) {
    ProcessLaunch launch;
    launch.path = binary_;
    launch.argv = {"lbd"};
    for (auto& arg : config::lbd_run_arguments(file_.apps[app.index], file_)) launch.argv.push_back(arg);
    launch.env = inherited_environment({"NOTIFY_SOCKET"});
    launch.env.push_back("NOTIFY_SOCKET=@" + notify_name_of(app));
    // stdin, stdout and stderr: ours (the app supervisors log where we log).
    for (int fd = 0; fd < 3; fd++) launch.fds.emplace_back(fd, fd);
    // Its own process group: a terminal's ^C (or a service manager's TERM to the group) reaches
    // this process alone, which passes it on once. Two would mean "stop at once" to an app.
    launch.own_process_group = true;
    // If this lbd is killed its apps' supervisors go too, at once and without stopping their
    // workers, which keep serving until an lbd started again adopts them.
    launch.parent_death_signal = SIGKILL;
    auto pid = spawn_process(launch);
    if (!pid) return pid.error().wrap("start app '" + app.name + "'");
    auto process = ChildProcess::own(*pid);
    if (!process) return process.error().wrap("start app '" + app.name + "'");
    app.process.emplace(std::move(*process));
    app.ready = false;
    return {};
  }

  int serve() {
    int exit_code = 0;
    auto any_app = [&] {
      return std::any_of(apps_.begin(), apps_.end(), [](const App& a) { return a.running() || a.restart_at; });
    };
    while (any_app()) {
      wait_for_events(poll_timeout_ms());
      // Notifications first: an upgraded app's successor announces itself before its
      // predecessor exits, and that exit must not look like the app's end.
      for (auto& app : apps_) {
        if (!app.running() || !app.notify) continue;
        if (listen_to(app).ready && !app.ready) {
          app.ready = true;
          spdlog::info("app {} ready again (pid {})", app.name, app.pid());
        }
      }
      if (auto failed = reap(); !failed.empty() && !stopping_) {
        spdlog::error("{}", failed);
        if (!schedule_restarts()) exit_code = 1;
      }
      if (stop_signal_ && !stopping_) {
        stopping_ = true;
        for (auto& app : apps_) app.restart_at.reset();  // nothing starts once stopping
        notify_service_manager("STOPPING=1");
        stop_all(stop_signal_);
      } else if (stop_signal_ == SIGQUIT) {
        stop_all(SIGQUIT);
      }
      if (!restart_due_apps()) exit_code = 1;
    }
    spdlog::info("stopped");
    return exit_code;
  }

  // Every app that died while serving gets a restart time, unless it died too often: then it is
  // left down (false: some app was given up).
  bool schedule_restarts() {
    bool all_kept = true;
    const auto now = Clock::now();
    for (auto& app : apps_) {
      if (!app.died) continue;
      app.died = false;
      if (auto delay = app.restarts.on_crash(now)) {
        spdlog::warn("app {}: restarting it in {} ms", app.name, delay->count());
        app.restart_at = now + *delay;
      } else {
        spdlog::error("app {}: died {} times within a minute; not restarting it; the other apps keep running",
                      app.name, app.restarts.recent_crashes(now));
        all_kept = false;
      }
    }
    return all_kept;
  }

  // Starts the apps whose restart is due; false if one could not be started and was given up.
  bool restart_due_apps() {
    bool all_kept = true;
    const auto now = Clock::now();
    for (auto& app : apps_) {
      if (!app.restart_at || *app.restart_at > now) continue;
      app.restart_at.reset();
      if (auto ok = spawn(app); !ok) {
        spdlog::error("{}", ok.error().message());
        app.died = true;
        all_kept = schedule_restarts() && all_kept;
      }
    }
    return all_kept;
  }

  // Reads the app supervisor's notifications; a MAINPID= from another process is an upgrade's
  // successor (`lbctl upgrade APP`): the app is that process now, and the one we started is left
  // to exit and be reaped.
  Notifications listen_to(App& app) {
    Notifications said = read_notifications(app.notify.get());
    if (said.main_pid > 0 && said.main_pid != app.pid()) {
      UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, said.main_pid, 0)));
      if (pidfd) {
        spdlog::info("app {} is pid {} now (upgraded from pid {})", app.name, said.main_pid, app.pid());
        if (app.process && !app.process->adopted()) handed_over_.push_back(std::move(*app.process));
        app.process.emplace(ChildProcess::adopt(said.main_pid, std::move(pidfd)));
      }
    }
    return said;
  }

  int poll_timeout_ms() const {
    auto next = Clock::time_point::max();
    for (const auto& app : apps_) {
      if (app.restart_at) next = std::min(next, *app.restart_at);
      if (app.running() && !app.ready) next = std::min(next, Clock::now() + std::chrono::milliseconds(100));
    }
    if (next == Clock::time_point::max()) return -1;
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(next - Clock::now()).count();
    return static_cast<int>(std::clamp<int64_t>(ms, 0, 60'000));
  }

  // Waits for a signal, an app's exit (its pidfd) or its READY=1. Reads signals: HUP is passed
  // on at once; a stop is recorded for the loop.
  void wait_for_events(int timeout_ms) {
    std::vector<pollfd> fds{{signal_fd_.get(), POLLIN, 0}};
    for (auto& app : apps_) {
      if (app.notify) fds.push_back({app.notify.get(), POLLIN, 0});
      if (app.running()) fds.push_back({app.process->pidfd(), POLLIN, 0});
    }
    for (auto& old : handed_over_) fds.push_back({old.pidfd(), POLLIN, 0});
    poll(fds.data(), fds.size(), timeout_ms);
    signalfd_siginfo info{};
    while (read(signal_fd_.get(), &info, sizeof(info)) == sizeof(info)) {
      const int sig = static_cast<int>(info.ssi_signo);
      if (sig == SIGHUP) {
        spdlog::info("SIGHUP: reloading every app");
        stop_all(SIGHUP);
      } else if (sig == SIGTERM || sig == SIGINT || sig == SIGQUIT) {
        if (stopping_ && sig != SIGQUIT) {
          spdlog::warn("second SIG{}: stopping at once", sigabbrev_np(sig));
          stop_signal_ = SIGQUIT;
        } else if (!stop_signal_ || sig == SIGQUIT) {
          spdlog::info("SIG{}: stopping every app", sigabbrev_np(sig));
          stop_signal_ = sig;
        }
      }
    }
  }

  // Reaps exited app supervisors; returns a description of those that ended, if any.
  std::string reap() {
    // Those that handed their app over to a successor: reaped, and nothing more.
    std::erase_if(handed_over_, [](ChildProcess& old) { return old.reap().has_value(); });
    std::string ended;
    for (auto& app : apps_) {
      if (!app.running()) continue;
      auto exit = app.process->reap();
      if (!exit) continue;
      const std::string what = "app " + app.name + " (pid " + std::to_string(app.pid()) + ") " + exit->description;
      if (stopping_ || (app.ready && exit->exited_zero())) {
        spdlog::info("{}", what);  // asked to stop (lbctl stop APP): not a failure
      } else {
        ended += (ended.empty() ? "" : "; ") + what;
        app.died = true;
      }
    }
    return ended;
  }

  void stop_all(int sig) {
    for (auto& app : apps_) {
      if (app.running()) app.process->signal(sig);
    }
  }

  void wait_all() {
    for (auto& app : apps_) {
      while (app.running()) {
        pollfd exited{app.process->pidfd(), POLLIN, 0};
        poll(&exited, 1, -1);
        (void)app.process->reap();
      }
    }
  }

  config::FileConfig file_;
  const std::string binary_ = current_binary_path();
  std::deque<App> apps_;  // a deque: spawn() and the loops hold references while apps are added
  std::vector<ChildProcess> handed_over_;  // app supervisors that were upgraded, until they exit
  UniqueFd signal_fd_;
  int stop_signal_ = 0;
  bool stopping_ = false;
};

}  // namespace

namespace {

// Each app as its own `lbd run` will see it, so that a start fails before any app runs (and
// --check says so) when one of them could not start: who it would run as, first of all.
void check_each_app(const std::string& path, const config::FileConfig& file) {
  for (const auto& app : file.apps) {
    if (geteuid() == 0 && app.user.empty() && !app.allow_root.value_or(false)) {
      throw ConfigError(path + ":" + std::to_string(app.line) + ": app '" + app.name + "': refusing to run " +
                        app.command + " as root: set user = \"NAME\" (or allow_root = true)");
    }
    std::vector<std::string> args = config::lbd_run_arguments(app, file);
    args.insert(args.begin(), "lbd");
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    try {
      ParsedCommandLine parsed = parse_command_line(static_cast<int>(argv.size()), argv.data());
      if (parsed.options) settle_run_as(*parsed.options, geteuid());
    } catch (const ConfigError& e) {
      throw ConfigError("app '" + app.name + "': " + e.what());
    }
  }
}

}  // namespace

int run_apps(const std::string& config_path) {
  config::FileConfig file = config::load_config_file(config_path);  // throws ConfigError
  check_each_app(config_path, file);
  return AppLauncher(std::move(file)).run();
}

int check_apps(const std::string& config_path) {
  config::FileConfig file = config::load_config_file(config_path);  // throws ConfigError
  check_each_app(config_path, file);
  std::string names;
  for (const auto& app : file.apps) names += (names.empty() ? "" : ", ") + app.name;
  printf("%s: good: %zu app%s (%s)\n", config_path.c_str(), file.apps.size(), file.apps.size() == 1 ? "" : "s",
         names.c_str());
  return 0;
}

}  // namespace lbd
