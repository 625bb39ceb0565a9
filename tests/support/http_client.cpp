#include "support/http_client.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <thread>

namespace lbd::test {

namespace {

constexpr size_t kMaxHeadBytes = 1 << 20;
constexpr size_t kMaxFailuresKept = 8;

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

Outcome classify_errno(int err) {
  switch (err) {
    case ECONNREFUSED: return Outcome::kRefused;
    case ECONNRESET:
    case EPIPE: return Outcome::kReset;
    case ETIMEDOUT: return Outcome::kTimeout;
    default: return Outcome::kOtherError;
  }
}

// Waits for `events` on fd: >0 ready, 0 deadline passed, <0 -errno.
int wait_for(int fd, short events, Deadline deadline) {
  while (true) {
    pollfd p{fd, events, 0};
    int n = poll(&p, 1, remaining_ms(deadline));
    if (n > 0) return n;
    if (n == 0) {
      if (Clock::now() >= deadline) return 0;
      continue;  // poll's millisecond rounding woke us a little early
    }
    if (errno != EINTR) return -errno;
  }
}

// Parses "HTTP/1.1 200 OK\r\nName: value\r\n..." (without the blank line) into `out`.
bool parse_head(std::string_view head, Response& out, std::string& error) {
  size_t line_end = head.find("\r\n");
  std::string_view status_line = head.substr(0, line_end);
  if (!status_line.starts_with("HTTP/1.") || status_line.size() < 12 || status_line[8] != ' ') {
    error = "bad status line '" + std::string(status_line.substr(0, 80)) + "'";
    return false;
  }
  std::string_view code = status_line.substr(9, 3);
  auto [end, ec] = std::from_chars(code.data(), code.data() + code.size(), out.status);
  if (ec != std::errc() || end != code.data() + code.size()) {
    error = "bad status code in '" + std::string(status_line) + "'";
    return false;
  }
  out.reason = std::string(trim(status_line.substr(12)));
  std::string_view rest = line_end == std::string_view::npos ? "" : head.substr(line_end + 2);
  while (!rest.empty()) {
    size_t eol = rest.find("\r\n");
    std::string_view line = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? "" : rest.substr(eol + 2);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      error = "bad header line '" + std::string(line.substr(0, 80)) + "'";
      return false;
    }
    out.headers.emplace_back(std::string(line.substr(0, colon)),
                             std::string(trim(line.substr(colon + 1))));
  }
  return true;
}

std::string errno_text(int err) { return std::strerror(err); }

}  // namespace

const char* outcome_name(Outcome outcome) {
  switch (outcome) {
    case Outcome::kOk: return "ok";
    case Outcome::kRefused: return "refused";
    case Outcome::kReset: return "reset";
    case Outcome::kTimeout: return "timeout";
    case Outcome::kClosedBeforeResponse: return "closed before response";
    case Outcome::kBadResponse: return "bad response";
    case Outcome::kOtherError: return "other error";
  }
  return "?";
}

const char* peer_end_name(PeerEnd end) {
  switch (end) {
    case PeerEnd::kClosed: return "closed";
    case PeerEnd::kReset: return "reset";
    case PeerEnd::kStillOpen: return "still open";
    case PeerEnd::kSentData: return "sent data";
  }
  return "?";
}

// --- Response ---------------------------------------------------------------------------------

std::optional<std::string> Response::header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (iequals(n, name)) return v;
  }
  return std::nullopt;
}

int Response::worker() const {
  auto value = header("X-Worker");
  if (!value) return -1;
  int slot = -1;
  auto [end, ec] = std::from_chars(value->data(), value->data() + value->size(), slot);
  if (ec != std::errc() || end != value->data() + value->size()) return -1;
  return slot;
}

bool Response::closes() const {
  auto value = header("Connection");
  return value && iequals(*value, "close");
}

std::string HttpResult::describe() const {
  char ms[32];
  snprintf(ms, sizeof(ms), "%.1f ms", elapsed.count() / 1000.0);
  if (ok()) {
    return std::to_string(response.status) + " from worker " + std::to_string(response.worker()) +
           " in " + ms;
  }
  return std::string(outcome_name(outcome)) + (detail.empty() ? "" : " (" + detail + ")") +
         " after " + ms;
}

// --- requests ---------------------------------------------------------------------------------

std::string http_get(std::string_view target, bool close) {
  return "GET " + std::string(target) + " HTTP/1.1\r\nHost: lbd-test\r\n" +
         (close ? "Connection: close\r\n" : "") + "\r\n";
}

std::string http_head(std::string_view target) {
  return "HEAD " + std::string(target) + " HTTP/1.1\r\nHost: lbd-test\r\n\r\n";
}

std::string http_post(std::string_view target, std::string_view body, bool close) {
  return "POST " + std::string(target) + " HTTP/1.1\r\nHost: lbd-test\r\n" +
         (close ? "Connection: close\r\n" : "") + "Content-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + std::string(body);
}

std::string http_post_chunked(std::string_view target, std::string_view body, size_t chunk) {
  std::string out = "POST " + std::string(target) +
                    " HTTP/1.1\r\nHost: lbd-test\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (size_t at = 0; at < body.size(); at += chunk) {
    std::string_view piece = body.substr(at, chunk);
    char size[16];
    snprintf(size, sizeof(size), "%zx\r\n", piece.size());
    out += size;
    out += piece;
    out += "\r\n";
  }
  out += "0\r\n\r\n";
  return out;
}

// --- HttpConnection ---------------------------------------------------------------------------

HttpConnection HttpConnection::open(const net::Address& address, Deadline deadline,
                                    HttpResult* result, const net::Address* source) {
  auto fail = [&](Outcome outcome, std::string detail) {
    if (result) {
      result->outcome = outcome;
      result->detail = "connect to " + address.to_string() + ": " + std::move(detail);
    }
    return HttpConnection(UniqueFd());
  };
  UniqueFd fd(socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP));
  if (!fd) return fail(Outcome::kOtherError, "socket: " + errno_text(errno));
  int one = 1;
  setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (source && bind(fd.get(), source->sockaddr_ptr(), source->length()) != 0) {
    return fail(Outcome::kOtherError, "bind to " + source->to_string() + ": " + errno_text(errno));
  }
  if (connect(fd.get(), address.sockaddr_ptr(), address.length()) != 0) {
    if (errno != EINPROGRESS) return fail(classify_errno(errno), errno_text(errno));
    int ready = wait_for(fd.get(), POLLOUT, deadline);
    if (ready == 0) return fail(Outcome::kTimeout, "no answer to SYN");
    if (ready < 0) return fail(classify_errno(-ready), errno_text(-ready));
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return fail(classify_errno(err), errno_text(err));
  }
  if (result) result->outcome = Outcome::kOk;
  return HttpConnection(std::move(fd));
}

Outcome HttpConnection::send(std::string_view bytes, Deadline deadline, std::string* detail) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) {
      if (detail) *detail = "send: " + errno_text(errno);
      return classify_errno(errno);
    }
    int ready = wait_for(fd_.get(), POLLOUT, deadline);
    if (ready == 0) {
      if (detail) *detail = "send: " + std::to_string(bytes.size()) + " bytes not accepted in time";
      return Outcome::kTimeout;
    }
    if (ready < 0) return classify_errno(-ready);
  }
  return Outcome::kOk;
}

int HttpConnection::fill(Deadline deadline) {
  char chunk[64 * 1024];
  while (true) {
    ssize_t n = recv(fd_.get(), chunk, sizeof(chunk), MSG_DONTWAIT);
    if (n > 0) {
      buffer_.append(chunk, static_cast<size_t>(n));
      return static_cast<int>(n);
    }
    if (n == 0) return 0;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return -errno;
    int ready = wait_for(fd_.get(), POLLIN, deadline);
    if (ready == 0) return -ETIMEDOUT;
    if (ready < 0) return ready;
  }
}

HttpResult HttpConnection::read_response(Deadline deadline, bool head_request) {
  const auto start = Clock::now();
  HttpResult result;
  auto finish = [&](Outcome outcome, std::string detail = {}) {
    result.outcome = outcome;
    result.detail = std::move(detail);
    result.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
    return result;
  };
  if (!valid()) return finish(Outcome::kOtherError, "not connected");

  std::optional<size_t> head_end;       // where the body starts
  std::optional<size_t> content_length;  // empty: the body runs until the server closes
  while (true) {
    if (!head_end) {
      size_t blank = buffer_.find("\r\n\r\n");
      if (blank != std::string::npos) {
        std::string error;
        if (!parse_head(std::string_view(buffer_).substr(0, blank), result.response, error)) {
          return finish(Outcome::kBadResponse, error);
        }
        head_end = blank + 4;
        const int status = result.response.status;
        if (head_request || status == 204 || status == 304 || status / 100 == 1) {
          content_length = 0;
        } else if (auto te = result.response.header("Transfer-Encoding")) {
          return finish(Outcome::kBadResponse, "unexpected Transfer-Encoding: " + *te);
        } else if (auto cl = result.response.header("Content-Length")) {
          size_t length = 0;
          auto [end, ec] = std::from_chars(cl->data(), cl->data() + cl->size(), length);
          if (ec != std::errc() || end != cl->data() + cl->size()) {
            return finish(Outcome::kBadResponse, "bad Content-Length '" + *cl + "'");
          }
          content_length = length;
        }
      } else if (buffer_.size() > kMaxHeadBytes) {
        return finish(Outcome::kBadResponse, "no end of headers in 1 MiB");
      }
    }
    if (head_end && content_length && buffer_.size() >= *head_end + *content_length) {
      result.response.body = buffer_.substr(*head_end, *content_length);
      buffer_.erase(0, *head_end + *content_length);
      return finish(Outcome::kOk);
    }
    int n = fill(deadline);
    if (n > 0) continue;
    if (n == 0) {
      if (head_end && !content_length) {  // a body delimited by the close
        result.response.body = buffer_.substr(*head_end);
        buffer_.clear();
        return finish(Outcome::kOk);
      }
      return finish(Outcome::kClosedBeforeResponse,
                    buffer_.empty() ? "no bytes" : std::to_string(buffer_.size()) + " bytes of a response");
    }
    if (n == -ETIMEDOUT) {
      return finish(Outcome::kTimeout, buffer_.empty() ? "no bytes"
                                                       : std::to_string(buffer_.size()) + " bytes so far");
    }
    return finish(classify_errno(-n), errno_text(-n));
  }
}

HttpResult HttpConnection::request(std::string_view raw, Deadline deadline) {
  HttpResult result;
  if (Outcome sent = send(raw, deadline, &result.detail); sent != Outcome::kOk) {
    result.outcome = sent;
    return result;
  }
  return read_response(deadline, raw.starts_with("HEAD "));
}

HttpResult HttpConnection::trickle_until_answered(std::string_view piece, std::chrono::milliseconds pace,
                                                  Deadline give_up) {
  while (nothing_received() && Clock::now() < give_up) {
    if (send(piece, after(1s)) != Outcome::kOk) break;
    std::this_thread::sleep_for(pace);
  }
  return read_response(after(2s));
}

bool HttpConnection::nothing_received() {
  if (!buffer_.empty()) return false;
  pollfd p{fd_.get(), POLLIN, 0};
  return poll(&p, 1, 0) == 0;
}

PeerEnd HttpConnection::wait_for_close(Deadline deadline) {
  if (!buffer_.empty()) return PeerEnd::kSentData;
  int n = fill(deadline);
  if (n > 0) return PeerEnd::kSentData;
  if (n == 0) return PeerEnd::kClosed;
  if (n == -ETIMEDOUT) return PeerEnd::kStillOpen;
  return PeerEnd::kReset;
}

void HttpConnection::reset() {
  if (!fd_) return;
  linger abort{1, 0};
  setsockopt(fd_.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof(abort));
  fd_.reset();
}

void HttpConnection::shutdown_write() { ::shutdown(fd_.get(), SHUT_WR); }

// --- one-shot helpers -------------------------------------------------------------------------

HttpResult fetch(const net::Address& address, std::string_view raw_request, Deadline deadline,
                 const net::Address* source) {
  const auto start = Clock::now();
  HttpResult result;
  HttpConnection connection = HttpConnection::open(address, deadline, &result, source);
  if (connection.valid()) result = connection.request(raw_request, deadline);
  result.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
  return result;
}

HttpResult fetch_from_worker(const net::Address& address, int slot, Deadline deadline,
                             unsigned attempts) {
  HttpResult last;
  last.detail = "no attempt made";
  for (unsigned i = 0; i < attempts && Clock::now() < deadline; i++) {
    last = fetch(address, http_get("/", /*close=*/true), deadline);
    if (last.ok() && last.worker() == slot) return last;
  }
  return last;
}

bool has_ipv6_loopback() {
  UniqueFd fd(socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return false;
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_addr = in6addr_loopback;
  return bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
}

// --- LoadReport -------------------------------------------------------------------------------

uint64_t LoadReport::total() const {
  uint64_t sum = 0;
  for (const auto& [outcome, n] : outcomes) sum += n;
  return sum;
}

uint64_t LoadReport::count(Outcome outcome) const {
  auto it = outcomes.find(outcome);
  return it == outcomes.end() ? 0 : it->second;
}

uint64_t LoadReport::status_count(int status) const {
  auto it = statuses.find(status);
  return it == statuses.end() ? 0 : it->second;
}

uint64_t LoadReport::worker_count(int slot) const {
  auto it = workers.find(slot);
  return it == workers.end() ? 0 : it->second;
}

std::string LoadReport::summary() const {
  char head[128];
  snprintf(head, sizeof(head), "%llu requests in %.2f s on %llu connections:",
           static_cast<unsigned long long>(total()), elapsed.count() / 1000.0,
           static_cast<unsigned long long>(connections));
  std::string text = head;
  for (const auto& [outcome, n] : outcomes) {
    text += std::string(" ") + outcome_name(outcome) + " " + std::to_string(n);
  }
  text += "; statuses";
  for (const auto& [status, n] : statuses) text += " " + std::to_string(status) + "=" + std::to_string(n);
  text += "; workers";
  for (const auto& [slot, n] : workers) text += " " + std::to_string(slot) + "=" + std::to_string(n);
  if (server_closes > 0) text += "; " + std::to_string(server_closes) + " answers said Connection: close";
  for (const auto& failure : failures) text += "\n  failure: " + failure;
  return text;
}

void LoadReport::merge(const LoadReport& other) {
  for (const auto& [k, n] : other.outcomes) outcomes[k] += n;
  for (const auto& [k, n] : other.statuses) statuses[k] += n;
  for (const auto& [k, n] : other.workers) workers[k] += n;
  for (const auto& f : other.failures) {
    if (failures.size() < kMaxFailuresKept) failures.push_back(f);
  }
  connections += other.connections;
  server_closes += other.server_closes;
  samples.insert(samples.end(), other.samples.begin(), other.samples.end());
}

// --- LoadGenerator ----------------------------------------------------------------------------

LoadGenerator::LoadGenerator(LoadOptions options)
    : options_(std::move(options)),
      start_(Clock::now()),
      end_(start_ + options_.duration),
      reports_(options_.threads) {
  threads_.reserve(options_.threads);
  for (unsigned i = 0; i < options_.threads; i++) threads_.emplace_back([this, i] { client(i); });
}

LoadGenerator::~LoadGenerator() {
  if (!joined_) stop();
}

bool LoadGenerator::keep_going() {
  if (stop_.load() || Clock::now() >= end_) return false;
  return started_.fetch_add(1) < options_.max_requests;
}

void LoadGenerator::record(LoadReport& report, const HttpResult& r, Deadline connected_at,
                           Deadline started) {
  report.outcomes[r.outcome]++;
  if (r.ok()) {
    report.statuses[r.response.status]++;
    report.workers[r.response.worker()]++;
    if (r.response.closes()) report.server_closes++;
  }
  if ((!r.ok() || r.response.status != 200) && report.failures.size() < kMaxFailuresKept) {
    report.failures.push_back(r.describe());
  }
  if (options_.record_samples) {
    report.samples.push_back(Sample{connected_at, started, r.outcome, r.ok() ? r.response.status : 0,
                                    r.ok() ? r.response.worker() : -1});
  }
}

void LoadGenerator::client(unsigned index) {
  if (options_.nice != 0) {
    // Linux: a thread's own nice value (PRIO_PROCESS with a thread id).
    setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), options_.nice);
  }
  if (options_.keep_alive) return keep_alive_client(index);
  LoadReport& report = reports_[index];
  while (keep_going()) {
    in_flight_++;
    const Deadline started = Clock::now();
    HttpResult r = fetch(options_.address, options_.request, started + options_.request_timeout);
    in_flight_--;
    report.connections++;
    record(report, r, started, started);
    completed_++;
  }
}

// One connection, requests back to back. Nothing is retried: a request that fails is counted,
// and the connection it failed on is given up (the next request opens a new one).
void LoadGenerator::keep_alive_client(unsigned index) {
  LoadReport& report = reports_[index];
  HttpConnection connection;
  Deadline connected_at{};
  while (keep_going()) {
    in_flight_++;
    const Deadline started = Clock::now();
    const Deadline deadline = started + options_.request_timeout;
    HttpResult r;
    if (!connection.valid()) {
      connected_at = started;
      report.connections++;
      connection = HttpConnection::open(options_.address, deadline, &r);
    }
    if (connection.valid()) {
      r = connection.request(options_.request, deadline);
      r.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started);
    }
    in_flight_--;
    record(report, r, connected_at, started);
    if (!r.ok() || r.response.closes()) connection.close();
    completed_++;
  }
}

LoadReport LoadGenerator::join() {
  if (joined_) return final_;
  for (auto& t : threads_) t.join();
  joined_ = true;
  for (const auto& r : reports_) final_.merge(r);
  final_.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start_);
  return final_;
}

LoadReport LoadGenerator::stop() {
  stop_ = true;
  return join();
}

LoadReport LoadGenerator::wait() { return join(); }

}  // namespace lbd::test
