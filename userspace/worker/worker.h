// The worker runtime: one process, one io_uring event loop, accepting only on its own listener.
//
// Per connection: multishot accept straight into the ring's fixed-file table, a multishot recv
// fed from a provided-buffer ring, HTTP/1.1 parsing (llhttp) with keep-alive and pipelining,
// responses batched into one send per turn of the loop. The loop never blocks: slow answers use
// io_uring timeouts (Exchange::respond_after).
//
// Load is published into this worker's entry of the shared slot table with plain atomic stores
// after every completion: open connections (one LoadToken per connection), accepted count, and a
// heartbeat (also stamped every 10 ms when idle) so the steering program can tell a stalled
// worker from an idle one. Each answered request's duration goes into the process's own stats
// block (metrics/worker_stats.h), which the supervisor serves as /metrics.
//
// Pressure (docs/ARCHITECTURE.md, section 11). A client may not hold a slot of the connection table
// for free: a head must arrive within --header-timeout of its first byte (of the accept, for a
// new connection), a body at --min-body-rate, and bodies held in memory share one budget. Past 90%
// of the table the worker closes idle connections, oldest first, then the oldest still sending a
// head, and accepts one connection at a time; with no slot left it stops accepting and marks its
// slot-table entry full, so steering sends new connections to a worker with room.
//
// Draining. The supervisor sends kDrain (mode, timeout) on the status channel (worker/channel.h;
// SIGTERM, or the supervisor going away, means a drain in mode stop with the spec's timeout). In every mode the
// worker stops accepting, answers what is in flight with "Connection: close", and exits when it
// holds no connection or at the timeout. The modes differ only in idle keep-alive connections:
//   stop      closed at once (lbd is going away; nobody would serve their next request)
//   drain     kept until their next request, answered with "Connection: close", or the timeout
//   handover  passed, still open, to the worker that replaces this one in its slot (the socket
//             comes with the command); the client never notices. Falls back to `drain`.
#pragma once

#include <sys/signalfd.h>

#include <array>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "metrics/worker_stats.h"
#include "steering/slot_table.h"
#include "worker/channel.h"
#include "worker/connection.h"
#include "worker/handler.h"
#include "worker/ring.h"
#include "worker/user_data.h"
#include "worker/worker_spec.h"

namespace lbd {

class Worker {
 public:
  // Maps the slot table, sets up the ring, buffers and signal handling. Does not accept yet.
  // `service.on_message`, if set, receives the operators' messages (kMessage) on the loop.
  static Result<std::unique_ptr<Worker>> create(const WorkerSpec& spec, Service service);
  ~Worker();

  // Tells the supervisor the worker is ready, then serves until drained.
  Result<void> run();

 private:
  friend class ConnectionExchange;

  // A socket on which other processes pass us connections.
  struct Inbox {
    int fd = -1;
    bool counts_as_accept = false;  // handoff: these are new connections, not handed-over ones
    bool open = true;
  };

  Worker(const WorkerSpec& spec, Service service, SlotTable table, WorkerStatsBlock stats, Ring ring);

  // Submission helpers.
  void arm_accept(uint32_t listener, bool multishot);
  void arm_recv(Connection& c);
  void arm_signal_read();
  void arm_poll(int fd, Op op, uint32_t index);
  void cancel(uint64_t user_data);

  // Completion handlers, one per Op.
  void dispatch(const io_uring_cqe* cqe);
  void on_accept(uint32_t listener, const io_uring_cqe* cqe);
  void on_recv(const UserData& ud, const io_uring_cqe* cqe);
  void on_send(Connection& c, int result);
  void on_timer(Connection& c, int result);
  void on_close(Connection& c, int result);
  void on_signal(int result);
  void on_status(int result);
  void on_inbox_ready(uint32_t inbox, int result);
  void on_installed(uint32_t entry, int result);
  void on_exported(Connection& c, int result);

  // Connection lifecycle.
  Connection* lookup(const UserData& ud);
  void open_connection(uint32_t index, bool fresh);
  void on_data(Connection& c, std::string_view data);
  void process(Connection& c, std::string_view data);
  void resume_input(Connection& c);
  void answer(Connection& c);
  void respond(Connection& c, int status, std::string_view body, std::string_view content_type,
               std::string_view extra_headers);
  void respond_error(Connection& c, int status);
  void flush(Connection& c);
  void submit_send(Connection& c);
  void after_last_send(Connection& c);
  void on_peer_closed(Connection& c);
  void start_linger(Connection& c);
  void begin_close(Connection& c);
  void maybe_finish_close(Connection& c);
  void release(Connection& c);

  // Draining and handing over.
  void start_drain(DrainMode mode, std::chrono::milliseconds timeout, UniqueFd successor);
  void dismiss_idle(Connection& c);
  void begin_handover(Connection& c);
  void finish_handover(Connection& c);
  void send_handovers();

  // Loop housekeeping.
  void refresh_clock();
  void publish();
  void housekeeping();
  void expire_idle_connections();
  void return_memory();
  void return_buffer_pages();
  void enforce_deadlines(Connection& c);
  // Pressure: how accepts are armed for the table's fill, and room made near the top.
  enum class AcceptPace { kMultishot, kOneAtATime, kPaused };
  void pace_accepts();
  void shed(size_t wanted);
  size_t shed_batch() const;
  void report_full();
  void reconcile_queue();
  bool idle(const Connection& c) const;

  WorkerSpec spec_;
  Handler handler_;
  MessageHandler on_message_;  // may be empty
  SlotTable table_;
  lbd_slot* my_slot_;
  WorkerStatsBlock stats_block_;
  WorkerStats* stats_;                // stats_block_'s memory, written on every answer
  uint32_t pid_;
  Ring ring_;                         // declared before the buffers: destroyed after them
  std::optional<BufferRing> buffers_;
  BodyBudget body_budget_;            // before the connections, whose parsers charge it
  ConnectionTable connections_;
  uint32_t connection_capacity_ = 0;
  std::vector<uint32_t> live_;        // indices of open connections, for the timeout scan
  bool can_export_fds_ = false;       // IORING_OP_FIXED_FD_INSTALL (Linux 6.8): handover works

  UniqueFd signal_fd_;
  signalfd_siginfo signal_info_{};

  std::vector<Inbox> inboxes_;
  // Received fds waiting to become fixed files.
  static constexpr uint32_t kInstallEntries = 1024;
  struct Install {
    int slot = -1;  // in: the fd; out: the fixed-file index the kernel chose
    UniqueFd fd;    // the received fd, closed once installed
    bool counts_as_accept = false;
  };
  std::array<Install, kInstallEntries> installs_{};
  std::vector<uint32_t> free_installs_;

  std::vector<bool> accept_armed_;
  std::vector<bool> accept_multishot_;  // the armed accept is multishot (else one connection)
  std::vector<bool> accept_cancelled_;  // a cancel of the armed accept is on its way
  std::vector<bool> listener_stopped_;  // the supervisor closed or shut down this listener
  bool accept_retry_ = false;  // an accept ended with a transient error: re-armed by housekeeping
  AcceptPace pace_ = AcceptPace::kMultishot;
  uint32_t shed_at_ = 0;           // live connections at which shedding begins (90%)
  uint32_t one_at_a_time_at_ = 0;  // ... and from which accepts take one connection at a time
  uint32_t closing_ = 0;       // connections closing: in live_, but already given up
  uint64_t shed_total_ = 0;
  uint64_t shed_since_log_ = 0;
  uint64_t shed_logged_ns_ = 0;
  uint64_t full_since_ns_ = 0; // when the table last became full (0: it is not)
  uint64_t full_logged_ns_ = 0;
  uint64_t full_episodes_ = 0;  // times the table filled since the last log line
  bool draining_ = false;
  bool drain_forced_ = false;
  DrainMode drain_mode_ = DrainMode::kStop;
  UniqueFd successor_;         // kHandover: where idle connections go
  std::deque<UniqueFd> handover_queue_;  // exported, waiting for room in the successor's inbox
  bool handover_poll_armed_ = false;
  bool publishing_ = true;     // false once a successor owns our slot-table entry
  uint64_t drain_deadline_ns_ = 0;
  uint64_t now_ns_ = 0;
  uint64_t next_housekeeping_ns_ = 0;
  uint64_t last_turn_ns_ = 0;  // when the loop last turned: a long gap means it was paused
  uint64_t last_reconcile_ns_ = 0;
  uint64_t last_read_ns_ = 0;         // a receive buffer was last filled
  bool buffers_resident_ = false;     // ... and its page not given back since
  int64_t previous_excess_ = 0;

  uint64_t accepted_ = 0;
  uint64_t requests_ = 0;
  uint32_t open_ = 0;
  uint32_t inflight_ = 0;
  uint64_t handed_over_ = 0;
  size_t reported_open_ = SIZE_MAX;  // draining: the count last sent as OPEN=n

  std::string date_;
  int64_t date_second_ = -1;
};

}  // namespace lbd
