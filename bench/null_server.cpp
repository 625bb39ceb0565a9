// The null server: the kernel's ceiling for connection rate on this machine, for bench/compare.
//
// N processes, each pinned to a CPU with its own listener in one SO_REUSEPORT group (the kernel's
// hash spreads connections), each doing nothing but accept4() and close(): no HTTP, no ring, no
// bookkeeping. A server that speaks HTTP on every new connection cannot beat it; how close lbd
// comes says how much its own work per connection costs. Clients use `lbload --connect-only`.
//
//   lbd_null_server --workers 2 --listen 127.0.0.1:0
//   prints "ready: 2 workers serving 127.0.0.1:PORT" and runs until SIGTERM/SIGINT.
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/unique_fd.h"
#include "net/address.h"
#include "net/listener.h"

namespace {

[[noreturn]] void accept_and_close_forever(int listener, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0) std::perror("lbd_null_server: sched_setaffinity");
  for (;;) {
    lbd::UniqueFd connection(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));  // closed at once
    if (connection) {
      continue;
    } else if (errno != EINTR && errno != ECONNABORTED && errno != EMFILE && errno != ENFILE) {
      std::perror("lbd_null_server: accept4");
      _exit(1);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"accept-and-close server: the connection-rate ceiling for bench/compare"};
  unsigned workers = 2;
  std::string listen = "127.0.0.1:0";
  app.add_option("--workers", workers, "processes, one per CPU from 0")->check(CLI::Range(1u, 256u));
  app.add_option("--listen", listen, "ADDR:PORT (port 0 picks a free one)");
  CLI11_PARSE(app, argc, argv);

  lbd::net::Address address;
  try {
    address = lbd::net::Address::parse(listen);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lbd_null_server: %s\n", e.what());
    return 2;
  }
  auto reserved = lbd::net::reserve_port(address);
  if (!reserved) {
    std::fprintf(stderr, "lbd_null_server: %s\n", reserved.error().message().c_str());
    return 1;
  }
  std::vector<lbd::UniqueFd> listeners;
  for (unsigned i = 0; i < workers; ++i) {
    auto listener = lbd::net::listen_tcp(reserved->address, {});
    if (!listener) {
      std::fprintf(stderr, "lbd_null_server: %s\n", listener.error().message().c_str());
      return 1;
    }
    listeners.push_back(std::move(*listener));
  }
  reserved->hold.reset();  // our listeners hold the port now

  // The parent only waits: SIGTERM goes to it, and it passes the signal on to the children.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigprocmask(SIG_BLOCK, &stop_signals, nullptr);

  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  std::vector<pid_t> children;
  for (unsigned i = 0; i < workers; ++i) {
    pid_t pid = fork();
    if (pid < 0) {
      std::perror("lbd_null_server: fork");
      break;
    }
    if (pid == 0) {
      sigprocmask(SIG_UNBLOCK, &stop_signals, nullptr);
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      accept_and_close_forever(listeners[i].get(), static_cast<int>(i % cpus));
    }
    children.push_back(pid);
  }
  listeners.clear();  // each child holds its own copy
  std::printf("ready: %u workers serving %s\n", workers, reserved->address.to_string().c_str());
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  for (pid_t pid : children) kill(pid, SIGKILL);
  for (pid_t pid : children) waitpid(pid, nullptr, 0);
  return 0;
}
