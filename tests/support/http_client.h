// A small blocking HTTP/1.1 client for the integration tests: IPv4 and IPv6 loopback, every call
// bounded by a deadline (non-blocking sockets + poll), every failure classified so a test can say
// "zero resets" rather than "no exception".
//
//   fetch(address, http_get("/"), after(2s))          one request on a new connection
//   HttpConnection c = HttpConnection::open(...)       keep-alive: send raw bytes, read responses
//   LoadGenerator / run_load(...)                      bounded load: N threads, each a new connection
//                                                      per request or one keep-alive connection,
//                                                      counts per outcome and worker
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "common/unique_fd.h"
#include "net/address.h"
#include "support/deadline.h"

namespace lbd::test {

// How an exchange ended.
enum class Outcome {
  kOk,                    // a complete, well-formed response
  kRefused,               // connect(): ECONNREFUSED
  kReset,                 // the peer reset the connection (ECONNRESET / EPIPE)
  kTimeout,               // the deadline passed first
  kClosedBeforeResponse,  // orderly close (EOF) before a complete response
  kBadResponse,           // bytes that are not an HTTP/1.1 response
  kOtherError,            // any other socket error (see HttpResult::detail)
};
const char* outcome_name(Outcome outcome);
inline std::ostream& operator<<(std::ostream& out, Outcome outcome) { return out << outcome_name(outcome); }

struct Response {
  int status = 0;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  // The first header with this name (case-insensitive).
  std::optional<std::string> header(std::string_view name) const;
  // X-Worker: the slot that answered, or -1 when the header is missing.
  int worker() const;
  // The server said it will close the connection after this response.
  bool closes() const;
};

struct HttpResult {
  Outcome outcome = Outcome::kOtherError;
  Response response;   // valid when outcome == kOk
  std::string detail;  // what went wrong, for failure messages
  std::chrono::microseconds elapsed{0};

  bool ok() const { return outcome == Outcome::kOk; }
  int status() const { return ok() ? response.status : 0; }
  int worker() const { return ok() ? response.worker() : -1; }
  // "200 from worker 1 in 0.4 ms" or "reset (connection reset by peer)".
  std::string describe() const;
};

// Request builders. Every request carries a Host header; `close` adds "Connection: close".
std::string http_get(std::string_view target, bool close = false);
std::string http_head(std::string_view target);
std::string http_post(std::string_view target, std::string_view body, bool close = false);
// The same POST with the body in chunked transfer encoding, `chunk` bytes per chunk.
std::string http_post_chunked(std::string_view target, std::string_view body, size_t chunk);

// How a connection ended when the test waited for the server to end it.
enum class PeerEnd { kClosed, kReset, kStillOpen, kSentData };
const char* peer_end_name(PeerEnd end);
inline std::ostream& operator<<(std::ostream& out, PeerEnd end) { return out << peer_end_name(end); }

// One client connection. Move-only; the destructor closes it (FIN).
class HttpConnection {
 public:
  HttpConnection() = default;  // not connected
  // Connects with the deadline. On failure the connection is invalid and `result` (when given)
  // says why (kRefused, kTimeout, ...). `source`, when given, is the client's own address (say
  // 127.1.0.7:0: every address of 127.0.0.0/8 is the loopback's, so a test can be many clients).
  static HttpConnection open(const net::Address& address, Deadline deadline,
                             HttpResult* result = nullptr, const net::Address* source = nullptr);

  bool valid() const { return fd_.valid(); }
  int fd() const { return fd_.get(); }

  // Sends every byte or fails (kReset, kTimeout, ...).
  Outcome send(std::string_view bytes, Deadline deadline, std::string* detail = nullptr);
  // Reads one response. `head_request`: the request was HEAD, so no body follows the headers
  // whatever Content-Length says. Bytes after it (pipelined answers) are kept for the next call.
  HttpResult read_response(Deadline deadline, bool head_request = false);
  // send() then read_response().
  HttpResult request(std::string_view raw, Deadline deadline);

  // Nothing has arrived yet (no data, no close): the server has not answered.
  bool nothing_received();
  // A slow client: sends `piece` every `pace` until the server answers (or closes, or the send
  // fails) or `give_up` passes; then reads the answer. The pace is the client's, not a wait.
  HttpResult trickle_until_answered(std::string_view piece, std::chrono::milliseconds pace, Deadline give_up);
  // Waits for the server to close the connection (after any response was read).
  PeerEnd wait_for_close(Deadline deadline);

  // Abortive close: SO_LINGER 0, so the server sees a reset instead of an orderly close.
  void reset();
  // Orderly close of our sending side only (the server reads EOF, we can still read).
  void shutdown_write();
  void close() { fd_.reset(); }

 private:
  explicit HttpConnection(UniqueFd fd) : fd_(std::move(fd)) {}
  // Reads what is available into buffer_: >0 bytes read, 0 EOF, <0 -errno (-ETIMEDOUT: deadline).
  int fill(Deadline deadline);

  UniqueFd fd_;
  std::string buffer_;
};

// One request on a new connection (the usual client of a service), closed afterwards; from
// `source` when given (HttpConnection::open).
HttpResult fetch(const net::Address& address, std::string_view raw_request, Deadline deadline,
                 const net::Address* source = nullptr);

// New connections until one is answered by `slot` (the kernel's hash, or a policy, chooses the
// worker); at most `attempts`. Returns that answer, or the last one seen if no luck.
HttpResult fetch_from_worker(const net::Address& address, int slot, Deadline deadline,
                             unsigned attempts = 200);

// Whether this machine can use IPv6 loopback ([::1]); tests that need it skip without it.
bool has_ipv6_loopback();

// --- bounded load -----------------------------------------------------------------------------

struct LoadOptions {
  net::Address address;
  std::string request = http_get("/", /*close=*/true);
  unsigned threads = 4;                          // clients, each one request at a time
  std::chrono::milliseconds duration{2000};      // stop issuing requests after this long...
  uint64_t max_requests = 20'000;                // ...or after this many, whichever comes first
  std::chrono::milliseconds request_timeout{5000};
  // Each client keeps one connection and sends its requests on it back to back, like wrk.
  // A failed request is counted and never retried: the next request goes on a new connection.
  // An answer with "Connection: close" is not a failure: the client opens a new connection for
  // its next request. `request` must then be a keep-alive request, e.g. http_get("/").
  bool keep_alive = false;
  // Keep one Sample per request (for "which worker answered connections opened after T").
  bool record_samples = false;
  // Run the client threads at this nice value. The clients stand in for other machines: with
  // many of them on a 2-CPU box, a positive value keeps them from starving lbd's own processes
  // (a new worker starting up during a reload gets a fair share of the CPU, not 1/64th of it).
  int nice = 0;
};

// One request as a load client saw it.
struct Sample {
  Deadline connected_at;  // when the client began opening the connection the request went on
  Deadline started;       // when the request was sent
  Outcome outcome = Outcome::kOtherError;
  int status = 0;   // of a kOk answer
  int worker = -1;  // X-Worker of a kOk answer
};

struct LoadReport {
  std::map<Outcome, uint64_t> outcomes;
  std::map<int, uint64_t> statuses;  // of kOk answers
  std::map<int, uint64_t> workers;   // X-Worker of kOk answers
  std::vector<std::string> failures;  // the first few failures, described
  std::chrono::milliseconds elapsed{0};
  uint64_t connections = 0;    // connections opened (or tried)
  uint64_t server_closes = 0;  // answers that said "Connection: close" (keep-alive: not a failure)
  std::vector<Sample> samples;  // when LoadOptions::record_samples

  // Requests that did not end in a 200 (any failure kind, or another status).
  uint64_t failed() const { return total() - status_count(200); }

  uint64_t total() const;
  uint64_t count(Outcome outcome) const;
  uint64_t status_count(int status) const;
  uint64_t worker_count(int slot) const;
  // Every request got a 200.
  bool all_ok() const { return total() > 0 && status_count(200) == total(); }
  // "812 requests in 1.00 s on 812 connections: ok 812; statuses 200=812; workers 0=400 1=412".
  std::string summary() const;
  void merge(const LoadReport& other);
};

// Runs load in the background from construction until stop() (or its duration or count runs
// out). Progress can be watched while it runs.
class LoadGenerator {
 public:
  explicit LoadGenerator(LoadOptions options);
  ~LoadGenerator();
  LoadGenerator(const LoadGenerator&) = delete;
  LoadGenerator& operator=(const LoadGenerator&) = delete;

  uint64_t completed() const { return completed_.load(); }  // requests finished, any outcome
  unsigned in_flight() const { return in_flight_.load(); }  // clients waiting for an answer
  // Lets every client finish its current request, then reports.
  LoadReport stop();
  // Waits for the duration or count to run out, then reports.
  LoadReport wait();

 private:
  void client(unsigned index);
  void keep_alive_client(unsigned index);
  void record(LoadReport& report, const HttpResult& result, Deadline connected_at, Deadline started);
  bool keep_going();
  LoadReport join();

  LoadOptions options_;
  Deadline start_;
  Deadline end_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> started_{0};
  std::atomic<uint64_t> completed_{0};
  std::atomic<unsigned> in_flight_{0};
  std::vector<LoadReport> reports_;  // one per client, merged at the end
  std::vector<std::thread> threads_;
  bool joined_ = false;
  LoadReport final_;
};

inline LoadReport run_load(LoadOptions options) { return LoadGenerator(std::move(options)).wait(); }

// Waits until `more` requests have completed (any outcome) from now on; false at the deadline.
inline bool wait_for_requests(const LoadGenerator& load, uint64_t more, Deadline deadline) {
  const uint64_t target = load.completed() + more;
  return eventually(deadline, [&] { return load.completed() >= target; }, std::chrono::milliseconds(5));
}

}  // namespace lbd::test
