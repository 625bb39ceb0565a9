#include "lbload/engine.h"

#include <sys/socket.h>

#include <cerrno>

namespace lbd::load {

namespace {

// user_data: which operation a completion belongs to. Never a raw fd: a slot's descriptor is
// reused as soon as its connection closes, so every operation also carries the slot's
// generation, and a completion from an older generation is stale and dropped.
//   bits 63..56  Op
//   bits 55..32  the slot's generation (24 bits, wraps)
//   bits 31..0   slot index (which is also its direct descriptor)
enum class Op : uint8_t {
  kSocket = 1,  // IORING_OP_SOCKET into the slot (completes only on failure)
  kConnect,     // connect (completes only on failure)
  kSend,        // the request (completes only on failure or a short send)
  kRecv,        // the response, or (--connect-only) the server's close
  kIgnore,      // cancel and close on the way out: nothing to do with the result
};
constexpr uint32_t kGenerationMask = 0xFFFFFF;

// Entries one slot can queue in a turn of the loop: cancel + close of the old connection, then
// the chain of the new one.
constexpr unsigned kMaxEntriesPerSlot = 6;
// The chain that opens a connection: socket, connect, send, recv.
constexpr unsigned kConnectChainEntries = 4;

constexpr uint64_t pack(Op op, uint32_t index, uint32_t generation) {
  return static_cast<uint64_t>(op) << 56 | static_cast<uint64_t>(generation & kGenerationMask) << 32 | index;
}

constexpr int64_t kMillisecond = 1'000'000;
// The sweep for deadlines and timers runs at most this often: the resolution of --timeout and
// --hold-interval. It walks every slot, so not on every turn of the loop.
constexpr int64_t kSweepGapNs = 1 * kMillisecond;
// The loop wakes at least this often, to notice a stop (SIGINT).
constexpr int64_t kMaxWaitNs = 100 * kMillisecond;
// After failed connects in a row a closed-loop slot waits 1, 2, 4 ... 64 ms before the next
// attempt: a server that refuses everything is counted, not hammered at 100 % CPU.
constexpr int64_t kMaxBackoffNs = 64 * kMillisecond;

int64_t backoff_ns(unsigned failures) {
  return std::min<int64_t>(kMillisecond << std::min(failures - 1, 6u), kMaxBackoffNs);
}

bool is_success_status(int status) { return status >= 200 && status < 400; }

}  // namespace

SharedRun::SharedRun(const Options& opts) : options(opts) {
  for (const auto& p : opts.mix.paths()) requests.push_back(build_request(opts, p.path));
  held_request = build_request(opts, opts.target.path);
}

Result<std::unique_ptr<Engine>> Engine::create(SharedRun& run, const ThreadShare& share) {
  const uint32_t slots = share.connections + share.held;
  // A slot queues at most kMaxEntriesPerSlot entries per turn of the loop (cancel, close, then
  // socket, connect, send, recv), so with room for all of them a turn needs no early flush (an
  // extra system call each). Past 4096 entries the queue is flushed early when full: it never
  // splits a linked chain (ClientRing::reserve), so that costs system calls, not correctness.
  unsigned entries = 64;
  while (entries < 4096 && entries < slots * kMaxEntriesPerSlot) entries *= 2;
  auto ring = ClientRing::create(entries, slots);
  if (!ring) return ring.error().wrap("thread " + std::to_string(share.index));
  return std::unique_ptr<Engine>(new Engine(run, share, std::move(*ring), slots));
}

Engine::Engine(SharedRun& run, const ThreadShare& share, ClientRing ring, uint32_t slot_count)
    : run_(run),
      options_(run.options),
      share_(share),
      ring_(std::move(ring)),
      slot_count_(slot_count),
      slots_(new Slot[slot_count]),
      buffers_(new char[static_cast<size_t>(slot_count) * kRecvBufferBytes]),
      stats_(run.options.mix.size()),
      random_(0x6c626c6f6164ull + share.index),  // fixed seeds: runs choose paths reproducibly
      timeout_ns_(std::chrono::nanoseconds(run.options.timeout).count()) {
  for (uint32_t i = share.connections; i < slot_count_; i++) slots_[i].role = Role::kHeld;
  stats_.held.connections = share.held;
  if (options_.open_loop()) {
    period_ns_ = 1e9 * options_.threads / *options_.rate;
    // Popped from the back: slot 0 first.
    for (uint32_t i = share.connections; i-- > 0;) free_.push_back(i);
  }
}

Engine::~Engine() = default;

// --- the loop ---------------------------------------------------------------------------------

Result<void> Engine::run() {
  now_ns_ = monotonic_ns();
  const int64_t interval_ns = std::chrono::nanoseconds(options_.hold_interval).count();
  const unsigned held_total = options_.hold;
  for (uint32_t i = share_.connections; i < slot_count_; i++) {
    // Held connections spread their requests evenly over the interval, across all threads.
    const uint64_t rank = share_.held_before + (i - share_.connections);
    slots_[i].wake_ns = run_.start_ns + static_cast<int64_t>(interval_ns * rank / held_total);
    schedule(slots_[i].wake_ns);
  }
  if (!options_.open_loop()) {
    for (uint32_t i = 0; i < share_.connections; i++) start_closed_loop_request(i);
  }

  while (now_ns_ < run_.end_ns && !run_.stop->load(std::memory_order_relaxed) && !finished_early()) {
    if (options_.open_loop()) dispatch_due();
    if (now_ns_ >= next_sweep_ns_) sweep();

    const int64_t wait_ns = std::max<int64_t>(0, next_wake_ns() - now_ns_);
    __kernel_timespec ts{wait_ns / 1'000'000'000, wait_ns % 1'000'000'000};
    io_uring_cqe* cqe = nullptr;
    const int err = io_uring_submit_and_wait_timeout(ring_.get(), &cqe, 1, &ts, nullptr);
    if (err < 0 && err != -ETIME && err != -EINTR && err != -EBUSY) {
      return Error::from_errno(-err, "io_uring wait");
    }
    now_ns_ = monotonic_ns();
    reap();
  }
  finished_ns_ = now_ns_;
  // In-flight requests are abandoned, like wrk's: destroying the ring closes their sockets.
  return {};
}

int64_t Engine::next_wake_ns() const {
  int64_t wake = std::min({run_.end_ns, next_sweep_ns_, now_ns_ + kMaxWaitNs});
  if (options_.open_loop()) {
    if (!budget_spent_) wake = std::min(wake, intended_ns(due_));
    if (begun_ < due_) wake = std::min(wake, intended_ns(begun_) + timeout_ns_);  // expires
  }
  return wake;
}

bool Engine::finished_early() const {
  // Only a --requests budget ends a run before its time, once every request of ours is answered.
  return budget_spent_ && busy_load_ == 0 && begun_ == due_;
}

// Completions are copied out and the queue advanced before handling them: handling queues new
// submissions, and a full submission queue is flushed, which may post completions of its own.
void Engine::reap() {
  constexpr unsigned kBatch = 256;
  io_uring_cqe* cqes[kBatch];
  struct Done {
    uint64_t user_data;
    int res;
  } done[kBatch];
  while (true) {
    const unsigned n = io_uring_peek_batch_cqe(ring_.get(), cqes, kBatch);
    if (n == 0) return;
    for (unsigned i = 0; i < n; i++) done[i] = {cqes[i]->user_data, cqes[i]->res};
    io_uring_cq_advance(ring_.get(), n);
    for (unsigned i = 0; i < n; i++) complete(done[i].user_data, done[i].res);
    if (n < kBatch) return;
  }
}

void Engine::complete(uint64_t user_data, int res) {
  const auto op = static_cast<Op>(user_data >> 56);
  const auto generation = static_cast<uint32_t>(user_data >> 32) & kGenerationMask;
  const auto index = static_cast<uint32_t>(user_data);
  if (op == Op::kIgnore || index >= slot_count_) return;
  Slot& slot = slots_[index];
  if (generation != slot.generation || slot.state != State::kBusy) return;  // stale
  // A link broken further up: the operation that failed reports why in its own completion.
  if (res == -ECANCELED) return;

  switch (op) {
    case Op::kSocket:
    case Op::kConnect:
      fail(index, res < 0 ? classify_errno(-res) : ErrorKind::kOther, /*connect_failed=*/true);
      return;
    case Op::kSend:  // a failure, or a short send (MSG_WAITALL makes that one rare)
      fail(index, res < 0 ? classify_errno(-res) : ErrorKind::kOther, /*connect_failed=*/false);
      return;
    case Op::kRecv:
      on_recv(index, res);
      return;
    case Op::kIgnore:
      return;
  }
}

void Engine::on_recv(uint32_t index, int res) {
  Slot& slot = slots_[index];
  if (!sends_requests(slot)) {
    // Whatever the server says, we wait for it to hang up; an orderly close and a reset both
    // complete the connection.
    if (res > 0) return submit_recv(index, /*poll_first=*/true);
    if (res == 0 || res == -ECONNRESET) {
      slot.connect_failures = 0;
      if (slot.role == Role::kLoad) stats_.record_success(0, static_cast<uint64_t>(now_ns_ - slot.origin_ns));
      close_socket(index, /*cancel_pending=*/false);
      return end_request(index, false);
    }
    return fail(index, classify_errno(-res), false);
  }
  if (res < 0) return fail(index, classify_errno(-res), false);
  if (res == 0) {
    if (slot.parser.finish()) return on_response(index, /*peer_closed=*/true);
    return fail(index, ErrorKind::kClosed, false);
  }
  const auto step = slot.parser.feed(std::string_view(buffer(index), static_cast<size_t>(res)));
  switch (step.status) {
    case ResponseParser::Status::kNeedMore:
      return submit_recv(index, /*poll_first=*/false);
    case ResponseParser::Status::kBad:
      return fail(index, ErrorKind::kBadResponse, false);
    case ResponseParser::Status::kComplete:
      return on_response(index, /*peer_closed=*/false);
  }
}

void Engine::on_response(uint32_t index, bool peer_closed) {
  Slot& slot = slots_[index];
  const bool ok = is_success_status(slot.parser.status());
  if (slot.role == Role::kLoad) {
    stats_.workers.add(slot.parser.worker());
    if (ok) {
      stats_.record_success(slot.path, static_cast<uint64_t>(now_ns_ - slot.origin_ns));
    } else {
      stats_.record_error(ErrorKind::kBadStatus);
    }
  } else {
    (ok ? stats_.held.requests : stats_.held.errors)++;
  }
  slot.connect_failures = 0;
  const bool keep = !peer_closed && slot.parser.keep_alive() &&
                    (options_.connection == ConnectionMode::kKeepAlive || slot.role == Role::kHeld);
  if (!keep) close_socket(index, /*cancel_pending=*/false);
  end_request(index, false);
}

// The request is counted and never retried: its connection is closed (whatever was still pending
// on it cancelled) and the slot goes on with a new one.
void Engine::fail(uint32_t index, ErrorKind kind, bool connect_failed) {
  Slot& slot = slots_[index];
  if (slot.role == Role::kLoad) {
    stats_.record_error(kind);
  } else {
    stats_.held.errors++;
  }
  close_socket(index, /*cancel_pending=*/true);
  if (connect_failed && slot.connect_failures < UINT8_MAX) slot.connect_failures++;
  end_request(index, connect_failed);
}

// --- requests ---------------------------------------------------------------------------------

void Engine::start_request(uint32_t index, uint32_t path, const std::string* request, int64_t origin_ns) {
  Slot& slot = slots_[index];
  slot.state = State::kBusy;
  slot.path = path;
  slot.request = request;
  slot.origin_ns = origin_ns;
  slot.deadline_ns = origin_ns + timeout_ns_;
  schedule(slot.deadline_ns);
  if (slot.role == Role::kLoad) busy_load_++;
  if (!slot.has_socket) return open_connection(index);
  slot.parser.next();
  submit_send(index, 0);
  submit_recv(index, /*poll_first=*/true);
}

void Engine::start_closed_loop_request(uint32_t index) {
  if (now_ns_ >= run_.end_ns) return;
  if (!run_.claim()) {
    budget_spent_ = true;
    return;
  }
  const uint32_t path = pick_path();
  start_request(index, path, &run_.requests[path], now_ns_);
}

void Engine::start_held_request(uint32_t index) {
  Slot& slot = slots_[index];
  const int64_t interval_ns = std::chrono::nanoseconds(options_.hold_interval).count();
  // The next tick on the original schedule; after a stall, one interval from now (no burst).
  slot.wake_ns += interval_ns;
  if (slot.wake_ns <= now_ns_) slot.wake_ns = now_ns_ + interval_ns;
  start_request(index, 0, &run_.held_request, now_ns_);
}

void Engine::end_request(uint32_t index, bool connect_failed) {
  Slot& slot = slots_[index];
  if (slot.role == Role::kLoad) busy_load_--;
  slot.state = slot.has_socket ? State::kIdle : State::kFree;
  if (slot.role == Role::kHeld) return schedule(slot.wake_ns);
  if (options_.open_loop()) {
    // Failed requests are not retried; the rate, not this slot, decides when the next one goes.
    if (slot.has_socket) {
      idle_.push_back(index);
    } else {
      free_.push_back(index);
    }
    return;
  }
  if (connect_failed) {
    slot.state = State::kBackoff;
    slot.wake_ns = now_ns_ + backoff_ns(slot.connect_failures);
    return schedule(slot.wake_ns);
  }
  start_closed_loop_request(index);
}

int64_t Engine::intended_ns(uint64_t k) const {
  return run_.start_ns +
         static_cast<int64_t>((static_cast<double>(k) + static_cast<double>(share_.index) / options_.threads) *
                              period_ns_);
}

// Open loop: every request whose intended time has come goes out on a free connection; those that
// find none wait in order (the wait counts in their latency), and one that has waited longer than
// --timeout is a timeout without being sent.
void Engine::dispatch_due() {
  while (!budget_spent_) {
    const int64_t due = intended_ns(due_);
    if (due > now_ns_ || due >= run_.end_ns) break;
    if (!run_.claim()) {
      budget_spent_ = true;
      break;
    }
    due_++;
  }
  while (begun_ < due_) {
    const int64_t intended = intended_ns(begun_);
    if (now_ns_ - intended >= timeout_ns_) {
      stats_.record_error(ErrorKind::kTimeout);
      begun_++;
      continue;
    }
    // Up to --connections are opened before any is reused: the load spreads over all of them,
    // as with wrk2, instead of riding on the one or two a light load needs.
    uint32_t index;
    if (!free_.empty()) {
      index = free_.back();
      free_.pop_back();
    } else if (!idle_.empty()) {
      index = idle_.front();
      idle_.pop_front();
    } else {
      break;
    }
    const uint32_t path = pick_path();
    start_request(index, path, &run_.requests[path], intended);
    begun_++;
  }
}

// Deadlines, backoffs and held connections' ticks: one walk over the slots, which also finds the
// earliest of them for the next walk.
void Engine::sweep() {
  int64_t next = INT64_MAX;
  for (uint32_t i = 0; i < slot_count_; i++) {
    Slot& slot = slots_[i];
    if (slot.state == State::kBusy && now_ns_ >= slot.deadline_ns) {
      fail(i, ErrorKind::kTimeout, false);
    } else if (slot.state == State::kBackoff && now_ns_ >= slot.wake_ns) {
      slot.state = State::kFree;
      start_closed_loop_request(i);
    } else if (slot.role == Role::kHeld && slot.state != State::kBusy && now_ns_ >= slot.wake_ns) {
      start_held_request(i);
    }
    if (slot.state == State::kBusy) {
      next = std::min(next, slot.deadline_ns);
    } else if (slot.state == State::kBackoff || slot.role == Role::kHeld) {
      next = std::min(next, slot.wake_ns);
    }
  }
  next_sweep_ns_ = std::max(next, now_ns_ + kSweepGapNs);
}

// --- operations -------------------------------------------------------------------------------

// socket -> connect [-> send] -> recv as one chain: one trip through the loop opens the connection
// and sends the request. The socket goes straight into the slot's direct descriptor (no fd, so no
// O_CLOEXEC to forget: a direct descriptor is never inherited).
void Engine::open_connection(uint32_t index) {
  Slot& slot = slots_[index];
  slot.parser.reset();
  slot.has_socket = true;
  const Target& target = options_.target;

  // The whole chain in one submission, or it is no chain (see ClientRing::reserve).
  ring_.reserve(kConnectChainEntries);
  io_uring_sqe* sqe = ring_.next_sqe();
  io_uring_prep_socket_direct(sqe, target.family(), SOCK_STREAM, 0, index, 0);
  sqe->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
  sqe->user_data = pack(Op::kSocket, index, slot.generation);

  sqe = ring_.next_sqe();
  io_uring_prep_connect(sqe, static_cast<int>(index), target.sockaddr_ptr(), target.address_length);
  sqe->flags |= IOSQE_FIXED_FILE | IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
  sqe->user_data = pack(Op::kConnect, index, slot.generation);

  if (sends_requests(slot)) submit_send(index, IOSQE_IO_LINK);
  submit_recv(index, /*poll_first=*/true);
}

void Engine::submit_send(uint32_t index, unsigned sqe_flags) {
  Slot& slot = slots_[index];
  io_uring_sqe* sqe = ring_.next_sqe();
  // MSG_WAITALL: the kernel finishes a short send itself, so success needs no completion.
  io_uring_prep_send(sqe, static_cast<int>(index), slot.request->data(), slot.request->size(),
                     MSG_NOSIGNAL | MSG_WAITALL);
  sqe->flags |= IOSQE_FIXED_FILE | IOSQE_CQE_SKIP_SUCCESS | sqe_flags;
  sqe->user_data = pack(Op::kSend, index, slot.generation);
}

// `poll_first`: right after a send the answer is not there yet, so skip the attempt that would
// fail with EAGAIN and wait for data straight away.
void Engine::submit_recv(uint32_t index, bool poll_first) {
  Slot& slot = slots_[index];
  io_uring_sqe* sqe = ring_.next_sqe();
  io_uring_prep_recv(sqe, static_cast<int>(index), buffer(index), kRecvBufferBytes, 0);
  if (poll_first) sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
  sqe->flags |= IOSQE_FIXED_FILE;
  sqe->user_data = pack(Op::kRecv, index, slot.generation);
}

// Ends the slot's socket. Both operations run inline when submitted, in order, before anything
// queued after them, so the slot can take a new socket in the same batch. Operations still
// pending on the old one (after a timeout or error) are cancelled; their completions, and any
// late ones, carry the old generation and are dropped.
void Engine::close_socket(uint32_t index, bool cancel_pending) {
  Slot& slot = slots_[index];
  if (!slot.has_socket) return;
  slot.generation = (slot.generation + 1) & kGenerationMask;
  slot.has_socket = false;
  if (cancel_pending) {
    io_uring_sqe* sqe = ring_.next_sqe();
    io_uring_prep_cancel_fd(sqe, static_cast<int>(index), IORING_ASYNC_CANCEL_ALL | IORING_ASYNC_CANCEL_FD_FIXED);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    sqe->user_data = pack(Op::kIgnore, index, slot.generation);
  }
  io_uring_sqe* sqe = ring_.next_sqe();
  io_uring_prep_close_direct(sqe, index);
  sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
  sqe->user_data = pack(Op::kIgnore, index, slot.generation);
}

}  // namespace lbd::load
