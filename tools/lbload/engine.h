// One load thread: its own io_uring, its share of the connections, its own statistics (merged at
// the end). Everything is asynchronous and batched: a turn of the loop reaps every completion
// that has arrived, queues the follow-up operations, and hands them all to the kernel in the same
// io_uring_enter that waits for the next completions. In steady keep-alive load a request costs
// two submission entries (send, recv) and one completion, and no system call of its own.
//
// A connection slot's life: socket -> connect -> send -> recv, linked in one chain (the socket
// is created straight into the slot's direct descriptor), then send + recv per request on a
// keep-alive connection. Only failures of socket, connect and send produce completions
// (IOSQE_CQE_SKIP_SUCCESS). Timeouts are per-request deadlines checked by a sweep, not one kernel
// timer per request.
//
// Closed loop: each load slot sends its next request as soon as the last one is answered (or, after
// a failed connect, after a short backoff). Open loop: the thread's k-th request is due at a fixed
// intended time; it goes out on a free slot or an idle keep-alive connection, or waits in order
// until one is available, and its latency counts from the intended time. --hold slots send one
// request per interval on their own keep-alive connections and are counted apart.
#pragma once

#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "lbload/client_ring.h"
#include "lbload/mix.h"
#include "lbload/options.h"
#include "lbload/response_parser.h"
#include "lbload/stats.h"

namespace lbd::load {

// CLOCK_MONOTONIC in nanoseconds: every time lbload measures or schedules.
inline int64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// What every thread shares: the options, the request bytes, the --requests budget and the clock.
struct SharedRun {
  explicit SharedRun(const Options& options);

  // Takes one request from the --requests budget; false once it is spent.
  bool claim() {
    return options.max_requests == 0 ||
           claimed.fetch_add(1, std::memory_order_relaxed) < options.max_requests;
  }

  const Options& options;
  std::vector<std::string> requests;  // the GET for each --mix path
  std::string held_request;           // the GET for the URL's path, sent by --hold connections
  std::atomic<uint64_t> claimed{0};
  std::atomic<bool>* stop = nullptr;  // set by SIGINT/SIGTERM: end the run early
  // CLOCK_MONOTONIC ns; written before the threads are released, read-only afterwards.
  int64_t start_ns = 0;
  int64_t end_ns = 0;
};

// This thread's part of the run.
struct ThreadShare {
  unsigned index = 0;        // 0 .. threads-1
  unsigned connections = 0;  // of --connections
  unsigned held = 0;         // of --hold
  unsigned held_before = 0;  // held connections of the threads before this one (to stagger them)
};

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> create(SharedRun& run, const ThreadShare& share);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // From run.start_ns until run.end_ns, the budget is spent and answered, or a stop.
  Result<void> run();

  const RunStats& stats() const { return stats_; }
  int64_t finished_ns() const { return finished_ns_; }
  const std::string& ring_mode() const { return ring_.mode(); }

 private:
  enum class Role : uint8_t { kLoad, kHeld };
  enum class State : uint8_t {
    kFree,     // no socket, no request
    kIdle,     // a keep-alive connection, no request
    kBusy,     // a request in flight (connecting, sending or receiving)
    kBackoff,  // connecting failed; try again at wake_ns (closed loop only)
  };
  struct Slot {
    State state = State::kFree;
    Role role = Role::kLoad;
    bool has_socket = false;  // a socket sits in this slot's direct descriptor
    uint8_t connect_failures = 0;  // in a row, for the backoff
    uint32_t generation = 0;  // bumped when the socket is closed: older completions are stale
    uint32_t path = 0;        // --mix index of the request in flight
    const std::string* request = nullptr;  // its bytes
    int64_t origin_ns = 0;    // latency is measured from here (the intended time in open loop)
    int64_t deadline_ns = 0;  // origin + --timeout
    int64_t wake_ns = 0;      // kBackoff: reconnect then; held: send the next request then
    ResponseParser parser;
  };

  Engine(SharedRun& run, const ThreadShare& share, ClientRing ring, uint32_t slot_count);

  void reap();
  void complete(uint64_t user_data, int res);
  void on_recv(uint32_t index, int res);
  void on_response(uint32_t index, bool peer_closed);
  void fail(uint32_t index, ErrorKind kind, bool connect_failed);

  void start_request(uint32_t index, uint32_t path, const std::string* request, int64_t origin_ns);
  void start_closed_loop_request(uint32_t index);
  void start_held_request(uint32_t index);
  void end_request(uint32_t index, bool connect_failed);
  void dispatch_due();
  void sweep();

  void open_connection(uint32_t index);
  void submit_send(uint32_t index, unsigned sqe_flags);
  void submit_recv(uint32_t index, bool poll_first);
  void close_socket(uint32_t index, bool cancel_pending);

  // --connect-only slots send nothing; held ones always send their request.
  bool sends_requests(const Slot& slot) const {
    return options_.connection != ConnectionMode::kConnectOnly || slot.role == Role::kHeld;
  }
  uint32_t pick_path() { return static_cast<uint32_t>(options_.mix.choose(random_.next())); }
  int64_t intended_ns(uint64_t k) const;
  int64_t next_wake_ns() const;
  bool finished_early() const;
  void schedule(int64_t at_ns) { next_sweep_ns_ = std::min(next_sweep_ns_, at_ns); }
  char* buffer(uint32_t index) { return buffers_.get() + static_cast<size_t>(index) * kRecvBufferBytes; }

  static constexpr size_t kRecvBufferBytes = 4096;

  SharedRun& run_;
  const Options& options_;
  ThreadShare share_;
  ClientRing ring_;
  uint32_t slot_count_;
  std::unique_ptr<Slot[]> slots_;  // [0, connections): load; then the held ones
  std::unique_ptr<char[]> buffers_;
  RunStats stats_;
  Random random_;
  int64_t timeout_ns_;
  int64_t now_ns_ = 0;
  int64_t next_sweep_ns_ = INT64_MAX;
  int64_t finished_ns_ = 0;
  uint32_t busy_load_ = 0;     // load slots with a request in flight
  bool budget_spent_ = false;  // a claim failed: no more requests from this thread

  // Open loop: the thread's k-th request is due at start + (k * threads + index) / rate.
  double period_ns_ = 0;        // between two of this thread's intended times
  uint64_t due_ = 0;            // requests whose intended time has come (and were claimed)
  uint64_t begun_ = 0;          // of those, sent or expired; [begun_, due_) wait for a connection
  // Keep-alive connections ready for a request, least recently used first, so requests spread
  // over all of them (and over the workers their connections landed on).
  std::deque<uint32_t> idle_;
  std::vector<uint32_t> free_;  // slots without a socket
};

}  // namespace lbd::load
