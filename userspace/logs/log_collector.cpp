#include "logs/log_collector.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <map>
#include <mutex>
#include <system_error>
#include <utility>

#include "logs/log_file.h"

namespace lbd::logs {

namespace {

uint64_t count_lines(std::string_view records) {
  return static_cast<uint64_t>(std::count(records.begin(), records.end(), '\n'));
}

// The longest record this app can produce: a full piece of a long line with every field at its
// widest.
size_t max_record_bytes(const LogOptions& options) {
  return kRecordOverhead - kMaxAppName + options.app.size() + options.max_line_bytes;
}

}  // namespace

// The state both threads touch. Owned jointly by the collector and the writer thread, so that a
// writer stuck on a dead disk can be detached at shutdown without leaving it a dangling pointer.
struct LogCollector::Shared {
  Shared(LogFile log_file, std::string app_name, size_t max_buffered)
      : file(std::move(log_file)), app(std::move(app_name)), max_buffered_bytes(max_buffered) {}

  // The writer thread's loop: take the whole queue, write it, repeat; report drops once the queue
  // has room again; stop when asked and everything queued is written.
  void run();
  // Queues one `lbd` record per worker that lost lines since the last report. Holds `mutex`.
  void queue_drop_notes_locked();

  std::mutex mutex;
  std::condition_variable wake;      // to the writer: there is work, or stop
  std::condition_variable finished;  // to the destructor: the writer has stopped

  // Guarded by `mutex`:
  std::string queue;       // whole records waiting for the writer, oldest first
  size_t in_flight = 0;    // bytes the writer has taken and not finished writing
  // Lines dropped per worker and not reported yet. While it is not empty the queue counts as
  // full: every new line is dropped until the writer has caught up and reported these, so the
  // report sits in the file where the gap is and is not interleaved with later lines.
  std::map<uint32_t, uint64_t> unreported_drops;
  std::optional<Error> error;  // the latest write error, for take_error()
  bool stopping = false;
  bool done = false;

  std::atomic<uint64_t> dropped_lines{0};
  std::atomic<uint64_t> written_lines{0};

  // The writer thread's own:
  LogFile file;
  const std::string app;
  const size_t max_buffered_bytes;
  TimestampFormatter clock;
};

void LogCollector::Shared::run() {
  std::string batch;
  std::unique_lock lock(mutex);
  while (true) {
    wake.wait(lock, [&] { return stopping || !queue.empty() || !unreported_drops.empty(); });
    if (queue.empty()) {
      if (unreported_drops.empty()) break;  // stopping, and everything is written
      queue_drop_notes_locked();
      continue;
    }
    // Swap rather than copy: both buffers keep their capacity, so a steady stream allocates
    // nothing. The taken bytes still count against the bound (in_flight) until written.
    batch.swap(queue);
    in_flight = batch.size();
    lock.unlock();

    const uint64_t written_before = file.records_written();
    Result<void> result = file.append(batch);
    const uint64_t written = file.records_written() - written_before;
    const uint64_t lost = result ? 0 : count_lines(batch) - written;
    batch.clear();

    lock.lock();
    in_flight = 0;
    written_lines += written;
    if (!result) {
      dropped_lines += lost;
      error = result.error();
    }
    queue_drop_notes_locked();
  }
  done = true;
  finished.notify_all();
}

void LogCollector::Shared::queue_drop_notes_locked() {
  if (unreported_drops.empty()) return;
  const timespec now = TimestampFormatter::now();
  for (const auto& [worker, lines] : unreported_drops) {
    // Over the bound by at most one short record per worker: the report must get through.
    append_record(queue, clock, now, app, worker, stream_name(Stream::kLbd),
                  "dropped " + std::to_string(lines) + " lines from worker " + std::to_string(worker) +
                      " (log writer behind)");
  }
  unreported_drops.clear();
}

// --- pipes ------------------------------------------------------------------------------------

constexpr int kPipeBytesWithoutReader = 1 << 20;

Result<OutputPipe> make_output_pipe() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return Error::from_errno("pipe2");
  OutputPipe pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
  // Room for a while without a reader: when lbd's supervisor dies, a program's output waits here
  // until the next lbd adopts the program (docs/ARCHITECTURE.md, section 7). Best effort: the
  // kernel caps it at fs.pipe-max-size.
  (void)fcntl(pipe.write.get(), F_SETPIPE_SZ, kPipeBytesWithoutReader);
  const int flags = fcntl(pipe.read.get(), F_GETFL);
  if (flags < 0 || fcntl(pipe.read.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return Error::from_errno("fcntl O_NONBLOCK on a log pipe");
  }
  return pipe;
}

// --- LogCollector -----------------------------------------------------------------------------

Result<std::unique_ptr<LogCollector>> LogCollector::create(LogOptions options) {
  validate_app_name(options.app);
  if (options.dir.empty()) throw ConfigError("no log directory given");
  if (options.max_line_bytes == 0) throw ConfigError("the log line bound must be more than 0 bytes");
  // Every record must fit in one file (or rotation could not keep files under max_bytes) and in
  // the queue (or it could never be written).
  const size_t record = max_record_bytes(options);
  if (options.max_bytes < record) {
    throw ConfigError("log file size " + std::to_string(options.max_bytes) + " is too small: at least " +
                      std::to_string(record) + " bytes (one record)");
  }
  if (options.max_buffered_bytes < record) {
    throw ConfigError("log buffer " + std::to_string(options.max_buffered_bytes) + " is too small: at least " +
                      std::to_string(record) + " bytes (one record)");
  }

  LBD_TRY(make_directories(options.dir, 0750, options.group));
  auto file = LogFile::open({options.dir, options.app, options.max_bytes, options.keep_files, options.group});
  if (!file) return file.error();
  auto shared = std::make_shared<Shared>(std::move(*file), options.app, options.max_buffered_bytes);
  std::unique_ptr<LogCollector> collector(new LogCollector(std::move(options), shared));

  // The writer inherits this thread's signal mask: block everything in it, so a process signal
  // (SIGTERM, SIGCHLD) is never delivered to the writer instead of the supervisor's signalfd.
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  try {
    collector->writer_ = std::thread([shared] { shared->run(); });
  } catch (const std::system_error& e) {
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    return Error(e.code(), "start the log writer thread");
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  return collector;
}

LogCollector::LogCollector(LogOptions options, std::shared_ptr<Shared> shared)
    : options_(std::move(options)), shared_(std::move(shared)), read_buffer_(new char[kReadChunk]) {}

LogCollector::~LogCollector() {
  if (!writer_.joinable()) return;
  bool finished;
  {
    std::unique_lock lock(shared_->mutex);
    shared_->stopping = true;
    shared_->wake.notify_one();
    finished = shared_->finished.wait_for(lock, kFlushTimeout, [&] { return shared_->done; });
  }
  if (finished) {
    writer_.join();
  } else {
    // The disk has not taken our last records in kFlushTimeout (a hung NFS mount...). Waiting
    // longer would hang lbd's exit; the writer owns the shared state, so it may finish alone.
    writer_.detach();
  }
}

Result<ChildPipes> LogCollector::make_child_pipes(uint32_t worker_id) const {
  auto out = make_output_pipe();
  if (!out) return out.error().wrap("worker " + std::to_string(worker_id) + " stdout");
  auto err = make_output_pipe();
  if (!err) return err.error().wrap("worker " + std::to_string(worker_id) + " stderr");
  return ChildPipes{LogPipe(std::move(out->read), worker_id, Stream::kOut, options_.max_line_bytes),
                    LogPipe(std::move(err->read), worker_id, Stream::kErr, options_.max_line_bytes),
                    std::move(out->write), std::move(err->write)};
}

PipeState LogCollector::on_readable(LogPipe& pipe) {
  size_t budget = kReadBudget;
  while (budget > 0) {
    const ssize_t n = ::read(pipe.fd(), read_buffer_.get(), std::min(kReadChunk, budget));
    if (n > 0) {
      queue_lines(pipe, std::string_view(read_buffer_.get(), static_cast<size_t>(n)), false);
      budget -= static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return PipeState::kOpen;
    // EOF, or an error that will not go away: the stream is over; keep its last partial line.
    queue_lines(pipe, {}, true);
    return PipeState::kClosed;
  }
  return PipeState::kOpen;  // more may be waiting: epoll (level-triggered) will say so again
}

void LogCollector::flush(LogPipe& pipe) {
  if (on_readable(pipe) == PipeState::kOpen) queue_lines(pipe, {}, true);
}

void LogCollector::queue_lines(LogPipe& pipe, std::string_view bytes, bool at_eof) {
  staging_.clear();
  uint64_t lines = 0;
  // Every line of one read gets the same stamp: they arrived together.
  const timespec now = TimestampFormatter::now();
  const LineSink sink = [&](std::string_view text, bool continuation) {
    append_record(staging_, clock_, now, options_.app, pipe.worker_, stream_name(pipe.stream_, continuation), text);
    lines++;
  };
  pipe.splitter_.feed(bytes, sink);
  if (at_eof) pipe.splitter_.finish(sink);
  commit(pipe.worker_, lines);
}

void LogCollector::note(uint32_t worker_id, std::string_view text) {
  staging_.clear();
  append_record(staging_, clock_, TimestampFormatter::now(), options_.app, worker_id, stream_name(Stream::kLbd),
                text.substr(0, options_.max_line_bytes));
  commit(worker_id, 1);
}

void LogCollector::commit(uint32_t worker, uint64_t lines) {
  if (lines == 0) return;
  Shared& shared = *shared_;
  {
    std::lock_guard lock(shared.mutex);
    size_t keep = 0;  // bytes of staging_ that fit: whole records only
    if (shared.unreported_drops.empty()) {
      const size_t used = shared.queue.size() + shared.in_flight;
      const size_t room = used >= shared.max_buffered_bytes ? 0 : shared.max_buffered_bytes - used;
      if (staging_.size() <= room) {
        keep = staging_.size();
      } else if (room > 0) {
        const size_t last_newline = staging_.rfind('\n', room - 1);
        keep = last_newline == std::string::npos ? 0 : last_newline + 1;
      }
    }
    shared.queue.append(staging_, 0, keep);
    if (keep < staging_.size()) {
      const uint64_t dropped = count_lines(std::string_view(staging_).substr(keep));
      shared.unreported_drops[worker] += dropped;
      shared.dropped_lines += dropped;
    }
  }
  shared.wake.notify_one();
}

uint64_t LogCollector::dropped_lines() const { return shared_->dropped_lines.load(); }
uint64_t LogCollector::written_lines() const { return shared_->written_lines.load(); }

std::optional<Error> LogCollector::take_error() {
  std::lock_guard lock(shared_->mutex);
  return std::exchange(shared_->error, std::nullopt);
}

}  // namespace lbd::logs
