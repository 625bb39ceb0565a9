#include "worker/worker.h"

#include <fcntl.h>
#include <malloc.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/log.h"
#include "net/fd_passing.h"
#include "net/listener.h"

namespace lbd {

namespace {

constexpr uint16_t kBufferGroup = 1;
constexpr unsigned kBufferCount = 1024;  // power of two (buffer ring requirement)
constexpr unsigned kBufferSize = 4096;
// Input a client may pipeline behind a request that is still being answered.
constexpr size_t kMaxBufferedInput = 256 * 1024;
// Answers waiting to be sent on one connection. Past this the worker stops reading from the
// client until the backlog halves, so a client that sends and never reads cannot make the
// worker buffer without bound.
// 256 KiB is some 1,700 small answers, deeper than any client pipelines; with the buffers
// swapped for sending, one connection holds at most about twice this.
constexpr size_t kMaxPendingOutput = 256 * 1024;
// The loop wakes at least this often, to stamp the heartbeat when idle.
constexpr int64_t kTickNs = 10'000'000;
constexpr int64_t kHousekeepingNs = 100'000'000;
// Receive buffers' pages go back to the kernel after this long without a read.
constexpr uint64_t kBuffersQuietNs = 1'000'000'000;
// A loop that did not turn for this long was paused (SIGSTOP, a VM that froze, a machine out of
// CPU): what arrived meanwhile is only now being completed, so deadlines wait one more
// housekeeping period instead of closing a connection whose request is already here.
constexpr uint64_t kPausedNs = 1'000'000'000;
// The connection table under pressure: at 90% full the worker starts closing idle connections
// (a batch at a time, so the scan of the table is not repeated for every accept) and accepts one
// connection at a time, so that the kernel never accepts a connection it has no slot for (a
// multishot accept takes the whole queue at once, and a connection with no slot is dropped).
constexpr uint32_t kShedPercent = 90;
// A connection quiet for less than this is not shed: a client that connected a moment ago has
// its request on the way, and one between two requests of a burst is about to send the next.
constexpr uint64_t kShedMinQuietNs = 1'000'000'000;
constexpr uint64_t kFullLogEveryNs = 10'000'000'000;
// After an error answer: how long to keep reading (and discarding) before closing, so the
// client sees the answer instead of a reset.
constexpr uint64_t kLingerNs = 2'000'000'000;
// io_uring opcode that installs a fixed file as a regular fd (Linux 6.8, uapi value 54);
// liburing 2.3 predates it. Used to hand idle connections to a successor worker.
constexpr uint8_t kOpFixedFdInstall = 54;

uint64_t monotonic_coarse_ns() {
  // CLOCK_MONOTONIC_COARSE is what the steering program's bpf_ktime_get_coarse_ns() reads.
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// Request durations need the precise clock: the coarse one ticks every few ms, and the first
// histogram bucket is 100 µs. A vDSO call, no syscall.
uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

size_t unsent_bytes(const Connection& c) {
  return c.out_pending.size() + (c.out_sending.size() - c.out_sent);
}

bool kernel_supports_op(io_uring* ring, int op) {
  io_uring_probe* probe = io_uring_get_probe_ring(ring);
  if (!probe) return false;
  bool supported = io_uring_opcode_supported(probe, op);
  io_uring_free_probe(probe);
  return supported;
}

Result<void> set_nonblocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) return Error::from_errno("O_NONBLOCK");
  return {};
}

uint64_t to_ns(std::chrono::milliseconds ms) { return static_cast<uint64_t>(ms.count()) * 1'000'000ull; }

// The sparse file table cannot be larger than RLIMIT_NOFILE. Still privileged here (the worker
// confines itself after create()), the worker raises even the hard limit to what its table needs,
// as nginx's worker_rlimit_nofile does; unprivileged, it takes the hard limit.
void raise_fd_limit(uint64_t needed) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= needed) return;
  rlimit wanted{needed, std::max<rlim_t>(limit.rlim_max, needed)};
  if (setrlimit(RLIMIT_NOFILE, &wanted) == 0) return;
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
}

}  // namespace

// --- Exchange -------------------------------------------------------------------------------

const Request& ConnectionExchange::request() const { return connection_->parser.request(); }

uint32_t ConnectionExchange::worker_slot() const { return worker_->spec_.slot; }

void ConnectionExchange::add_header(std::string_view name, std::string_view value) {
  extra_headers_.append(name).append(": ").append(value).append("\r\n");
}

void ConnectionExchange::respond(int status, std::string_view body, std::string_view content_type) {
  if (responded_) return;  // one answer per request
  responded_ = true;
  worker_->respond(*connection_, status, body, content_type, extra_headers_);
}

void ConnectionExchange::respond_after(std::chrono::milliseconds delay,
                                       std::function<void(Exchange&)> then) {
  if (responded_ || connection_->waiting) return;
  if (delay.count() < 0) delay = std::chrono::milliseconds(0);
  Connection& c = *connection_;
  c.waiting = true;
  c.deferred = std::move(then);
  c.timer.tv_sec = delay.count() / 1000;
  c.timer.tv_nsec = (delay.count() % 1000) * 1'000'000;
  io_uring_sqe* sqe = worker_->ring_.next_sqe();
  io_uring_prep_timeout(sqe, &c.timer, 0, 0);
  io_uring_sqe_set_data64(sqe, pack_user_data(Op::kTimer, c.index, c.generation));
  c.timer_armed = true;
}

// --- set-up -----------------------------------------------------------------------------------

Worker::Worker(const WorkerSpec& spec, Service service, SlotTable table, WorkerStatsBlock stats,
               Ring ring)
    : spec_(spec),
      handler_(std::move(service.handler)),
      on_message_(std::move(service.on_message)),
      table_(std::move(table)),
      my_slot_(&table_.slot(spec.slot)),
      stats_block_(std::move(stats)),
      stats_(&stats_block_.stats()),
      pid_(static_cast<uint32_t>(getpid())),
      ring_(std::move(ring)) {}

Worker::~Worker() = default;

Result<std::unique_ptr<Worker>> Worker::create(const WorkerSpec& spec, Service service) {
  if (spec.slot >= LBD_MAX_SLOTS) return Error::from_errno(EINVAL, "slot out of range");
  auto table = SlotTable::map(spec.slot_table_fd);
  if (!table) return table.error();
  auto stats = spec.stats_fd >= 0 ? WorkerStatsBlock::map(spec.stats_fd) : WorkerStatsBlock::create();
  if (!stats) return stats.error();

  raise_fd_limit(spec.max_connections);
  Ring::Options ring_options;
  ring_options.fixed_files = spec.max_connections;
  auto ring = Ring::create(ring_options);
  if (!ring) return ring.error();
  if (ring->fixed_files() < spec.max_connections) {
    // Said once per worker; a warning only when the table is small enough to matter.
    rlimit limit{};
    getrlimit(RLIMIT_NOFILE, &limit);
    spdlog::log(ring->fixed_files() < 4096 ? spdlog::level::warn : spdlog::level::info,
                "connection table: {} slots, not the {} of --max-connections: the open-file limit is {} "
                "(raise it: LimitNOFILE= in the unit, or ulimit -n)",
                ring->fixed_files(), spec.max_connections, limit.rlim_cur);
  }

  std::unique_ptr<Worker> w(
      new Worker(spec, std::move(service), std::move(*table), std::move(*stats), std::move(*ring)));
  auto buffers = BufferRing::create(w->ring_, kBufferGroup, kBufferCount, kBufferSize);
  if (!buffers) return buffers.error();
  w->buffers_.emplace(std::move(*buffers));

  w->connection_capacity_ = w->ring_.fixed_files();
  auto connections = ConnectionTable::create(w->connection_capacity_);
  if (!connections) return connections.error();
  w->connections_ = std::move(*connections);
  w->body_budget_.limit = spec.body_memory;
  w->shed_at_ = std::max<uint32_t>(1, static_cast<uint32_t>(uint64_t{w->connection_capacity_} * kShedPercent / 100));
  // A multishot accept takes a listener's whole queue in one go: it may run only while that
  // many slots are free.
  uint64_t queues = 0;
  for (int fd : spec.listener_fds) {
    auto queue = net::accept_queue(fd);
    queues += (queue ? queue->limit : 4096) + 1;
  }
  // HTTP's client speaks first: the kernel hands over a connection only once its first bytes
  // are in (TCP_DEFER_ACCEPT), so the one-shot recv that follows completes as it is submitted,
  // and a new connection wakes the worker once instead of twice (accept, then data): about a
  // fifth of a new connection's CPU on a VM where a wake-up is dear. A client silent for the
  // first second is handed over anyway (at the SYN-ACK's first retransmission), and from then on
  // --header-timeout applies as before (docs/ARCHITECTURE.md, section 11).
  for (int fd : spec.listener_fds) {
    const int seconds = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &seconds, sizeof(seconds)) != 0) {
      spdlog::debug("TCP_DEFER_ACCEPT on listener fd {}: {}", fd, std::strerror(errno));
    }
  }
  w->one_at_a_time_at_ = static_cast<uint32_t>(
      std::min<uint64_t>(w->shed_at_, w->connection_capacity_ > queues ? w->connection_capacity_ - queues : 0));
  w->live_.reserve(w->connection_capacity_);
  w->accept_armed_.assign(spec.listener_fds.size(), false);
  w->accept_multishot_.assign(spec.listener_fds.size(), false);
  w->accept_cancelled_.assign(spec.listener_fds.size(), false);
  w->listener_stopped_.assign(spec.listener_fds.size(), false);
  for (uint32_t i = 0; i < kInstallEntries; i++) w->free_installs_.push_back(kInstallEntries - 1 - i);
  w->can_export_fds_ = kernel_supports_op(w->ring_.get(), kOpFixedFdInstall);

  // SIGTERM arrives as a completion, not as an interruption of the loop.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  if (sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) return Error::from_errno("block SIGTERM");
  w->signal_fd_.reset(signalfd(-1, &mask, SFD_CLOEXEC));
  if (!w->signal_fd_) return Error::from_errno("signalfd");

  for (auto [fd, counts_as_accept] : {std::pair{spec.handoff_fd, true}, {spec.handover_in_fd, false}}) {
    if (fd < 0) continue;
    if (auto ok = set_nonblocking(fd); !ok) return ok.error().wrap("fd inbox");
    w->inboxes_.push_back(Inbox{fd, counts_as_accept, true});
  }
  if (spec.status_fd >= 0) {
    if (auto ok = set_nonblocking(spec.status_fd); !ok) return ok.error().wrap("status channel");
  }

  // A fresh worker in this slot: nothing of ours is queued or open yet. Counting `steered` as
  // already accepted starts the slot's load at zero whatever its previous worker left behind.
  // Set up: from here the ring does only what a worker does (ring.h), before any client's byte.
  if (auto locked = w->ring_.lock_down(); !locked) return locked.error();

  w->publishing_ = spec.publish_at_start;
  w->accepted_ = load_field(w->my_slot_->steered);
  w->refresh_clock();
  w->publish();
  spdlog::info("serving with io_uring ({}), {} connection slots{}", w->ring_.mode(),
               w->connection_capacity_,
               w->can_export_fds_ ? "" : "; no IORING_OP_FIXED_FD_INSTALL: no keep-alive handover");
  return w;
}

// --- the loop -------------------------------------------------------------------------------

Result<void> Worker::run() {
  pace_accepts();
  for (uint32_t i = 0; i < inboxes_.size(); i++) arm_poll(inboxes_[i].fd, Op::kInboxPoll, i);
  if (spec_.status_fd >= 0) arm_poll(spec_.status_fd, Op::kStatusPoll, 0);
  arm_signal_read();
  io_uring_submit(ring_.get());

  if (spec_.status_fd >= 0) {
    if (auto ok = send_channel_message(spec_.status_fd, {.command = ChannelCommand::kReady, .value = kWorkerTakesMessages});
        !ok) {
      return ok.error().wrap("tell the supervisor we are ready");
    }
  }

  __kernel_timespec tick{0, kTickNs};
  while (true) {
    io_uring_cqe* cqe = nullptr;
    int err = io_uring_submit_and_wait_timeout(ring_.get(), &cqe, 1, &tick, nullptr);
    if (err < 0 && err != -ETIME && err != -EINTR && err != -EBUSY) {
      return Error::from_errno(-err, "io_uring wait");
    }
    unsigned head;
    unsigned seen = 0;
    io_uring_for_each_cqe(ring_.get(), head, cqe) {
      refresh_clock();
      dispatch(cqe);
      publish();
      seen++;
    }
    io_uring_cq_advance(ring_.get(), seen);

    refresh_clock();
    if (now_ns_ - last_turn_ns_ >= kPausedNs && last_turn_ns_ != 0) {
      spdlog::warn("the loop did not run for {} ms (stopped, or the machine paused); deadlines wait for what arrived "
                   "meanwhile",
                   (now_ns_ - last_turn_ns_) / 1'000'000);
      next_housekeeping_ns_ = now_ns_ + kHousekeepingNs;
    }
    last_turn_ns_ = now_ns_;
    if (now_ns_ >= next_housekeeping_ns_) housekeeping();
    publish();
    if (draining_ && live_.empty() && handover_queue_.empty()) break;
    if (draining_ && now_ns_ >= drain_deadline_ns_ + kLingerNs) {
      spdlog::warn("drain: {} connections still closing at the deadline; exiting", live_.size());
      break;
    }
  }
  if (handed_over_) {
    spdlog::info("drained: {} requests served, {} idle connections handed over", requests_, handed_over_);
  } else {
    spdlog::info("drained: {} requests served", requests_);
  }
  return {};
}

void Worker::refresh_clock() { now_ns_ = monotonic_coarse_ns(); }

// Our entry in the slot table, after every completion. Once a successor owns the entry
// (handover), we leave it alone.
void Worker::publish() {
  if (!publishing_) return;
  publish_load(*my_slot_, {.heartbeat_ns = now_ns_, .accepted = accepted_, .open = open_,
                           .inflight = inflight_, .requests = requests_, .pid = pid_});
  publish_full(*my_slot_, pace_ == AcceptPace::kPaused);
}

void Worker::housekeeping() {
  next_housekeeping_ns_ = now_ns_ + kHousekeepingNs;
  int64_t second = time(nullptr);
  if (second != date_second_) {
    date_second_ = second;
    date_ = http_date_now();
  }
  if (accept_retry_) {
    accept_retry_ = false;
    pace_accepts();
  }
  report_full();
  expire_idle_connections();
  // Shedding runs on accepts, and here too: a worker that stopped accepting because every slot
  // was busy gets no accept to run it when those connections go idle.
  if (live_.size() - closing_ >= shed_at_) shed(shed_batch());
  return_memory();
  return_buffer_pages();
  if (spec_.reconcile_queue) reconcile_queue();
  if (draining_ && spec_.status_fd >= 0 && live_.size() != reported_open_) {
    // Our slot-table entry may belong to a successor now: say how many we hold this way.
    reported_open_ = live_.size();
    (void)send_channel_message(spec_.status_fd, {.command = ChannelCommand::kOpenConnections,
                                                 .value = static_cast<uint32_t>(reported_open_)});
  }
  if (draining_ && !drain_forced_ && now_ns_ >= drain_deadline_ns_) {
    drain_forced_ = true;
    spdlog::warn("drain timeout: closing {} connections", live_.size());
    for (uint32_t index : live_) begin_close(connections_[index]);
  }
}

// Between requests: nothing received that is not answered, nothing left to send.
bool Worker::idle(const Connection& c) const {
  return !c.waiting && !c.send_inflight && c.out_pending.empty() && !c.parser.in_request() &&
         c.input.empty() && !c.close_after_send && !c.lingering && !c.output_blocked;
}

// After a wave of connections ends (an attack, a load peak), give the freed heap back to the
// system: glibc keeps freed memory in its arenas, so a worker would otherwise stay at its peak.
void Worker::return_memory() {
  const size_t built = connections_.built_count();
  if (built < 1024 || live_.size() * 4 > built) return;
  const size_t table_bytes = connections_.release_unused();
  malloc_trim(0);
  spdlog::debug("{} connections open of {} built: {} KiB of connection table given back", live_.size(), built,
                table_bytes / 1024);
}

// A second after the last read, the receive buffers' pages go back (BufferRing::give_back_pages):
// a worker a minute after a load run is as small as one that never served
// (docs/ARCHITECTURE.md, section 11). Safe because every buffer is recycled as soon as its
// completion is read (on_recv), no completion waits unread, and with DEFER_TASKRUN the kernel
// fills a buffer only inside our io_uring_enter, which cannot run during the madvise. Under the
// other modes it may fill one at any return to user space, so their buffers stay resident.
void Worker::return_buffer_pages() {
  if (!buffers_ || !buffers_resident_ || now_ns_ - last_read_ns_ < kBuffersQuietNs) return;
  if (!ring_.completes_only_when_waited() || io_uring_cq_ready(ring_.get()) != 0) return;
  buffers_->give_back_pages();
  buffers_resident_ = false;
}

void Worker::expire_idle_connections() {
  // Closing only submits the close: live_ changes when its completion comes, not in this loop.
  for (uint32_t index : live_) enforce_deadlines(connections_[index]);
}

// The deadlines a connection must meet (docs/ARCHITECTURE.md, section 11). Bytes that trickle in
// extend none of them except the idle timeout, which only a connection between requests is on.
void Worker::enforce_deadlines(Connection& c) {
  if (c.closing || c.waiting || c.handing_over) return;  // a deferred answer is ours to give
  // Nothing sent or received for the idle timeout (a linger's fixed length): whatever the state,
  // the client is gone or not reading. A new connection is on the header timeout instead.
  const uint64_t quiet = now_ns_ - c.last_activity_ns;
  if (c.lingering ? quiet >= kLingerNs : !c.fresh && quiet >= to_ns(spec_.idle_timeout)) {
    begin_close(c);
    return;
  }
  if (c.close_after_send) return;  // its last answer is on its way
  // A head that has not all arrived within --header-timeout of its first byte (of the accept,
  // for a connection that has sent no request yet): 408 and close, however the bytes trickle in
  // (slowloris keeps a connection "active" with one byte a second). A new connection that sent
  // nothing at all is closed without an answer, as nginx and HAProxy do.
  const bool awaiting_head = c.parser.in_head() || (c.fresh && !c.parser.in_request());
  if (awaiting_head && now_ns_ - c.head_started_ns >= to_ns(spec_.header_timeout)) {
    if (c.parser.in_head()) {
      spdlog::debug("connection {}: request head not complete after {} ms: 408", c.index,
                    spec_.header_timeout.count());
      respond_error(c, 408);
      flush(c);
    } else {
      begin_close(c);
    }
    return;
  }
  // A body must average --min-body-rate after a grace period; a client we are not reading from
  // (its answers unread) is not the one being slow.
  if (spec_.min_body_rate && c.parser.in_body() && !c.output_blocked) {
    // A body gets --header-timeout (10 s) before the rate applies (a client's first round trips,
    // a slow start); after that it must have averaged the rate since its head ended.
    const uint64_t allowed =
        to_ns(spec_.header_timeout) + c.parser.body_received() * 1'000'000'000ull / spec_.min_body_rate;
    if (now_ns_ - c.body_started_ns > allowed) {
      spdlog::debug("connection {}: request body slower than {} bytes/s: 408", c.index, spec_.min_body_rate);
      respond_error(c, 408);
      flush(c);
    }
  }
}

// The program counts a connection against this slot when it steers it here (`steered`), and the
// worker counts it out when it accepts it. A SYN the program saw but that never became a
// connection (retransmitted, dropped on a full queue) would leave `steered` too high for good;
// the listener's real queue length says by how much, and a difference seen twice in a row is
// written off. Half-open connections in flight make single readings noisy, hence "twice".
void Worker::reconcile_queue() {
  if (now_ns_ - last_reconcile_ns_ < kHousekeepingNs) return;
  last_reconcile_ns_ = now_ns_;
  uint64_t queued = 0;
  for (int fd : spec_.listener_fds) {
    auto queue = net::accept_queue(fd);
    if (queue) queued += queue->queued;
  }
  int64_t excess = static_cast<int64_t>(load_field(my_slot_->steered) - accepted_ - queued);
  if (excess > 0 && previous_excess_ > 0) {
    accepted_ += static_cast<uint64_t>(std::min(excess, previous_excess_));
    excess = 0;
  }
  previous_excess_ = excess;
}

void Worker::start_drain(DrainMode mode, std::chrono::milliseconds timeout, UniqueFd successor) {
  if (draining_) {
    // Asked again (a second SIGTERM, or a stop during a drain): stop waiting for clients.
    drain_deadline_ns_ = std::min(drain_deadline_ns_, now_ns_ + to_ns(timeout));
    next_housekeeping_ns_ = now_ns_;
    if (mode == DrainMode::kStop) {
      drain_mode_ = mode;
      for (uint32_t index : live_) dismiss_idle(connections_[index]);
    }
    return;
  }
  draining_ = true;
  drain_mode_ = mode;
  drain_deadline_ns_ = now_ns_ + to_ns(timeout);
  next_housekeeping_ns_ = now_ns_;
  // Our slot-table entry is not ours any more: the slot is out of steering, and a successor may
  // own the entry (a reload, or an undrain while we finish). What we still hold is reported to
  // the supervisor as OPEN=n instead.
  publishing_ = false;
  if (mode == DrainMode::kHandover) {
    if (successor && can_export_fds_) {
      successor_ = std::move(successor);
    } else {
      drain_mode_ = DrainMode::kDrain;
    }
  }
  static constexpr const char* kNames[] = {"stop", "drain", "handover"};
  spdlog::info("draining ({}): {} connections open", kNames[static_cast<int>(drain_mode_)], live_.size());
  for (uint32_t i = 0; i < accept_armed_.size(); i++) {
    if (accept_armed_[i]) cancel(pack_user_data(Op::kAccept, i, 0));
  }
  // Collect copies: dismissing may release connections and reorder live_.
  std::vector<uint32_t> open(live_.begin(), live_.end());
  for (uint32_t index : open) dismiss_idle(connections_[index]);
}

// What draining does with a connection that sits between requests.
void Worker::dismiss_idle(Connection& c) {
  if (!c.in_use || c.closing || c.handing_over || !idle(c)) return;
  switch (drain_mode_) {
    case DrainMode::kStop:
      begin_close(c);
      return;
    case DrainMode::kDrain:
      return;  // its next request is answered with "Connection: close", or the timeout ends it
    case DrainMode::kHandover:
      begin_handover(c);
      return;
  }
}

// Handing over an idle connection: first stop reading it. If a request arrives before the recv
// is cancelled, it is in our buffer and we answer it (and close); otherwise it stays in the
// socket for the successor to read. Either way no byte is lost.
void Worker::begin_handover(Connection& c) {
  c.handing_over = true;
  if (c.recv_armed) {
    cancel(pack_user_data(Op::kRecv, c.index, c.generation));
  } else {
    finish_handover(c);
  }
}

// The recv is gone: export the socket as a regular fd and pass it on.
void Worker::finish_handover(Connection& c) {
  if (!c.handing_over || c.closing) return;
  if (!idle(c)) {
    // A request came in while we were cancelling: answer it ourselves (with Connection: close).
    c.handing_over = false;
    if (!c.recv_armed && !c.output_blocked && !c.peer_closed) arm_recv(c);
    return;
  }
  io_uring_sqe* sqe = ring_.next_sqe();
  io_uring_prep_rw(kOpFixedFdInstall, sqe, static_cast<int>(c.index), nullptr, 0, 0);
  sqe->flags |= IOSQE_FIXED_FILE;
  io_uring_sqe_set_data64(sqe, pack_user_data(Op::kExport, c.index, c.generation));
}

void Worker::on_exported(Connection& c, int result) {
  if (result >= 0) {
    handover_queue_.emplace_back(result);
    send_handovers();
  } else {
    spdlog::debug("handover: cannot export connection: {}", strerror(-result));
  }
  // Our fixed file goes; the exported fd (then the successor's copy) keeps the connection open,
  // so no FIN is sent.
  c.handing_over = false;
  begin_close(c);
}

// Passes exported connections to the successor. Its inbox fills up when thousands are handed
// over at once; the rest wait here until it has room (POLLOUT). Closing one of these fds would
// close an idle client's connection, which is the fallback only if the successor is gone.
void Worker::send_handovers() {
  while (!handover_queue_.empty()) {
    auto sent = send_channel_message(successor_.get(), {.command = ChannelCommand::kConnection},
                                     handover_queue_.front().get());
    if (!sent) {
      if (sent.error().code() == std::errc::resource_unavailable_try_again) {
        if (!handover_poll_armed_) {
          io_uring_sqe* sqe = ring_.next_sqe();
          io_uring_prep_poll_add(sqe, successor_.get(), POLLOUT);
          io_uring_sqe_set_data64(sqe, pack_user_data(Op::kHandoverWritable, 0, 0));
          handover_poll_armed_ = true;
        }
        return;
      }
      spdlog::warn("handover: {}; closing {} idle connections instead", sent.error().message(),
                   handover_queue_.size());
      handover_queue_.clear();
      return;
    }
    handover_queue_.pop_front();
    handed_over_++;
  }
}

// --- submissions ----------------------------------------------------------------------------

void Worker::arm_accept(uint32_t listener, bool multishot) {
  io_uring_sqe* sqe = ring_.next_sqe();
  if (multishot) {
    io_uring_prep_multishot_accept_direct(sqe, spec_.listener_fds[listener], nullptr, nullptr, 0);
  } else {
    // Straight into a free fixed-file slot the kernel picks. (liburing 2.3's
    // io_uring_prep_accept_direct() adds one to IORING_FILE_INDEX_ALLOC, which wraps to 0, "no
    // fixed file": the connection would become a plain descriptor. Set the field directly.)
    io_uring_prep_accept(sqe, spec_.listener_fds[listener], nullptr, nullptr, 0);
    sqe->file_index = IORING_FILE_INDEX_ALLOC;
  }
  io_uring_sqe_set_data64(sqe, pack_user_data(Op::kAccept, listener, 0));
  accept_armed_[listener] = true;
  accept_multishot_[listener] = multishot;
  accept_cancelled_[listener] = false;
}

// A fresh connection is read once at a time; from its first answer on, by a multishot recv. Most
// new connections carry one request and close after the answer (`Connection: close`), and a
// recv still armed then has to be cancelled, and its cancellation waited for, before the close:
// one more request and two more completions per connection. A one-shot recv is over by the time
// the answer is sent, so the close goes at once. A keep-alive connection pays one extra arming.
void Worker::arm_recv(Connection& c) {
  io_uring_sqe* sqe = ring_.next_sqe();
  if (c.fresh) {
    io_uring_prep_recv(sqe, static_cast<int>(c.index), nullptr, 0, 0);
  } else {
    io_uring_prep_recv_multishot(sqe, static_cast<int>(c.index), nullptr, 0, 0);
  }
  sqe->flags |= IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
  sqe->buf_group = buffers_->group();
  io_uring_sqe_set_data64(sqe, pack_user_data(Op::kRecv, c.index, c.generation));
  c.recv_armed = true;
}

void Worker::arm_signal_read() {
  io_uring_sqe* sqe = ring_.next_sqe();
  io_uring_prep_read(sqe, signal_fd_.get(), &signal_info_, sizeof(signal_info_), 0);
  io_uring_sqe_set_data64(sqe, pack_user_data(Op::kSignal, 0, 0));
}

void Worker::arm_poll(int fd, Op op, uint32_t index) {
  io_uring_sqe* sqe = ring_.next_sqe();
  io_uring_prep_poll_add(sqe, fd, POLLIN);
  io_uring_sqe_set_data64(sqe, pack_user_data(op, index, 0));
}

void Worker::cancel(uint64_t user_data) {
  io_uring_sqe* sqe = ring_.next_sqe();
  io_uring_prep_cancel64(sqe, user_data, 0);
  io_uring_sqe_set_data64(sqe, pack_user_data(Op::kCancel, 0, 0));
}

// --- completions ----------------------------------------------------------------------------

void Worker::dispatch(const io_uring_cqe* cqe) {
  UserData ud = unpack_user_data(io_uring_cqe_get_data64(cqe));
  switch (ud.op) {
    case Op::kAccept:
      on_accept(ud.index, cqe);
      return;
    case Op::kRecv:
      on_recv(ud, cqe);
      return;
    case Op::kSend:
      if (Connection* c = lookup(ud)) on_send(*c, cqe->res);
      return;
    case Op::kTimer:
      if (Connection* c = lookup(ud)) on_timer(*c, cqe->res);
      return;
    case Op::kClose:
      if (Connection* c = lookup(ud)) on_close(*c, cqe->res);
      return;
    case Op::kSignal:
      on_signal(cqe->res);
      return;
    case Op::kInboxPoll:
      on_inbox_ready(ud.index, cqe->res);
      return;
    case Op::kInstall:
      on_installed(ud.index, cqe->res);
      return;
    case Op::kStatusPoll:
      on_status(cqe->res);
      return;
    case Op::kExport:
      if (Connection* c = lookup(ud)) on_exported(*c, cqe->res);
      return;
    case Op::kHandoverWritable:
      handover_poll_armed_ = false;
      send_handovers();
      return;
    case Op::kCancel:
    case Op::kShutdown:
      return;
  }
}

Connection* Worker::lookup(const UserData& ud) {
  if (ud.index >= connection_capacity_) return nullptr;
  if (!connections_.built(ud.index)) return nullptr;
  Connection& c = connections_[ud.index];
  if (!c.in_use || (c.generation & kGenerationMask) != ud.generation) return nullptr;
  return &c;
}

void Worker::on_accept(uint32_t listener, const io_uring_cqe* cqe) {
  if (!(cqe->flags & IORING_CQE_F_MORE)) accept_armed_[listener] = false;
  if (cqe->res >= 0) {
    accepted_++;
    record_accepted(*stats_);
    open_connection(static_cast<uint32_t>(cqe->res), true);
  } else if (cqe->res == -ECANCELED) {
    // Our cancel: a drain, or the pace changed (pace_accepts() re-arms it as it should be now).
  } else if (cqe->res == -EINVAL || cqe->res == -EBADF) {
    // The supervisor stopped the listener: accept no more from it.
    listener_stopped_[listener] = true;
    if (!draining_) spdlog::debug("listener {} stopped accepting ({})", listener, strerror(-cqe->res));
  } else if (cqe->res == -ENFILE || cqe->res == -EMFILE) {
    // No fixed-file slot: cannot happen while pace_accepts() keeps one free per armed accept,
    // but if it does, the table is full, not the system.
    spdlog::warn("accept: connection table full ({} of {})", live_.size(), connection_capacity_);
    accept_retry_ = true;
  } else {
    // Out of memory, or an aborted handshake: try again shortly.
    spdlog::warn("accept: {}", strerror(-cqe->res));
    accept_retry_ = true;
  }
  if (!accept_armed_[listener] && !accept_retry_) pace_accepts();
}

// Accepts follow the table's fill: multishot while the free slots outnumber what the listeners
// can have queued, then one connection at a time (each armed accept may take one slot, and no
// more), none when no slot is left.
// Called after every accept and every release, so a slot freed is a slot offered again.
void Worker::pace_accepts() {
  if (spec_.accept_mode != AcceptMode::kSteered || draining_) return;
  const size_t listeners = spec_.listener_fds.size();
  const size_t used = live_.size();
  AcceptPace pace = AcceptPace::kMultishot;
  if (used + listeners > connection_capacity_) {
    pace = AcceptPace::kPaused;
  } else if (used >= one_at_a_time_at_) {
    pace = AcceptPace::kOneAtATime;
  }
  if (pace == AcceptPace::kPaused && pace_ != AcceptPace::kPaused) {
    full_since_ns_ = now_ns_;
    full_episodes_++;
  }
  pace_ = pace;
  for (uint32_t i = 0; i < listeners; i++) {
    if (listener_stopped_[i]) continue;
    if (accept_armed_[i]) {
      // A multishot accept past the threshold, or any accept with no slot to spare, is taken
      // back; its final completion calls here again.
      const bool take_back = pace != AcceptPace::kMultishot && (accept_multishot_[i] || pace == AcceptPace::kPaused);
      if (take_back && !accept_cancelled_[i]) {
        cancel(pack_user_data(Op::kAccept, i, 0));
        accept_cancelled_[i] = true;
      }
      continue;
    }
    if (pace != AcceptPace::kPaused) arm_accept(i, pace == AcceptPace::kMultishot);
  }
  report_full();
}

// The real cause, at most once every 10 s, with how often the table filled in between.
void Worker::report_full() {
  if (pace_ != AcceptPace::kPaused || now_ns_ - full_logged_ns_ < kFullLogEveryNs) return;
  full_logged_ns_ = now_ns_;
  spdlog::warn("connection table full: {} of {}; not accepting until one closes (full {} times since the "
               "last report; {} idle or slow connections closed to make room so far)",
               live_.size(), connection_capacity_, full_episodes_, shed_total_);
  full_episodes_ = 0;
}

// Room near the top of the table, made the way nginx reuses its connections: idle keep-alive
// connections (and new ones that sent nothing yet) go first, oldest first; then the connections
// that have been sending a head the longest. A connection whose request is being answered or
// whose body is arriving is never shed, nor one that was active in the last second.
size_t Worker::shed_batch() const { return std::max<size_t>(16, connection_capacity_ / 64); }

void Worker::shed(size_t wanted) {
  struct Candidate {
    uint64_t since;
    uint32_t index;
    bool operator<(const Candidate& other) const { return since < other.since; }
  };
  std::vector<Candidate> idle_ones, heads;
  for (uint32_t index : live_) {
    const Connection& c = connections_[index];
    if (c.closing || c.handing_over || c.close_after_send || c.waiting || c.send_inflight ||
        !c.out_pending.empty() || now_ns_ - c.last_activity_ns < kShedMinQuietNs) {
      continue;
    }
    if (idle(c) && !c.parser.in_head()) {
      idle_ones.push_back({c.last_activity_ns, index});
    } else if (c.parser.in_head() || (c.fresh && !c.parser.in_request())) {
      heads.push_back({c.head_started_ns, index});
    }
  }
  size_t closed[2] = {0, 0};
  for (int g = 0; g < 2; g++) {
    std::vector<Candidate>& group = g == 0 ? idle_ones : heads;
    const size_t n = std::min(wanted, group.size());
    std::partial_sort(group.begin(), group.begin() + static_cast<ptrdiff_t>(n), group.end());
    for (size_t i = 0; i < n; i++) begin_close(connections_[group[i].index]);
    wanted -= n;
    closed[g] = n;
  }
  shed_total_ += closed[0] + closed[1];
  shed_since_log_ += closed[0] + closed[1];
  if (shed_since_log_ && now_ns_ - shed_logged_ns_ >= kFullLogEveryNs) {
    spdlog::info("connection table {}% full ({} of {}): closed {} connections to make room since the last report "
                 "(this time {} idle, {} slow to send a head)",
                 uint64_t{live_.size()} * 100 / connection_capacity_, live_.size(), connection_capacity_,
                 shed_since_log_, closed[0], closed[1]);
    shed_logged_ns_ = now_ns_;
    shed_since_log_ = 0;
  }
}

void Worker::open_connection(uint32_t index, bool fresh) {
  if (index >= connection_capacity_ || (connections_.built(index) && connections_[index].in_use)) {
    // Cannot happen: the kernel allocates from the table we sized. Close it rather than corrupt.
    spdlog::error("accept gave fixed-file slot {}, which is not free", index);
    io_uring_sqe* sqe = ring_.next_sqe();
    io_uring_prep_close_direct(sqe, index);
    io_uring_sqe_set_data64(sqe, pack_user_data(Op::kCancel, 0, 0));
    return;
  }
  if (connections_.build(index)) {
    Connection& fresh_slot = connections_[index];
    fresh_slot.index = index;
    fresh_slot.exchange.worker_ = this;
    fresh_slot.exchange.connection_ = &fresh_slot;
    fresh_slot.parser.set_limits(spec_.http);
    fresh_slot.parser.set_body_budget(&body_budget_);
  }
  Connection& c = connections_[index];
  c.in_use = true;
  c.recv_armed = c.send_inflight = c.timer_armed = false;
  c.closing = c.close_submitted = c.close_after_send = false;
  c.linger_after_send = c.lingering = c.waiting = c.output_blocked = c.handing_over = false;
  c.peer_closed = false;
  c.fresh = fresh;
  c.last_activity_ns = now_ns_;
  c.head_started_ns = now_ns_;
  c.out_sent = 0;
  c.parser.reset();
  c.token = LoadToken(&open_);
  c.live_position = static_cast<uint32_t>(live_.size());
  live_.push_back(index);
  arm_recv(c);
  // Near the top of the table: close idle and slow connections, a batch at a time.
  if (live_.size() - closing_ >= shed_at_) shed(shed_batch());
  pace_accepts();
}

void Worker::on_recv(const UserData& ud, const io_uring_cqe* cqe) {
  const bool has_buffer = cqe->flags & IORING_CQE_F_BUFFER;
  const auto buffer_id = static_cast<uint16_t>(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
  Connection* c = lookup(ud);
  if (!c) {
    if (has_buffer) buffers_->recycle(buffer_id);
    return;
  }
  if (!(cqe->flags & IORING_CQE_F_MORE)) c->recv_armed = false;
  const int res = cqe->res;
  if (has_buffer) {
    last_read_ns_ = now_ns_;
    buffers_resident_ = true;
  }
  if (res > 0 && has_buffer) {
    on_data(*c, std::string_view(buffers_->data(buffer_id), static_cast<size_t>(res)));
    buffers_->recycle(buffer_id);
  } else {
    if (has_buffer) buffers_->recycle(buffer_id);
    if (res == 0) {
      on_peer_closed(*c);
    } else if (res != -ECANCELED && res != -ENOBUFS) {
      begin_close(*c);  // reset by the peer, or another socket error
    }
  }
  // The recv ended (a one-shot one, our cancel, -ENOBUFS when every buffer was in use this turn,
  // or the kernel ending a multishot): decide again whether this connection is read. Whatever
  // raced the end, this runs after it. Not after the last answer: nothing more is read then.
  if (!c->recv_armed && !c->closing && res != 0 && !c->close_after_send) {
    if (c->handing_over) {
      finish_handover(*c);
    } else if (!c->output_blocked && !c->peer_closed) {
      arm_recv(*c);
    }
  }
  maybe_finish_close(*c);
}

void Worker::on_data(Connection& c, std::string_view data) {
  // A lingering connection is not kept alive by what it sends: the linger has a fixed length.
  if (c.closing || c.lingering) return;
  c.last_activity_ns = now_ns_;
  // During a handover, a request that raced it is ours: it is answered here (with
  // "Connection: close"), and finish_handover() then finds the connection busy and keeps it.
  if (c.close_after_send) return;  // nothing more is read
  if (c.waiting || c.output_blocked) {
    // Pipelined behind a request still being answered, or behind answers the client has not
    // read yet; parsed once those are done.
    if (c.input.size() + data.size() > kMaxBufferedInput) {
      spdlog::debug("connection {}: {} KiB sent behind answers it does not read; closing", c.index,
                    (c.input.size() + data.size()) / 1024);
      begin_close(c);
      return;
    }
    c.input.append(data);
    return;
  }
  process(c, data);
  flush(c);
}

void Worker::process(Connection& c, std::string_view data) {
  while (true) {
    const bool was_in_head = c.parser.in_head();
    const bool was_in_body = c.parser.in_body();
    RequestParser::Step step = c.parser.parse(data);
    data.remove_prefix(step.consumed);
    // A new request began (a fresh connection's deadline runs from its accept instead), or
    // its head ended.
    if (!was_in_head && c.parser.in_head() && !c.fresh) c.head_started_ns = now_ns_;
    if (!was_in_body && c.parser.in_body()) c.body_started_ns = now_ns_;
    if (step.status == RequestParser::Status::kNeedMore) {
      if (c.parser.take_continue()) c.out_pending.append("HTTP/1.1 100 Continue\r\n\r\n");
      return;
    }
    if (step.status == RequestParser::Status::kError) {
      spdlog::debug("bad request on connection {}: {} ({})", c.index, c.parser.error_status(),
                    c.parser.error_reason());
      respond_error(c, c.parser.error_status());
      return;
    }
    answer(c);
    if (c.waiting) {
      c.input.assign(data);
      return;
    }
    c.parser.next();
    if (c.close_after_send) return;
    // Checked after every answer, not only when more input follows in the same read: a client
    // that sends one request per segment and never reads would otherwise grow the output
    // without bound, one answer at a time.
    if (unsent_bytes(c) > kMaxPendingOutput) {
      // Stop reading until the client catches up (resumed in on_send).
      c.output_blocked = true;
      c.input.assign(data);
      if (c.recv_armed) cancel(pack_user_data(Op::kRecv, c.index, c.generation));
      return;
    }
    if (data.empty()) return;
  }
}

// Parses what was held back while an answer was pending, then reads from the client again.
void Worker::resume_input(Connection& c) {
  if (!c.close_after_send && !c.input.empty()) {
    std::string pending = std::move(c.input);
    c.input.clear();
    process(c, pending);
  }
  flush(c);
  if (!c.recv_armed && !c.closing && !c.output_blocked && !c.waiting && !c.peer_closed &&
      !c.handing_over) {
    arm_recv(c);
  }
  if (!c.send_inflight && c.out_pending.empty()) after_last_send(c);
}

// A request's duration, for the histogram, runs from here (the request is complete and parsed,
// the handler is about to run) to respond(): the time lbd and the handler took to produce the
// answer, a deferred answer's wait included (/sleep?ms=200 counts 200 ms). It leaves out the time
// the client took to send the request and the time the answer spends on the wire.
void Worker::answer(Connection& c) {
  ConnectionExchange& ex = c.exchange;
  c.fresh = false;
  ex.responded_ = false;
  ex.extra_headers_.clear();
  ++inflight_;
  c.request_started_ns = monotonic_ns();
  handler_(ex);
  if (!ex.responded_ && !c.waiting) ex.respond(500, "the handler did not answer\n", "text/plain");
}

void Worker::respond(Connection& c, int status, std::string_view body,
                     std::string_view content_type, std::string_view extra_headers) {
  ResponseHead head = response_head_for(c.parser, !draining_ && !c.close_after_send);
  head.status = status;
  head.content_type = content_type;
  head.extra_headers = extra_headers;
  head.worker_slot = spec_.slot;
  head.date = date_;
  append_response(c.out_pending, head, body);
  if (!head.keep_alive) c.close_after_send = true;
  ++requests_;
  if (inflight_ > 0) --inflight_;
  record_request(*stats_, monotonic_ns() - c.request_started_ns);
}

void Worker::respond_error(Connection& c, int status) {
  ResponseHead head;
  head.status = status;
  head.keep_alive = false;
  head.worker_slot = spec_.slot;
  head.date = date_;
  std::string body = std::to_string(status) + " " + status_reason(status) + "\n";
  append_response(c.out_pending, head, body);
  c.close_after_send = true;
  c.linger_after_send = true;
}

void Worker::flush(Connection& c) {
  if (c.send_inflight || c.closing || c.out_pending.empty()) return;
  std::swap(c.out_sending, c.out_pending);
  c.out_pending.clear();
  c.out_sent = 0;
  submit_send(c);
}

// The last answer of a connection that closes after it (`Connection: close`, most new
// connections) goes with its close linked behind it: one submission, no turn of the loop between
// the send's completion and the close. MSG_WAITALL makes a short send the kernel's to finish, so
// the close runs only once every byte is out; if the send fails (or falls short: a signal), the
// link breaks, the close completes with -ECANCELED, and on_close() closes on its own. Nothing
// else may hold the socket then: no recv armed (a fresh connection's one-shot recv is over), no
// timer. The connection is not `closing` until the send completes, so its deadlines still apply
// to a client that does not read the answer: begin_close() cancels the send, and the linked
// close with it.
void Worker::submit_send(Connection& c) {
  const bool close_behind = c.close_after_send && !c.linger_after_send && !c.recv_armed && !c.timer_armed &&
                            !c.close_submitted && c.out_pending.empty();
  if (close_behind) ring_.reserve(2);  // the send and its close in one submission
  io_uring_sqe* sqe = ring_.next_sqe();
  io_uring_prep_send(sqe, static_cast<int>(c.index), c.out_sending.data() + c.out_sent,
                     c.out_sending.size() - c.out_sent, MSG_NOSIGNAL | (close_behind ? MSG_WAITALL : 0));
  sqe->flags |= IOSQE_FIXED_FILE | (close_behind ? IOSQE_IO_LINK : 0);
  io_uring_sqe_set_data64(sqe, pack_user_data(Op::kSend, c.index, c.generation));
  c.send_inflight = true;
  if (close_behind) {
    sqe = ring_.next_sqe();
    io_uring_prep_close_direct(sqe, c.index);
    io_uring_sqe_set_data64(sqe, pack_user_data(Op::kClose, c.index, c.generation));
    c.close_submitted = true;
  }
}

void Worker::on_send(Connection& c, int result) {
  c.send_inflight = false;
  if (c.closing) {
    maybe_finish_close(c);
    return;
  }
  if (result < 0) {
    begin_close(c);  // the peer is gone
    return;
  }
  c.last_activity_ns = now_ns_;
  c.out_sent += static_cast<size_t>(result);
  if (c.out_sent < c.out_sending.size()) {
    submit_send(c);  // short send: the rest, from where the kernel stopped
    return;
  }
  c.out_sending.clear();
  c.out_sent = 0;
  if (c.output_blocked && unsent_bytes(c) <= kMaxPendingOutput / 2) {
    c.output_blocked = false;
    resume_input(c);
    return;
  }
  if (!c.out_pending.empty()) {
    flush(c);
    return;
  }
  after_last_send(c);
}

// Everything answered so far is sent: close if that was the last answer, or if the client has
// finished sending and nothing it sent is left; otherwise, while draining, see whether the
// connection can go now.
void Worker::after_last_send(Connection& c) {
  if (c.waiting || c.closing) return;
  if (c.close_after_send) {
    if (c.linger_after_send) {
      start_linger(c);
    } else {
      begin_close(c);
    }
    return;
  }
  if (c.peer_closed && c.input.empty() && !c.output_blocked) {
    begin_close(c);
    return;
  }
  if (draining_) dismiss_idle(c);
}

void Worker::on_timer(Connection& c, int result) {
  c.timer_armed = false;
  if (c.closing) {
    maybe_finish_close(c);
    return;
  }
  if (result == -ECANCELED) return;  // removed: the connection is closing
  auto then = std::move(c.deferred);
  c.deferred = nullptr;
  c.waiting = false;
  if (then) then(c.exchange);
  if (c.waiting) return;  // it deferred again
  if (!c.exchange.responded_) c.exchange.respond(500, "the handler did not answer\n", "text/plain");
  c.parser.next();
  resume_input(c);
}

void Worker::on_peer_closed(Connection& c) {
  // The client finished sending. Whatever it asked for before, pipelined requests included, is
  // still answered (a half-closed client can read), then the connection closes
  // (after_last_send). A request it left unfinished is dropped with it.
  c.peer_closed = true;
  const bool work_left = c.waiting || c.send_inflight || !c.out_pending.empty() ||
                         !c.input.empty() || c.output_blocked;
  if (c.lingering || c.closing || !work_left) begin_close(c);
}

void Worker::start_linger(Connection& c) {
  c.lingering = true;
  c.last_activity_ns = now_ns_;
  io_uring_sqe* sqe = ring_.next_sqe();
  io_uring_prep_shutdown(sqe, static_cast<int>(c.index), SHUT_WR);
  sqe->flags |= IOSQE_FIXED_FILE;
  io_uring_sqe_set_data64(sqe, pack_user_data(Op::kShutdown, c.index, c.generation));
  if (!c.recv_armed) arm_recv(c);
}

void Worker::begin_close(Connection& c) {
  if (c.closing) return;
  c.closing = true;
  closing_++;
  if (c.recv_armed) cancel(pack_user_data(Op::kRecv, c.index, c.generation));
  if (c.send_inflight) cancel(pack_user_data(Op::kSend, c.index, c.generation));
  if (c.timer_armed) {
    io_uring_sqe* sqe = ring_.next_sqe();
    io_uring_prep_timeout_remove(sqe, pack_user_data(Op::kTimer, c.index, c.generation), 0);
    io_uring_sqe_set_data64(sqe, pack_user_data(Op::kCancel, 0, 0));
  }
  maybe_finish_close(c);
}

void Worker::maybe_finish_close(Connection& c) {
  if (!c.in_use || !c.closing || c.close_submitted) return;
  if (c.recv_armed || c.send_inflight || c.timer_armed) return;
  io_uring_sqe* sqe = ring_.next_sqe();
  io_uring_prep_close_direct(sqe, c.index);
  io_uring_sqe_set_data64(sqe, pack_user_data(Op::kClose, c.index, c.generation));
  c.close_submitted = true;
}

void Worker::on_close(Connection& c, int result) {
  if (result == -ECANCELED) {
    // A close linked behind a send that did not complete (submit_send): the socket is still in
    // its slot. It closes once nothing else holds it.
    c.close_submitted = false;
    maybe_finish_close(c);
    return;
  }
  release(c);
}

void Worker::release(Connection& c) {
  if (c.waiting && inflight_ > 0) --inflight_;
  c.in_use = false;
  c.generation++;
  c.token.release();
  if (c.closing) closing_--;
  c.parser.reset();  // its body leaves the budget, its large buffers go
  c.deferred = nullptr;
  c.waiting = false;
  c.input.clear();
  c.out_pending.clear();
  c.out_sending.clear();
  // Do not keep a large buffer around for the next connection in this slot.
  constexpr size_t kKeep = 64 * 1024;
  if (c.input.capacity() > kKeep) c.input.shrink_to_fit();
  if (c.out_pending.capacity() > kKeep) c.out_pending.shrink_to_fit();
  if (c.out_sending.capacity() > kKeep) c.out_sending.shrink_to_fit();
  // Swap-remove from the live list.
  uint32_t last = live_.back();
  live_[c.live_position] = last;
  connections_[last].live_position = c.live_position;
  live_.pop_back();
  if (pace_ != AcceptPace::kMultishot) pace_accepts();
}

void Worker::on_signal(int result) {
  if (result == static_cast<int>(sizeof(signal_info_))) {
    start_drain(DrainMode::kStop, spec_.drain_timeout, UniqueFd());
  }
  arm_signal_read();
}

// Commands from the supervisor (worker/channel.h): kServing (a replacement now owns the slot),
// kDrain, the handover one carrying the successor's inbox, and kMessage, an operator's line for
// the service. The channel closing means the supervisor is gone: stop.
void Worker::on_status(int result) {
  if (result < 0) {
    spdlog::error("status channel: {}", strerror(-result));
    start_drain(DrainMode::kStop, spec_.drain_timeout, UniqueFd());
    return;
  }
  while (true) {
    auto received = receive_channel_message(spec_.status_fd);
    if (!received) {
      if (received.error().code() == std::errc::resource_unavailable_try_again) break;
      if (received.error().code() == std::errc::protocol_error) {
        spdlog::warn("status channel: {}", received.error().message());
        continue;
      }
      spdlog::error("{}", received.error().message());
      start_drain(DrainMode::kStop, spec_.drain_timeout, UniqueFd());
      return;
    }
    if (received->end) {
      spdlog::warn("the supervisor went away; stopping");
      start_drain(DrainMode::kStop, spec_.drain_timeout, UniqueFd());
      return;
    }
    const ChannelMessage& message = received->message;
    switch (message.command) {
      case ChannelCommand::kServing:
        // We replace another worker and the slot is ours now: take over its entry, starting
        // from the connections steered here so far.
        publishing_ = true;
        accepted_ = load_field(my_slot_->steered);
        break;
      case ChannelCommand::kDrain:
        start_drain(static_cast<DrainMode>(message.value), std::chrono::milliseconds(message.timeout_ms),
                    std::move(received->fd));
        break;
      case ChannelCommand::kMessage:
        // The text was checked on receipt (common/message_text.h): one line, no control
        // characters, so it goes into the log as it is, where the operator who sent it looks.
        spdlog::info("message: {}{}", message.text, on_message_ ? "" : " (this service takes no messages)");
        if (on_message_) on_message_(message.text);
        break;
      default:
        spdlog::warn("unexpected command {} from the supervisor", static_cast<unsigned>(message.command));
        break;
    }
  }
  arm_poll(spec_.status_fd, Op::kStatusPoll, 0);
}

// --- fd inboxes: --mode handoff, and connections handed over by the worker we replace ----------

void Worker::on_inbox_ready(uint32_t inbox_index, int result) {
  Inbox& inbox = inboxes_[inbox_index];
  if (result < 0) {
    spdlog::error("fd inbox: {}", strerror(-result));
    inbox.open = false;
    return;
  }
  while (true) {
    auto message = receive_channel_message(inbox.fd);
    if (!message) {
      if (message.error().code() == std::errc::resource_unavailable_try_again) break;
      if (message.error().code() == std::errc::protocol_error) continue;  // its fd is closed
      spdlog::error("fd inbox: {}", message.error().message());
      inbox.open = false;
      return;
    }
    if (message->end) {  // the sender is done (a drained predecessor, or a stopping supervisor)
      inbox.open = false;
      return;
    }
    if (message->message.command != ChannelCommand::kConnection || !message->fd) continue;
    if (free_installs_.empty()) {
      spdlog::warn("fd inbox: {} connections waiting to be installed; dropping one", kInstallEntries);
      continue;  // the UniqueFd closes it
    }
    uint32_t entry = free_installs_.back();
    free_installs_.pop_back();
    Install& install = installs_[entry];
    install.fd = std::move(message->fd);
    install.slot = install.fd.get();
    install.counts_as_accept = inbox.counts_as_accept;
    // The kernel picks a free fixed-file slot and writes its index back into install.slot.
    io_uring_sqe* sqe = ring_.next_sqe();
    io_uring_prep_files_update(sqe, &install.slot, 1, IORING_FILE_INDEX_ALLOC);
    io_uring_sqe_set_data64(sqe, pack_user_data(Op::kInstall, entry, 0));
  }
  arm_poll(inbox.fd, Op::kInboxPoll, inbox_index);
}

void Worker::on_installed(uint32_t entry, int result) {
  Install& install = installs_[entry];
  install.fd.reset();  // the fixed-file table holds its own reference now
  free_installs_.push_back(entry);
  if (result < 0) {
    spdlog::warn("fd inbox: cannot install connection: {}", strerror(-result));
    return;
  }
  if (install.counts_as_accept) {
    accepted_++;
    record_accepted(*stats_);
  }
  open_connection(static_cast<uint32_t>(install.slot), install.counts_as_accept);
}

}  // namespace lbd
