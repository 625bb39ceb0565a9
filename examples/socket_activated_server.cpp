// A small HTTP server written the systemd way, to show what `lbd run` expects of any program
// (and to test it): it knows nothing of lbd.
//
//   - It takes its listening socket from its environment instead of binding one: fd 3, when
//     LISTEN_FDS=1 and LISTEN_PID is its own pid (sd_listen_fds(3)). lbd gives each worker its
//     own listener of one SO_REUSEPORT group this way; systemd socket activation works the same.
//   - It says READY=1 on NOTIFY_SOCKET (sd_notify(3)) once it serves, so lbd steers to it only
//     then (a reload waits for this before draining the old worker).
//   - On SIGTERM it stops accepting (closing its listener hands the queued connections to other
//     workers), finishes the requests in progress, and exits.
//
//   GET /            "hello from worker N" (N = LB_WORKER_ID), X-Worker: N
//   GET /grow?mb=N   keeps N more MiB of memory (to try --max-memory)
//
// Build: part of the CMake build (examples/). Run: lbd run -i 2 -- build/socket_activated_server
// Flags: --ready-after-ms N: wait this long before serving and READY=1 (a slow start);
//        --no-notify: never send READY=1 (like most programs: lbd sees it accept instead);
//        --accept-delay-ms N: pause this long after each accept (a server that falls behind).
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace {

constexpr int kListenFdsStart = 3;

void notify(const char* message) {
  const char* path = getenv("NOTIFY_SOCKET");
  if (!path || (path[0] != '/' && path[0] != '@')) return;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const size_t len = strnlen(path, sizeof(addr.sun_path) - 1);
  memcpy(addr.sun_path, path, len);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';
  sendto(fd, message, strlen(message), 0, reinterpret_cast<sockaddr*>(&addr),
         static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len));
  close(fd);
}

// sd_listen_fds(): the number of listeners passed to this very process (0 if none).
int listen_fds() {
  const char* pid = getenv("LISTEN_PID");
  const char* fds = getenv("LISTEN_FDS");
  if (!pid || !fds || atol(pid) != static_cast<long>(getpid())) return 0;
  return atoi(fds);
}

struct Connection {
  std::string in;
  std::string out;
};

std::string answer(const std::string& request_line, const std::string& worker,
                   std::vector<std::unique_ptr<char[]>>& kept) {
  std::string body = "hello from worker " + worker + "\n";
  const size_t grow = request_line.find("GET /grow?mb=");
  if (grow != std::string::npos) {
    const long mb = atol(request_line.c_str() + grow + strlen("GET /grow?mb="));
    for (long i = 0; i < mb; i++) {
      kept.emplace_back(new char[1 << 20]);
      memset(kept.back().get(), 1, 1 << 20);  // touched: resident
    }
    body = "kept " + std::to_string(kept.size()) + " MiB\n";
  }
  return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Worker: " + worker +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

}  // namespace

int main(int argc, char** argv) {
  long ready_after_ms = 0, accept_delay_ms = 0;
  bool notify_ready = true;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--ready-after-ms") == 0 && i + 1 < argc) ready_after_ms = atol(argv[i + 1]);
    if (strcmp(argv[i], "--accept-delay-ms") == 0 && i + 1 < argc) accept_delay_ms = atol(argv[i + 1]);
    if (strcmp(argv[i], "--no-notify") == 0) notify_ready = false;
  }
  if (listen_fds() < 1) {
    fprintf(stderr, "socket_activated_server: no listening socket passed (LISTEN_FDS); run it under "
                    "lbd run or a systemd socket unit\n");
    return 1;
  }
  int listener = kListenFdsStart;
  const std::string worker = getenv("LB_WORKER_ID") ? getenv("LB_WORKER_ID") : "0";

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  const int signals = signalfd(-1, &mask, SFD_CLOEXEC);
  signal(SIGPIPE, SIG_IGN);

  if (ready_after_ms > 0) {
    timespec delay{ready_after_ms / 1000, (ready_after_ms % 1000) * 1'000'000};
    nanosleep(&delay, nullptr);
  }
  printf("worker %s (pid %d) serving on fd %d\n", worker.c_str(), getpid(), listener);
  fflush(stdout);
  if (notify_ready) notify("READY=1");

  std::map<int, Connection> connections;
  std::vector<std::unique_ptr<char[]>> kept;
  bool stopping = false;
  while (!stopping || !connections.empty()) {
    std::vector<pollfd> fds{{signals, POLLIN, 0}};
    if (listener >= 0) fds.push_back({listener, POLLIN, 0});
    for (auto& [fd, c] : connections) fds.push_back({fd, static_cast<short>(c.out.empty() ? POLLIN : POLLOUT), 0});
    if (poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) return 1;
    for (const pollfd& p : fds) {
      if (!p.revents) continue;
      if (p.fd == signals) {
        signalfd_siginfo info;
        if (read(signals, &info, sizeof(info)) > 0 && !stopping) {
          stopping = true;
          printf("worker %s: SIGTERM, finishing %zu connections\n", worker.c_str(), connections.size());
          fflush(stdout);
          close(listener);  // what is still queued goes to the other workers
          listener = -1;
        }
      } else if (p.fd == listener) {
        int client = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (client >= 0) connections[client] = {};
        if (client >= 0 && accept_delay_ms > 0) {
          timespec pause{accept_delay_ms / 1000, (accept_delay_ms % 1000) * 1'000'000};
          nanosleep(&pause, nullptr);
        }
      } else {
        Connection& c = connections[p.fd];
        bool done = false;
        if (!c.out.empty()) {
          ssize_t n = write(p.fd, c.out.data(), c.out.size());
          if (n > 0) c.out.erase(0, static_cast<size_t>(n));
          done = n < 0 && errno != EAGAIN;
        } else {
          char buffer[4096];
          ssize_t n = read(p.fd, buffer, sizeof(buffer));
          if (n <= 0) {
            done = n == 0 || errno != EAGAIN;
          } else {
            c.in.append(buffer, static_cast<size_t>(n));
            size_t end;
            while ((end = c.in.find("\r\n\r\n")) != std::string::npos) {
              c.out += answer(c.in.substr(0, c.in.find("\r\n")), worker, kept);
              c.in.erase(0, end + 4);
            }
          }
        }
        // Stopping: an idle keep-alive connection is closed; one mid-request gets its answer.
        if (done || (stopping && c.in.empty() && c.out.empty())) {
          close(p.fd);
          connections.erase(p.fd);
        }
      }
    }
  }
  printf("worker %s: stopped\n", worker.c_str());
  return 0;
}
