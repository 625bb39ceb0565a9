// Slow and careless clients for bench/hostile: many TCP connections held cheaply on one thread.
//
//   lbd_slow_clients --slow-head      -n 30000 127.0.0.1:8080   slowloris: half a head, then one
//                                                              byte a --byte-interval, never done
//   lbd_slow_clients --idle-keepalive -n 40000 127.0.0.1:8080   one GET each, answer read, then idle
//   lbd_slow_clients --never-read 127.0.0.1:8080                one connection, --requests small
//                                                              requests one per write(), never reads
//
// Connections come from 127.0.0.2, 127.0.0.3, ... (--per-source each, so the client has ports
// enough), at most --connect-rate a second; the file limit is raised as needed (the hard limit
// only as root with CAP_SYS_RESOURCE: bench/hostile runs several of these when it is low). For each
// connection it notes when the server closed it (EOF or reset, seen with epoll) after it was
// established, and the status of the server's first answer, if any. It stops at --duration, on
// SIGINT/SIGTERM, or once every connection has been opened and the server has closed them all,
// then prints one JSON object on stdout. --progress adds one JSON line a second on stderr.
//
// Standard library and libc only: it shares nothing with lbd, so it cannot share its bugs.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <queue>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace {

enum class Mode { kNone, kSlowHead, kIdleKeepAlive, kNeverRead };

struct Options {
  Mode mode = Mode::kNone;
  std::string target;
  sockaddr_in server{};
  uint32_t connections = 1000;
  double connect_rate = 5000;
  double byte_interval_s = 1.0;
  double duration_s = 30;
  double connect_timeout_s = 10;
  uint32_t per_source = 20000;
  uint32_t first_source = 0x7f000002;  // 127.0.0.2, host order
  uint64_t requests = 100000;
  double stall_s = 5;
  double hold_after_s = 2;
  std::string path = "/";
  std::string close_times;  // file for each closed connection's time to close
  bool progress = false;
};

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

double seconds(int64_t ns) { return static_cast<double>(ns) / 1e9; }
int64_t to_ns(double s) { return static_cast<int64_t>(s * 1e9); }

[[noreturn]] void usage(const char* error) {
  if (error) std::fprintf(stderr, "lbd_slow_clients: %s\n\n", error);
  std::fprintf(error ? stderr : stdout,
               "usage: lbd_slow_clients (--slow-head | --idle-keepalive | --never-read) [options] HOST:PORT\n"
               "  -n, --connections N    connections to open (default 1000; --never-read uses one)\n"
               "  --connect-rate R       new connections a second at most (default 5000)\n"
               "  --byte-interval S      --slow-head: seconds between one connection's bytes (default 1)\n"
               "  --duration S           stop after S seconds at most (default 30)\n"
               "  --connect-timeout S    a connection not established after S has failed (default 10)\n"
               "  --per-source N         connections per source address (default 20000)\n"
               "  --first-source ADDR    first source address, within 127.0.0.0/8 (default 127.0.0.2)\n"
               "  --requests N           --never-read: requests to send (default 100000)\n"
               "  --stall S              --never-read: the server paused us after S without progress (default 5)\n"
               "  --hold-after S         --never-read: keep the connection S after the last request (default 2)\n"
               "  --path PATH            request path (default /)\n"
               "  --close-times FILE     write each server-closed connection's time to close (s), one a line\n"
               "  --progress             one JSON line a second on stderr\n");
  std::exit(error ? 2 : 0);
}

double parse_number(const char* flag, const char* text, double low, double high) {
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(text, &end);
  if (errno || end == text || *end || !std::isfinite(v) || v < low || v > high) {
    char message[160];
    std::snprintf(message, sizeof message, "%s wants a number from %g to %g, not '%s'", flag, low, high, text);
    usage(message);
  }
  return v;
}

bool parse_ipv4(const std::string& text, uint32_t* host_order) {
  in_addr a{};
  if (inet_pton(AF_INET, text.c_str(), &a) != 1) return false;
  *host_order = ntohl(a.s_addr);
  return true;
}

Options parse(int argc, char** argv) {
  Options o;
  int modes = 0;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage((std::string(a) + " wants a value").c_str());
      return argv[++i];
    };
    if (a == "-h" || a == "--help") usage(nullptr);
    else if (a == "--slow-head") o.mode = Mode::kSlowHead, ++modes;
    else if (a == "--idle-keepalive") o.mode = Mode::kIdleKeepAlive, ++modes;
    else if (a == "--never-read") o.mode = Mode::kNeverRead, ++modes;
    else if (a == "-n" || a == "--connections") o.connections = static_cast<uint32_t>(parse_number("-n", value(), 1, 2e6));
    else if (a == "--connect-rate") o.connect_rate = parse_number("--connect-rate", value(), 1, 1e6);
    else if (a == "--byte-interval") o.byte_interval_s = parse_number("--byte-interval", value(), 0.001, 3600);
    else if (a == "--duration") o.duration_s = parse_number("--duration", value(), 0.1, 86400);
    else if (a == "--connect-timeout") o.connect_timeout_s = parse_number("--connect-timeout", value(), 0.01, 3600);
    else if (a == "--per-source") o.per_source = static_cast<uint32_t>(parse_number("--per-source", value(), 1, 60000));
    else if (a == "--first-source") {
      if (!parse_ipv4(value(), &o.first_source)) usage("--first-source wants an IPv4 address");
    } else if (a == "--requests") o.requests = static_cast<uint64_t>(parse_number("--requests", value(), 1, 1e9));
    else if (a == "--stall") o.stall_s = parse_number("--stall", value(), 0.01, 3600);
    else if (a == "--hold-after") o.hold_after_s = parse_number("--hold-after", value(), 0, 3600);
    else if (a == "--path") o.path = value();
    else if (a == "--close-times") o.close_times = value();
    else if (a == "--progress") o.progress = true;
    else if (!a.empty() && a[0] == '-') usage(("unknown option " + std::string(a)).c_str());
    else if (o.target.empty()) o.target = a;
    else usage("one HOST:PORT only");
  }
  if (modes != 1) usage("choose one of --slow-head, --idle-keepalive, --never-read");
  if (o.target.empty()) usage("HOST:PORT missing");
  auto colon = o.target.rfind(':');
  uint32_t host = 0;
  if (colon == std::string::npos || !parse_ipv4(o.target.substr(0, colon), &host)) usage("HOST:PORT wants an IPv4 address");
  double port = parse_number("port", o.target.c_str() + colon + 1, 1, 65535);
  o.server.sin_family = AF_INET;
  o.server.sin_addr.s_addr = htonl(host);
  o.server.sin_port = htons(static_cast<uint16_t>(port));
  if ((host >> 24) != 127) usage("the target must be on loopback (127.0.0.0/8)");
  if (o.mode == Mode::kNeverRead) o.connections = 1;
  uint64_t sources = (static_cast<uint64_t>(o.connections) + o.per_source - 1) / o.per_source;
  if ((o.first_source >> 24) != 127 || ((o.first_source + sources - 1) >> 24) != 127) {
    usage("the source addresses must stay within 127.0.0.0/8");
  }
  return o;
}

// Enough descriptors for every connection; as root the hard limit may be raised too.
uint64_t raise_file_limit(uint64_t needed) {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur >= needed) return limit.rlim_cur;
  rlimit wanted{static_cast<rlim_t>(needed), std::max<rlim_t>(limit.rlim_max, needed)};
  if (setrlimit(RLIMIT_NOFILE, &wanted) != 0) {
    wanted = {limit.rlim_max, limit.rlim_max};
    setrlimit(RLIMIT_NOFILE, &wanted);
    std::fprintf(stderr, "lbd_slow_clients: RLIMIT_NOFILE is %llu, %llu wanted: some connections will fail\n",
                 static_cast<unsigned long long>(wanted.rlim_cur), static_cast<unsigned long long>(needed));
  }
  getrlimit(RLIMIT_NOFILE, &limit);
  return limit.rlim_cur;
}

std::string json_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += c;
    else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else out += c;
  }
  return out;
}

std::string errno_name(int err) {
  switch (err) {
    case ECONNREFUSED: return "refused";
    case ECONNRESET: return "reset";
    case ETIMEDOUT: return "timeout";
    case EADDRNOTAVAIL: return "no_port";
    case EADDRINUSE: return "address_in_use";
    case EMFILE: case ENFILE: return "no_file";
    case ENETUNREACH: case EHOSTUNREACH: return "unreachable";
    default: return std::string("errno_") + std::to_string(err);
  }
}

// "408" from "HTTP/1.1 408 ...", "other" for bytes that are not an HTTP status line.
std::string status_of(std::string_view first) {
  if (first.size() >= 12 && first.substr(0, 7) == "HTTP/1." && first[8] == ' ' &&
      std::isdigit(static_cast<unsigned char>(first[9])) && std::isdigit(static_cast<unsigned char>(first[10])) &&
      std::isdigit(static_cast<unsigned char>(first[11]))) {
    return std::string(first.substr(9, 3));
  }
  return "other";
}

// Length of a complete HTTP response at the start of `data`, or 0 while it is incomplete.
size_t complete_response(const std::string& data) {
  size_t head_end = data.find("\r\n\r\n");
  if (head_end == std::string::npos) return 0;
  size_t body = head_end + 4;
  std::string head = data.substr(0, head_end);
  std::transform(head.begin(), head.end(), head.begin(), [](unsigned char c) { return std::tolower(c); });
  if (head.find("\r\ntransfer-encoding: chunked") != std::string::npos) {
    size_t end = data.find("\r\n0\r\n\r\n", head_end);
    if (end == std::string::npos && data.compare(body, 5, "0\r\n\r\n") == 0) return body + 5;
    return end == std::string::npos ? 0 : end + 7;
  }
  size_t at = head.find("\r\ncontent-length:");
  if (at == std::string::npos) return body;  // no body (204, 304, or the head is all of it)
  size_t length = std::strtoull(head.c_str() + at + 17, nullptr, 10);
  return data.size() >= body + length ? body + length : 0;
}

class Percentiles {
 public:
  void add(double v) { values_.push_back(v); }
  size_t size() const { return values_.size(); }
  bool write(const std::string& file) const {
    FILE* f = std::fopen(file.c_str(), "w");
    if (!f) return false;
    for (double v : values_) std::fprintf(f, "%.4f\n", v);
    return std::fclose(f) == 0;
  }
  std::string json() {
    if (values_.empty()) return "null";
    std::sort(values_.begin(), values_.end());
    auto at = [&](double p) {
      size_t i = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(values_.size())));
      return values_[std::min(values_.size() - 1, i == 0 ? 0 : i - 1)];
    };
    char buf[256];
    std::snprintf(buf, sizeof buf, "{\"min\": %.3f, \"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"p999\": %.3f, \"max\": %.3f}",
                  values_.front(), at(50), at(90), at(99), at(99.9), values_.back());
    return buf;
  }
  // Whole seconds -> count, e.g. {"10": 2999, "11": 1}.
  std::string histogram() const {
    std::map<long, uint64_t> buckets;
    for (double v : values_) buckets[static_cast<long>(std::floor(v))]++;
    std::string out = "{";
    for (auto& [s, n] : buckets) out += (out.size() > 1 ? ", \"" : "\"") + std::to_string(s) + "\": " + std::to_string(n);
    return out + "}";
  }

 private:
  std::vector<double> values_;
};

std::string counts_json(const std::map<std::string, uint64_t>& counts) {
  std::string out = "{";
  for (auto& [k, n] : counts) out += (out.size() > 1 ? ", \"" : "\"") + json_escape(k) + "\": " + std::to_string(n);
  return out + "}";
}

sockaddr_in source_address(const Options& o, uint64_t index) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(o.first_source + static_cast<uint32_t>(index / o.per_source));
  return a;
}

// A non-blocking socket bound to its source address (port chosen at connect(), so a source
// address has the whole ephemeral range per destination), connect() started. -1 and errno on error.
int start_connect(const Options& o, uint64_t index, bool* connected_now) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  sockaddr_in src = source_address(o, index);
  if (bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0 ||
      (connect(fd, reinterpret_cast<const sockaddr*>(&o.server), sizeof o.server) != 0 && errno != EINPROGRESS)) {
    int err = errno;
    close(fd);
    errno = err;
    return -1;
  }
  *connected_now = errno != EINPROGRESS;
  return fd;
}

// --- many connections: --slow-head and --idle-keepalive ------------------------------------------

enum class State : uint8_t { kUnused, kConnecting, kOpen, kIdle, kClosedByServer, kFailed };

struct Conn {
  int fd = -1;
  State state = State::kUnused;
  bool status_seen = false;
  int64_t started_ns = 0;  // connect() called
  int64_t opened_ns = 0;   // established
  std::string in;          // the start of the first answer (--slow-head), the answer (--idle-keepalive)
};

class Crowd {
 public:
  explicit Crowd(const Options& o) : o_(o), conns_(o.connections), rng_(12345) {
    const char* mode = o.mode == Mode::kSlowHead ? "slow-head" : "idle-keepalive";
    mode_ = mode;
    if (o.mode == Mode::kSlowHead) {
      initial_ = "GET " + o.path + " HTTP/1.1\r\nHost: x\r\nX-a: ";
    } else {
      initial_ = "GET " + o.path + " HTTP/1.1\r\nHost: x\r\n\r\n";
    }
  }

  int run() {
    file_limit_ = raise_file_limit(static_cast<uint64_t>(o_.connections) + 64);
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) return std::perror("epoll_create1"), 1;
    start_ns_ = now_ns();
    const int64_t end_ns = start_ns_ + to_ns(o_.duration_s);
    int64_t next_progress = start_ns_ + 1'000'000'000;
    std::vector<epoll_event> events(4096);
    for (;;) {
      int64_t now = now_ns();
      if (g_stop) { ended_ = "signal"; break; }
      if (now >= end_ns) { ended_ = "duration"; break; }
      open_due(now);
      expire_connects(now);
      trickle_due(now);
      if (attempted_ == o_.connections && connecting_ == 0 && open_ == 0) {
        ended_ = "all closed";
        break;
      }
      if (o_.progress && now >= next_progress) {
        progress(now);
        next_progress += 1'000'000'000;
      }
      // Sleep until the next thing to do: a connection due, a byte due, a deadline; 100 ms at most.
      int64_t wake = std::min<int64_t>(end_ns, now + 100'000'000);
      if (attempted_ < o_.connections) wake = std::min(wake, next_connect_ns());
      if (!trickle_.empty()) wake = std::min(wake, trickle_.top().first);
      int timeout_ms = static_cast<int>(std::max<int64_t>(0, (wake - now + 999'999) / 1'000'000));
      int n = epoll_wait(ep_, events.data(), static_cast<int>(events.size()), timeout_ms);
      if (n < 0) {
        if (errno == EINTR) continue;
        return std::perror("epoll_wait"), 1;
      }
      now = now_ns();
      for (int i = 0; i < n; ++i) on_event(events[i].data.u32, events[i].events, now);
    }
    const int64_t stopped = now_ns();
    if (o_.progress) progress(stopped);
    uint64_t still_open = 0, still_connecting = 0;
    for (Conn& c : conns_) {
      if (c.state == State::kOpen || c.state == State::kIdle) still_open++;
      if (c.state == State::kConnecting) still_connecting++;
      if (c.fd >= 0) close(c.fd);
    }
    report(stopped, still_open, still_connecting);
    if (!o_.close_times.empty() && !time_to_close_.write(o_.close_times)) {
      std::perror(o_.close_times.c_str());
      return 1;
    }
    return 0;
  }

 private:
  int64_t next_connect_ns() const {
    return start_ns_ + static_cast<int64_t>(static_cast<double>(attempted_) * 1e9 / o_.connect_rate);
  }

  void open_due(int64_t now) {
    while (attempted_ < o_.connections && next_connect_ns() <= now) {
      uint32_t index = attempted_++;
      Conn& c = conns_[index];
      bool connected_now = false;
      c.started_ns = now;
      c.fd = start_connect(o_, index, &connected_now);
      if (c.fd < 0) {
        fail(index, errno);
        continue;
      }
      epoll_event ev{};
      ev.events = EPOLLOUT;
      ev.data.u32 = index;
      if (epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev) != 0) {
        fail(index, errno);
        continue;
      }
      c.state = State::kConnecting;
      connecting_++;
      pending_.push_back(index);
      if (connected_now) established(index, now);
    }
    if (attempted_ == o_.connections && all_attempted_ns_ == 0) all_attempted_ns_ = now;
  }

  void fail(uint32_t index, int err) {
    Conn& c = conns_[index];
    if (c.state == State::kConnecting) connecting_--;
    if (c.fd >= 0) close(c.fd);
    c.fd = -1;
    c.state = State::kFailed;
    failures_[errno_name(err)]++;
    failed_++;
  }

  void expire_connects(int64_t now) {
    const int64_t limit = to_ns(o_.connect_timeout_s);
    while (!pending_.empty()) {
      Conn& c = conns_[pending_.front()];
      if (c.state != State::kConnecting) {
        pending_.pop_front();
      } else if (now - c.started_ns >= limit) {
        fail(pending_.front(), ETIMEDOUT);
        pending_.pop_front();
      } else {
        break;
      }
    }
  }

  void established(uint32_t index, int64_t now) {
    Conn& c = conns_[index];
    connecting_--;
    c.state = State::kOpen;
    c.opened_ns = now;
    opened_++;
    open_++;
    if (open_ > peak_open_) {
      peak_open_ = open_;
      peak_open_ns_ = now;
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u32 = index;
    epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
    ssize_t n = send(c.fd, initial_.data(), initial_.size(), MSG_NOSIGNAL);
    if (n != static_cast<ssize_t>(initial_.size())) {
      // A few dozen bytes into an empty socket buffer: only a closed connection refuses them.
      on_readable(index, now);
      if (c.state == State::kOpen) server_closed(index, now, "reset");
      return;
    }
    if (o_.mode == Mode::kSlowHead) {
      // First byte at a random point of the first interval, so that bytes do not come in waves.
      std::uniform_real_distribution<double> jitter(0.0, o_.byte_interval_s);
      trickle_.emplace(now + to_ns(jitter(rng_)), index);
    }
  }

  void trickle_due(int64_t now) {
    const int64_t interval = to_ns(o_.byte_interval_s);
    while (!trickle_.empty() && trickle_.top().first <= now) {
      uint32_t index = trickle_.top().second;
      trickle_.pop();
      Conn& c = conns_[index];
      if (c.state != State::kOpen) continue;
      ssize_t n = send(c.fd, "a", 1, MSG_NOSIGNAL);
      if (n == 1) {
        bytes_trickled_++;
      } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
        on_readable(index, now);
        if (c.state == State::kOpen) server_closed(index, now, "reset");
        continue;
      }
      trickle_.emplace(now + interval, index);
    }
  }

  void on_event(uint32_t index, uint32_t events, int64_t now) {
    Conn& c = conns_[index];
    if (c.state == State::kConnecting) {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) return fail(index, err);
      if (events & EPOLLOUT) established(index, now);
      return;
    }
    if (c.state == State::kOpen || c.state == State::kIdle) on_readable(index, now);
  }

  // Reads what the server sent: notes the first answer's status, completes an --idle-keepalive
  // answer, and sees the server's close (EOF, or a reset).
  void on_readable(uint32_t index, int64_t now) {
    Conn& c = conns_[index];
    char buf[4096];
    for (;;) {
      ssize_t n = recv(c.fd, buf, sizeof buf, 0);
      if (n > 0) {
        bytes_received_ += static_cast<uint64_t>(n);
        if (o_.mode == Mode::kIdleKeepAlive && c.state == State::kOpen) {
          c.in.append(buf, static_cast<size_t>(n));
          note_status(c);
          if (complete_response(c.in)) {
            c.state = State::kIdle;
            answered_++;
            std::string().swap(c.in);
          }
        } else if (!c.status_seen) {
          c.in.append(buf, std::min<size_t>(static_cast<size_t>(n), 16 - std::min<size_t>(16, c.in.size())));
          note_status(c);
        } else if (c.state == State::kIdle) {
          unsolicited_bytes_ += static_cast<uint64_t>(n);
        }
        continue;
      }
      if (n == 0) return server_closed(index, now, "eof");
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR) continue;
      return server_closed(index, now, errno == ECONNRESET ? "reset" : errno_name(errno));
    }
  }

  void note_status(Conn& c) {
    if (c.status_seen) return;
    if (c.in.size() >= 12 || c.in.find('\n') != std::string::npos) {
      c.status_seen = true;
      statuses_[status_of(c.in)]++;
    }
  }

  void server_closed(uint32_t index, int64_t now, const std::string& how) {
    Conn& c = conns_[index];
    if (!c.status_seen) {
      c.status_seen = true;
      statuses_[c.in.empty() ? "none" : status_of(c.in)]++;
    }
    close(c.fd);  // also leaves the epoll set
    c.fd = -1;
    c.state = State::kClosedByServer;
    std::string().swap(c.in);
    open_--;
    closed_by_server_++;
    closes_[how]++;
    time_to_close_.add(seconds(now - c.opened_ns));
    last_close_ns_ = now;
  }

  void progress(int64_t now) {
    std::fprintf(stderr,
                 "{\"t\": %.3f, \"attempted\": %u, \"connecting\": %llu, \"open\": %llu, \"opened\": %llu, "
                 "\"failed\": %llu, \"closed_by_server\": %llu, \"answered\": %llu}\n",
                 seconds(now - start_ns_), attempted_, static_cast<unsigned long long>(connecting_),
                 static_cast<unsigned long long>(open_), static_cast<unsigned long long>(opened_),
                 static_cast<unsigned long long>(failed_), static_cast<unsigned long long>(closed_by_server_),
                 static_cast<unsigned long long>(answered_));
    std::fflush(stderr);
  }

  void report(int64_t stopped, uint64_t still_open, uint64_t still_connecting) {
    rusage self{};
    getrusage(RUSAGE_SELF, &self);
    const uint64_t sources = (static_cast<uint64_t>(o_.connections) + o_.per_source - 1) / o_.per_source;
    auto at = [&](int64_t ns) { return ns ? seconds(ns - start_ns_) : -1.0; };
    std::printf(
        "{\"mode\": \"%s\", \"target\": \"%s\", \"connections\": %u, \"connect_rate\": %g, \"byte_interval_s\": %g,\n"
        " \"duration_limit_s\": %g, \"connect_timeout_s\": %g, \"sources\": %llu, \"per_source\": %u,\n"
        " \"attempted\": %u, \"opened\": %llu, \"failed_to_connect\": %llu, \"failures\": %s,\n"
        " \"closed_by_server\": %llu, \"closes\": %s, \"still_open_at_end\": %llu, \"still_connecting_at_end\": %llu,\n"
        " \"answered\": %llu, \"first_answer\": %s, \"unsolicited_bytes\": %llu, \"bytes_received\": %llu,\n"
        " \"time_to_close_s\": %s, \"time_to_close_histogram_s\": %s,\n"
        " \"peak_open\": %llu, \"peak_open_at_s\": %.3f, \"all_attempted_at_s\": %.3f, \"last_close_at_s\": %.3f,\n"
        " \"bytes_trickled\": %llu, \"ended\": \"%s\", \"duration_s\": %.3f, \"rlimit_nofile\": %llu,\n"
        " \"client_max_rss_kib\": %ld, \"client_cpu_s\": %.3f}\n",
        mode_, json_escape(o_.target).c_str(), o_.connections, o_.connect_rate, o_.byte_interval_s, o_.duration_s,
        o_.connect_timeout_s, static_cast<unsigned long long>(sources), o_.per_source, attempted_,
        static_cast<unsigned long long>(opened_), static_cast<unsigned long long>(failed_), counts_json(failures_).c_str(),
        static_cast<unsigned long long>(closed_by_server_), counts_json(closes_).c_str(),
        static_cast<unsigned long long>(still_open), static_cast<unsigned long long>(still_connecting),
        static_cast<unsigned long long>(answered_), counts_json(statuses_).c_str(),
        static_cast<unsigned long long>(unsolicited_bytes_), static_cast<unsigned long long>(bytes_received_),
        time_to_close_.json().c_str(), time_to_close_.histogram().c_str(), static_cast<unsigned long long>(peak_open_),
        at(peak_open_ns_), at(all_attempted_ns_), at(last_close_ns_), static_cast<unsigned long long>(bytes_trickled_),
        ended_, seconds(stopped - start_ns_), static_cast<unsigned long long>(file_limit_), self.ru_maxrss,
        static_cast<double>(self.ru_utime.tv_sec + self.ru_stime.tv_sec) +
            static_cast<double>(self.ru_utime.tv_usec + self.ru_stime.tv_usec) / 1e6);
    std::fflush(stdout);
  }

  const Options& o_;
  const char* mode_;
  std::string initial_;
  std::vector<Conn> conns_;
  std::deque<uint32_t> pending_;                       // connecting, oldest first
  using Due = std::pair<int64_t, uint32_t>;  // (when, connection)
  std::priority_queue<Due, std::vector<Due>, std::greater<Due>> trickle_;  // earliest first
  std::mt19937_64 rng_;
  int ep_ = -1;
  int64_t start_ns_ = 0, peak_open_ns_ = 0, all_attempted_ns_ = 0, last_close_ns_ = 0;
  uint32_t attempted_ = 0;
  uint64_t connecting_ = 0, open_ = 0, opened_ = 0, failed_ = 0, closed_by_server_ = 0, answered_ = 0;
  uint64_t peak_open_ = 0, bytes_trickled_ = 0, unsolicited_bytes_ = 0, bytes_received_ = 0, file_limit_ = 0;
  std::map<std::string, uint64_t> failures_, closes_, statuses_;
  Percentiles time_to_close_;
  const char* ended_ = "?";
};

// --- one connection that never reads: --never-read ---------------------------------------------

int never_read(const Options& o) {
  const int64_t start = now_ns();
  const int64_t end = start + to_ns(o.duration_s);
  const std::string request = "GET " + o.path + " HTTP/1.1\r\nHost: x\r\n\r\n";
  uint64_t sent = 0, bytes = 0, partial_writes = 0, blocked = 0;
  int64_t last_progress = start, ended_at = 0;
  std::string ended = "?", how = "";
  bool connected = false;
  int next_progress_s = 1;
  auto print_progress = [&](int64_t now) {
    if (!o.progress) return;
    std::fprintf(stderr, "{\"t\": %.3f, \"sent\": %llu}\n", seconds(now - start), static_cast<unsigned long long>(sent));
    std::fflush(stderr);
  };

  bool connected_now = false;
  int fd = start_connect(o, 0, &connected_now);
  if (fd < 0) {
    ended = "connect failed", how = errno_name(errno);
  } else {
    pollfd p{fd, POLLOUT, 0};
    int ready = connected_now ? 1 : poll(&p, 1, static_cast<int>(o.connect_timeout_s * 1000));
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (ready <= 0 || err) {
      ended = "connect failed", how = errno_name(ready <= 0 ? ETIMEDOUT : err);
    } else {
      connected = true;
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
  }
  last_progress = now_ns();
  size_t offset = 0;  // into the request being written
  while (connected) {
    int64_t now = now_ns();
    if (g_stop) { ended = "signal"; break; }
    if (now >= end) { ended = "duration"; break; }
    if (now >= start + next_progress_s * 1'000'000'000LL) {
      print_progress(now);
      next_progress_s++;
    }
    if (sent == o.requests) {
      // All sent: hold the connection (still not reading) and see whether the server closes it.
      if (now - last_progress >= to_ns(o.hold_after_s)) { ended = "completed"; break; }
      pollfd p{fd, POLLRDHUP, 0};
      if (poll(&p, 1, 50) > 0 && (p.revents & (POLLRDHUP | POLLERR | POLLHUP))) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        ended = "closed after completing", how = err ? errno_name(err) : "eof";
        break;
      }
      continue;
    }
    // One request per write(); TCP_NODELAY sends each as soon as it is written.
    int burst = 0;
    for (; sent < o.requests && burst < 1024; ++burst) {
      ssize_t n = send(fd, request.data() + offset, request.size() - offset, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        bytes += static_cast<uint64_t>(n);
        offset += static_cast<size_t>(n);
        if (offset < request.size()) {
          partial_writes++;
          continue;
        }
        offset = 0;
        sent++;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      ended = "closed", how = errno_name(n < 0 ? errno : EPIPE);
      break;
    }
    if (ended == "closed") break;
    now = now_ns();
    if (burst > 0) last_progress = now;
    if (burst == 1024 || sent == o.requests) continue;
    // The socket buffer is full: wait for room, for the server's close, or for the stall limit.
    blocked++;
    if (now - last_progress >= to_ns(o.stall_s)) { ended = "paused"; break; }
    pollfd p{fd, POLLOUT | POLLRDHUP, 0};
    if (poll(&p, 1, 100) > 0 && (p.revents & (POLLRDHUP | POLLERR | POLLHUP))) {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      ended = "closed", how = err ? errno_name(err) : "eof";
      break;
    }
  }
  ended_at = now_ns();
  int unread = 0;
  if (fd >= 0) {
    ioctl(fd, FIONREAD, &unread);
    close(fd);
  }
  print_progress(ended_at);
  rusage self{};
  getrusage(RUSAGE_SELF, &self);
  std::printf(
      "{\"mode\": \"never-read\", \"target\": \"%s\", \"requests_target\": %llu, \"request_bytes\": %zu,\n"
      " \"requests_sent\": %llu, \"bytes_sent\": %llu, \"partial_writes\": %llu, \"times_blocked\": %llu,\n"
      " \"ended\": \"%s\", \"close\": \"%s\", \"ended_at_s\": %.3f, \"last_write_at_s\": %.3f, \"stall_s\": %g,\n"
      " \"unread_answer_bytes_at_end\": %d, \"client_max_rss_kib\": %ld}\n",
      json_escape(o.target).c_str(), static_cast<unsigned long long>(o.requests), request.size(),
      static_cast<unsigned long long>(sent), static_cast<unsigned long long>(bytes),
      static_cast<unsigned long long>(partial_writes), static_cast<unsigned long long>(blocked), ended.c_str(),
      how.c_str(), seconds(ended_at - start), seconds(last_progress - start), o.stall_s, unread, self.ru_maxrss);
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options = parse(argc, argv);
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);  // no SA_RESTART: epoll_wait and poll return at once
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  if (options.mode == Mode::kNeverRead) return never_read(options);
  Crowd crowd(options);
  return crowd.run();
}
