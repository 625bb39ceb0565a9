// The floor server: the least a server can do per HTTP request on a new connection, for
// bench/compare. lbd's cost per new connection is quoted against it.
//
// N processes, each pinned to a CPU with its own listener in one SO_REUSEPORT group (the kernel's
// hash spreads connections), each doing only this, one connection at a time: accept4(), read
// until the end of the request head, write one fixed answer (200, "hello, world\n", the same
// headers lbd's bundled app sends, `Connection: close`), close(). No ring, no parser, no
// bookkeeping, no wait for the next request. A server that answers HTTP on every new connection
// does at least this; how close lbd comes says what its own work per connection costs.
//
// Reading and answering matters: a server that closes with the request unread makes the kernel
// send a reset instead of the FIN handshake, and does no read or write: that flatters the floor.
//
//   lbd_floor_server --workers 2 --listen 127.0.0.1:0
//   prints "ready: 2 workers serving 127.0.0.1:PORT" and runs until SIGTERM/SIGINT.
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/unique_fd.h"
#include "net/address.h"
#include "net/listener.h"

namespace {

// What lbd's bundled app answers to GET / with `Connection: close`, byte for byte but for the
// date (a fixed one: formatting it is work the floor does not do). X-Worker is the process's
// index, as lbd's is the worker's slot, so clients see how the kernel's hash spread them.
std::string answer_of(unsigned worker) {
  return "HTTP/1.1 200 OK\r\nServer: lbd\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
         "Content-Type: text/plain\r\nContent-Length: 13\r\nX-Worker: " +
         std::to_string(worker) + "\r\nConnection: close\r\n\r\nhello, world\n";
}

// Reads until the blank line that ends a request head; false if the client closed, sent nothing
// for a second, or sent more than fits (it gets no answer then).
bool read_request_head(int connection) {
  char buffer[4096];
  size_t filled = 0;
  while (filled < sizeof(buffer)) {
    ssize_t n = read(connection, buffer + filled, sizeof(buffer) - filled);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    filled += static_cast<size_t>(n);
    if (std::string_view(buffer, filled).find("\r\n\r\n") != std::string_view::npos) return true;
  }
  return false;
}

[[noreturn]] void answer_forever(int listener, unsigned worker, int cpu) {
  const std::string answer = answer_of(worker);
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0) std::perror("lbd_floor_server: sched_setaffinity");
  // Accepted sockets inherit the listener's receive timeout: a client that connects and never
  // sends holds this process for a second at most. (accept4 times out too, and just goes on.)
  const timeval timeout{.tv_sec = 1, .tv_usec = 0};
  if (setsockopt(listener, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) != 0) {
    std::perror("lbd_floor_server: SO_RCVTIMEO");
  }
  for (;;) {
    lbd::UniqueFd connection(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
    if (!connection) {
      if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED && errno != EMFILE && errno != ENFILE) {
        std::perror("lbd_floor_server: accept4");
        _exit(1);
      }
      continue;
    }
    // One write of 150 bytes into an empty socket buffer: it goes whole or the client is gone.
    if (read_request_head(connection.get())) (void)!write(connection.get(), answer.data(), answer.size());
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"accept-read-answer-close server: the floor of a new connection's cost, for bench/compare"};
  unsigned workers = 2;
  std::string listen = "127.0.0.1:0";
  app.add_option("--workers", workers, "processes, one per CPU from 0")->check(CLI::Range(1u, 256u));
  app.add_option("--listen", listen, "ADDR:PORT (port 0 picks a free one)");
  CLI11_PARSE(app, argc, argv);

  lbd::net::Address address;
  try {
    address = lbd::net::Address::parse(listen);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lbd_floor_server: %s\n", e.what());
    return 2;
  }
  auto reserved = lbd::net::reserve_port(address);
  if (!reserved) {
    std::fprintf(stderr, "lbd_floor_server: %s\n", reserved.error().message().c_str());
    return 1;
  }
  std::vector<lbd::UniqueFd> listeners;
  for (unsigned i = 0; i < workers; ++i) {
    auto listener = lbd::net::listen_tcp(reserved->address, {});
    if (!listener) {
      std::fprintf(stderr, "lbd_floor_server: %s\n", listener.error().message().c_str());
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
      std::perror("lbd_floor_server: fork");
      break;
    }
    if (pid == 0) {
      sigprocmask(SIG_UNBLOCK, &stop_signals, nullptr);
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      answer_forever(listeners[i].get(), i, static_cast<int>(i % cpus));
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
