// lbload: an HTTP/1.1 load generator on io_uring, built to cost less CPU per request than wrk
// (epoll) so that on one machine more of the CPU goes to the server being measured. Closed loop
// (N connections, each sending its next request when the last is answered) or open loop (--rate:
// requests at fixed intended times, latency counted from those times, so a stalled server cannot
// hide its stall: no coordinated omission).
//
// Minimum kernel: 6.0. Needs no privileges.
//
//   lbload -c 64 -d 10 http://127.0.0.1:8080/                  keep-alive, closed loop
//   lbload --new-connection -c 64 http://127.0.0.1:8080/       a connection per request
//   lbload --connect-only -c 64 http://127.0.0.1:9000/          connection rate of a null server
//   lbload --rate 5000 -d 30 --mix 95:/,5:/work?us=5000 URL     open loop, two paths
//   lbload --json ...                                           one JSON object on stdout
//
// Exit status: 0 when the run completed (errors are counted, not fatal); 2 with one line on
// stderr for bad arguments; 1 when the run could not be set up.
#include <signal.h>

#include <atomic>
#include <iostream>

#include "common/result.h"
#include "lbload/options.h"
#include "lbload/run.h"

namespace {

// Set from the signal handler (hence a global): stop early and still print the report.
std::atomic<bool> g_stop{false};

void request_stop(int) { g_stop.store(true); }

void install_signal_handlers() {
  // Writes to a socket the server has reset must fail with EPIPE, not kill lbload.
  signal(SIGPIPE, SIG_IGN);
  struct sigaction action{};
  action.sa_handler = request_stop;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  lbd::load::CommandLine command_line;
  try {
    command_line = lbd::load::parse_command_line(argc, argv);
  } catch (const lbd::ConfigError& e) {
    std::cerr << "lbload: " << e.what() << "\n";
    return 2;
  }
  if (command_line.help) {
    std::cout << *command_line.help;
    return 0;
  }
  const lbd::load::Options& options = command_line.options;

  install_signal_handlers();
  auto result = lbd::load::run_load(options, g_stop);
  if (!result) {
    std::cerr << "lbload: " << result.error().message() << "\n";
    return 1;
  }
  if (options.json) {
    std::cout << lbd::load::report_json(options, *result).dump() << "\n";
  } else {
    std::cout << lbd::load::report_table(options, *result);
  }
  return 0;
}
