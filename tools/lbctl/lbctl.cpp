// lbctl: the operator's command line for a running lbd. It speaks only the control protocol
// (userspace/control/protocol.h) over lbd's Unix socket; `logs` alone reads files instead (the
// log files lbd writes for exec-mode apps, userspace/logs/record.h).
//
// Every verb but logs may name the app first (lbctl reload web, lbctl drain web 1): see app_socket.h.
//   lbctl status [--json]                       the workers, their load, the policy
//   lbctl drain <slot>|--all [--timeout S] [--wait]
//   lbctl undrain <slot>|--all
//   lbctl reload [--parallel K] [--timeout S]   replace every worker with a fresh one, slot by slot
//   lbctl restart <slot> [--timeout S]
//   lbctl scale N
//   lbctl policy rr|least|hash|sticky
//   lbctl stop
//   lbctl upgrade [--timeout S] [--reload]      replace lbd itself, keeping every worker
//   lbctl send <slot>|--all TEXT [--json]       one line to a worker's on_message or $LBD_MESSAGE_FD
//   lbctl top                                   a live dashboard; keys drain, undrain, reload (top.h)
//   lbctl logs [APP] [--worker N] [-f] [--lines K] [--log-dir DIR]
//                                               exec-mode apps' output, from the log files (logs_command.h)
//
// Exit status: 0 on success; 1 with a one-line reason when lbd refuses or fails (no such slot,
// timed out, ...) or cannot be reached; 2 for a usage error. Long operations print a line as each
// worker changes. The socket is --control, else $LBD_CONTROL, else /run/lbd/lbd.sock.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <optional>
#include <cstdio>
#include <iostream>
#include <map>
#include <string>

#include "common/message_text.h"
#include "control/protocol.h"
#include "control/status.h"
#include "lbctl/app_socket.h"
#include "lbctl/control_client.h"
#include "lbctl/format.h"
#include "lbctl/logs_command.h"
#include "lbctl/top.h"

namespace {

using lbd::control::Request;
using lbd::control::Verb;
using lbd::ctl::human_bytes;
using lbd::ctl::human_duration;

[[noreturn]] void fail(const std::string& message) {
  std::cerr << "lbctl: " << message << "\n";
  std::exit(1);
}

template <class T>
std::string or_dash(const std::optional<T>& value) {
  if (!value) return "-";
  if constexpr (std::is_same_v<T, std::string>) {
    return *value;
  } else {
    return std::to_string(*value);
  }
}

void print_status(const lbd::control::StatusReport& status) {
  const auto& lbd = status.lbd;
  std::string listen;
  for (const auto& a : lbd.listen) listen += (listen.empty() ? "" : ",") + a;
  printf("lbd %s  pid %s  mode %s  policy %s  up %s  listen %s  reloads %s\n", lbd.version.c_str(),
         or_dash(lbd.pid).c_str(), lbd.mode.c_str(), lbd.policy.c_str(), human_duration(lbd.uptime_s).c_str(),
         listen.c_str(), std::to_string(lbd.reloads).c_str());
  if (lbd.operation) printf("in progress: %s\n", lbd.operation->c_str());
  printf("%-4s  %-8s  %-3s  %-8s  %7s  %9s  %10s  %7s  %5s  %8s  %7s\n", "SLOT", "PID", "CPU", "STATE",
         "CONNS", "ACCEPTED", "REQUESTS", "RSS", "CPU%", "RESTARTS", "UPTIME");
  for (const auto& w : status.workers) {
    char cpu_percent[16] = "-";
    if (w.cpu_percent) snprintf(cpu_percent, sizeof(cpu_percent), "%.1f", *w.cpu_percent);
    printf("%-4u  %-8s  %-3s  %-8s  %7s  %9s  %10s  %7s  %5s  %8s  %7s\n", w.slot, or_dash(w.pid).c_str(),
           w.cpu >= 0 ? std::to_string(w.cpu).c_str() : "any", w.state.c_str(), or_dash(w.connections).c_str(),
           or_dash(w.accepted).c_str(), or_dash(w.requests).c_str(),
           w.rss_bytes ? human_bytes(*w.rss_bytes).c_str() : "-", cpu_percent, std::to_string(w.restarts).c_str(),
           w.uptime_s ? human_duration(*w.uptime_s).c_str() : "-");
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lbctl: control a running lbd (drain, reload, scale, status)", "lbctl"};
  app.require_subcommand(1);
  const char* env = getenv("LBD_CONTROL");
  std::optional<std::string> explicit_path;
  if (env && *env) explicit_path = env;
  std::string path_flag;
  const char* dir_env = getenv("LBD_CONTROL_DIR");
  std::string control_dir = dir_env && *dir_env ? dir_env : lbd::ctl::kControlDir;
  app.add_option("--control-dir", control_dir, "Where apps' control sockets are, APP.sock ($LBD_CONTROL_DIR)")
      ->capture_default_str();
  app.add_option("-s,--control", path_flag,
                 "lbd's control socket ($LBD_CONTROL; default: the named app's /run/lbd/APP.sock, else "
                 "/run/lbd/lbd.sock or the only app running)");

  Request request;
  bool json_output = false;
  int slot = -1;
  double timeout = 0;
  int parallel = 1;
  int workers = 0;

  // Every verb's positional words: [APP] and its value (app_socket.h).
  std::vector<std::string> words;
  auto app_words = [&](CLI::App* verb, const std::string& value_name) {
    verb->add_option("words", words, value_name.empty() ? "[APP]: the app (lbd run --name, or a config file's app)"
                                                        : "[APP] " + value_name + ": the app, then the " + value_name);
  };

  // The control verbs, one line each: the protocol's verb, what --help says, and the value that
  // follows [APP] ("" for none). A new verb is a line here, in the protocol (control/protocol.cpp)
  // and in lbd (supervisor/control_verbs.cpp), and a test.
  struct Command {
    Verb verb;
    const char* help;
    const char* value;
  };
  static constexpr Command kCommands[] = {
      {Verb::kStatus, "Show every worker: pid, state, connections, requests, memory, CPU", ""},
      {Verb::kDrain, "Stop sending new connections to a worker; it finishes and exits", "SLOT"},
      {Verb::kUndrain, "Start a worker in a drained slot again", "SLOT"},
      {Verb::kReload, "Replace every worker with a fresh one, slot by slot, without failing a request", ""},
      {Verb::kRestart, "Replace one worker with a fresh one", "SLOT"},
      {Verb::kScale, "Run N workers: add slots, or drain the highest ones", "N"},
      {Verb::kPolicy, "Change how new connections are steered: rr, least, hash or sticky", "POLICY"},
      {Verb::kStop, "Stop lbd gracefully (like SIGTERM)", ""},
      {Verb::kUpgrade,
       "Replace lbd itself with the lbd binary now on disk, keeping every worker and connection "
       "(like nginx's USR2); the old lbd stays in charge if the new one does not take over",
       ""},
      {Verb::kSend,
       "Send one line of TEXT to a worker (SLOT) or to every active one (--all): lbd's own workers hand it "
       "to the service's on_message, an lbd run program reads it from $LBD_MESSAGE_FD. At most 4095 bytes, "
       "no newline; exits 1 unless every worker got it",
       "SLOT TEXT"},
  };
  std::map<Verb, CLI::App*> commands;
  for (const Command& command : kCommands) {
    commands[command.verb] = app.add_subcommand(lbd::control::verb_name(command.verb), command.help);
    app_words(commands[command.verb], command.value);
  }
  commands[Verb::kStatus]->add_flag("--json", json_output, "Print the raw JSON");
  CLI::App* drain = commands[Verb::kDrain];
  drain->add_flag("--all", request.all, "Every worker (lbd keeps running, serving nothing)");
  drain->add_option("--timeout", timeout, "Seconds to let connections finish (default: lbd's --shutdown-timeout)");
  drain->add_flag("--wait", request.wait, "Return once the workers have exited");
  commands[Verb::kUndrain]->add_flag("--all", request.all, "Every drained slot");
  commands[Verb::kReload]->add_option("--parallel", parallel, "Slots replaced at once")->capture_default_str();
  commands[Verb::kReload]->add_option("--timeout", timeout, "Seconds a new worker has to become ready (default 30)");
  commands[Verb::kRestart]->add_option("--timeout", timeout,
                                       "Seconds the new worker has to become ready (default 30)");
  CLI::App* send = commands[Verb::kSend];
  send->add_flag("--all", request.all, "Every active worker");
  send->add_flag("--json", json_output, "Print the raw JSON answer");
  send->footer("TEXT is the last word (quote it; after -- if it starts with '-'): lbctl send 1 'flush caches', "
               "lbctl send web --all -- -v");
  bool upgrade_reload = false;
  commands[Verb::kUpgrade]->add_option("--timeout", timeout, "Seconds the new lbd has to take over (default 30)");
  commands[Verb::kUpgrade]->add_flag("--reload", upgrade_reload,
                                     "Then roll the workers onto the new binary too (lbctl reload)");

  auto* top = app.add_subcommand(
      "top", "A live dashboard, refreshed every second: keys d drain, u undrain, r reload, p policy, q quit "
             "(one plain snapshot when stdout is not a terminal)");
  app_words(top, "");

  lbd::ctl::LogsOptions logs_options;
  std::string log_dir;
  int64_t log_worker = -1;
  auto* logs = app.add_subcommand("logs", "Show exec-mode apps' captured output (every app's, merged, without APP)");
  logs->add_option("app", logs_options.app, "The app");
  logs->add_option("--worker", log_worker, "Only this worker's lines")->check(CLI::Range(int64_t{0}, int64_t{UINT32_MAX}));
  logs->add_flag("-f,--follow", logs_options.follow, "Then print new lines as they are written, until interrupted");
  logs->add_option("--lines", logs_options.lines, "How many of the last lines to print")
      ->check([](const std::string& value) { return value.starts_with('-') ? std::string("must be 0 or more") : std::string(); })
      ->capture_default_str();
  logs->add_option("--log-dir", log_dir, "Where lbd writes the logs ($LBD_LOG_DIR, else /var/log/lbd)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help, or the usage error
    return code == 0 ? 0 : 2;
  }

  if (!path_flag.empty()) explicit_path = path_flag;
  const Command* chosen = nullptr;
  for (const Command& command : kCommands) {
    if (*commands[command.verb]) chosen = &command;
  }
  const bool slot_or_all =
      chosen && (chosen->verb == Verb::kDrain || chosen->verb == Verb::kUndrain || chosen->verb == Verb::kSend);
  if (chosen && chosen->verb == Verb::kSend) {
    // The text is the last word; before it, [APP] and SLOT as for drain.
    if (words.empty()) {
      std::cerr << "lbctl: send needs TEXT: lbctl send [APP] SLOT|--all TEXT\n";
      return 2;
    }
    request.text = words.back();
    words.pop_back();
    // A slot is all digits and an app's name never is: `send 1 hello world` is unquoted text.
    const bool numbers_first = !words.empty() && words[0].find_first_not_of("0123456789") == std::string::npos;
    if (words.size() > (request.all ? 1u : 2u) || (!request.all && words.size() == 2 && numbers_first)) {
      std::cerr << "lbctl: expected [APP] " << (request.all ? "--all" : "SLOT")
                << " TEXT, got more words: quote TEXT if it has spaces\n";
      return 2;
    }
    if (std::string problem = lbd::message_text_problem(request.text); !problem.empty()) {
      std::cerr << "lbctl: cannot send: " << problem << "\n";
      return 2;
    }
  }
  // The chosen verb's words: [APP] and its value.
  const bool wants_value = chosen && *chosen->value && !(slot_or_all && request.all);
  const auto split = lbd::ctl::split_app_words(words, wants_value);
  if (!split) {
    std::cerr << "lbctl: expected " << (wants_value ? "[APP] and one value" : "at most an app name") << ", got "
              << words.size() << " words (see lbctl --help)\n";
    return 2;
  }
  if (slot_or_all && request.all && !split->app.empty() &&
      split->app.find_first_not_of("0123456789") == std::string::npos) {
    std::cerr << "lbctl: name a slot, or --all\n";
    return 2;
  }
  if (!split->value.empty()) {
    if (chosen->verb == Verb::kPolicy) {
      request.policy = split->value;
    } else {
      int number = -1;
      auto [end, ec] = std::from_chars(split->value.data(), split->value.data() + split->value.size(), number);
      if (ec != std::errc() || end != split->value.data() + split->value.size() || number < 0) {
        std::cerr << "lbctl: '" << split->value << "' is not a "
                  << (chosen->verb == Verb::kScale ? "number of workers" : "slot number") << "\n";
        return 2;
      }
      (chosen->verb == Verb::kScale ? workers : slot) = number;
    }
  }
  const bool controls = !*logs;
  std::string path;
  if (controls) {
    auto found = lbd::ctl::control_socket_for(explicit_path, split->app, control_dir);
    if (!found && chosen && chosen->verb == Verb::kSend && !split->app.empty()) {
      // `lbctl send --all flush caches`: the first word was taken for an app's name.
      fail(found.error().message() + "; if '" + split->app + "' is part of the text, quote it: lbctl send " +
           (request.all ? "--all" : split->value) + " '" + split->app + " " + request.text + "'");
    }
    if (!found) fail(found.error().message());
    path = *found;
  }

  if (chosen) request.verb = chosen->verb;
  if (slot >= 0) request.slot = static_cast<uint32_t>(slot);
  if (timeout > 0) request.timeout_s = timeout;
  request.parallel = static_cast<uint32_t>(std::max(1, parallel));
  request.workers = static_cast<uint32_t>(std::max(0, workers));
  if (slot_or_all && (slot >= 0) == request.all) {
    std::cerr << "lbctl: name a slot, or --all\n";
    return 2;
  }

  if (*logs) {
    logs_options.dir = log_dir.empty() ? lbd::ctl::default_log_dir() : log_dir;
    if (log_worker >= 0) logs_options.worker = static_cast<uint32_t>(log_worker);
    if (auto usage = lbd::ctl::check_logs_options(logs_options); !usage.empty()) {
      std::cerr << "lbctl: " << usage << "\n";
      return 2;
    }
    if (auto shown = lbd::ctl::run_logs(logs_options); !shown) fail(shown.error().message());
    return 0;
  }

  if (*top) {
    lbd::Result<lbd::ctl::TopEnd> end = [&] {
      // Caught here, not deep inside: the screen's destructors restore the terminal on the way.
      try {
        return lbd::ctl::run_top(path);
      } catch (const std::exception& e) {
        return lbd::Result<lbd::ctl::TopEnd>(lbd::Error(std::error_code(), e.what()));
      }
    }();
    if (!end) fail(end.error().message());
    if (!end->note.empty()) std::cerr << "lbctl: " << end->note << "\n";
    if (end->signal) {
      // Die of the signal that ended the screen, as a shell expects of an interrupted command.
      signal(end->signal, SIG_DFL);
      raise(end->signal);
    }
    return 0;
  }

  auto result = lbd::ctl::call_lbd(path, request, [](const std::string& progress) {
    std::cout << progress << std::endl;
  });
  if (!result) fail(result.error().message());
  if (request.verb == Verb::kUpgrade && upgrade_reload) {
    // The new lbd serves the same control socket: the reload is its first request.
    std::cout << lbd::ctl::describe_result(request, *result) << std::endl;
    Request reload_request;
    reload_request.verb = Verb::kReload;
    result = lbd::ctl::call_lbd(path, reload_request, [](const std::string& progress) {
      std::cout << progress << std::endl;
    });
    if (!result) fail(result.error().message());
    request = reload_request;
  }
  if (request.verb == Verb::kSend) {
    // Every worker that did not get it, by slot and pid, and exit 1: a script can tell.
    const auto undelivered = result->value("undelivered", nlohmann::json::array());
    if (json_output) {
      std::cout << result->dump(2) << "\n";
    } else {
      std::cout << lbd::ctl::describe_result(request, *result) << "\n";
      for (const auto& u : undelivered) {
        std::cerr << "lbctl: not delivered to slot " << u.value("slot", -1) << " (pid " << u.value("pid", 0)
                  << "): " << u.value("error", std::string("unknown")) << "\n";
      }
    }
    return undelivered.empty() ? 0 : 1;
  }
  if (request.verb != Verb::kStatus) {
    std::cout << lbd::ctl::describe_result(request, *result) << "\n";
  } else if (json_output) {
    std::cout << result->dump(2) << "\n";
  } else {
    print_status(lbd::control::status_from_json(*result));
  }
  return 0;
}
