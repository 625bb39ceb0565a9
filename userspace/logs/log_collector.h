// Log capture for exec mode: each child's stdout and stderr come through pipes; every line is
// stamped (record.h) and written to the app's log file (log_file.h) by a writer thread.
//
// Two threads, one rule: the supervisor's thread never blocks on the disk (docs/ARCHITECTURE.md, invariant
// 5). It reads the pipes eagerly, so a child never stalls on a full pipe, and queues whole
// records for the writer thread in a queue of at most max_buffered_bytes. When a child writes
// faster than the disk takes it, the queue fills and the supervisor drops whole lines, counts
// them, and keeps dropping until the writer has caught up; then one `lbd` record per worker says
// "dropped N lines from worker W (log writer behind)". Nothing on the supervisor's side ever waits
// for the writer: the mutex they share is held only to append to or swap the queue.
//
// Why lines never interleave: one pipe shared by several children (or by stdout and stderr)
// would rely on the kernel's atomicity of write()s of at most PIPE_BUF bytes, and that is not
// enough: a child may write half a line, or a line longer than PIPE_BUF. So every (worker,
// stream) has its own pipe and its own LineSplitter, a line is assembled from one writer's bytes
// only however the child cuts its writes, a complete line becomes one record, and records are
// only ever queued and written whole.
//
// How the supervisor uses it (exec mode):
//
//   auto logs = LogCollector::create({.dir = log_dir, .app = name});   // at start-up
//   if (!logs) ...fatal: logs.error().message()
//
//   // spawning worker W:
//   auto pipes = (*logs)->make_child_pipes(W);         // before fork
//   // the child gets pipes->out_write as fd 1 and pipes->err_write as fd 2 (dup2), then execs;
//   // in the parent, after fork:
//   pipes->out_write.reset(); pipes->err_write.reset(); // or the pipes never reach EOF
//   poller.watch(pipes->out.fd(), ...); poller.watch(pipes->err.fd(), ...);  // keep both LogPipes
//
//   // epoll says a pipe is readable (EPOLLIN or EPOLLHUP):
//   if ((*logs)->on_readable(pipe) == PipeState::kClosed) { poller.unwatch(pipe.fd()); /* destroy pipe */ }
//
//   // giving a pipe up before its EOF (the child is gone but a grandchild still holds it):
//   (*logs)->flush(pipe); poller.unwatch(pipe.fd()); /* destroy pipe */
//
//   (*logs)->note(W, "worker 2 exited with status 1; restarting");   // lbd's own line, stream lbd
//   if (auto error = (*logs)->take_error()) spdlog::warn(...);        // now and then (a timer)
//
// The writer thread blocks every signal (the supervisor takes its signals through a signalfd), and
// nothing here may be touched in a forked child before exec.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "common/result.h"
#include "common/unique_fd.h"
#include "logs/line_splitter.h"
#include "logs/record.h"

namespace lbd::logs {

struct LogOptions {
  std::string dir;                                  // created (mkdir -p, 0750) if missing
  int group = -1;                                   // the group that may read dir and log; -1: lbd's
  std::string app;                                  // [A-Za-z0-9][A-Za-z0-9_.-]*: <dir>/<app>.log
  uint64_t max_bytes = 10 << 20;                    // rotate before app.log would pass this
  unsigned keep_files = 5;                          // rotated files kept: app.log.1 (newest) .. .N
  // Records queued for or being written by the writer thread, at most (plus one short drop
  // report per worker). Memory: up to twice this, the queue and the batch being written.
  size_t max_buffered_bytes = 8 << 20;
  size_t max_line_bytes = LineSplitter::kDefaultMaxLine;  // longer lines are split into pieces
};

// Which way a pipe is after on_readable.
enum class PipeState {
  kOpen,    // keep watching it
  kClosed,  // EOF (the child closed its end or exited) or a read error: unwatch and destroy it
};

// The read end of one child's stdout or stderr and its partial line. Move-only; destroying it
// closes the fd (a partial line not queued by on_readable's EOF or by flush() is lost with it).
class LogPipe {
 public:
  // `read_end` must be non-blocking (make_output_pipe does that).
  LogPipe(UniqueFd read_end, uint32_t worker, Stream stream,
          size_t max_line_bytes = LineSplitter::kDefaultMaxLine)
      : fd_(std::move(read_end)), worker_(worker), stream_(stream), splitter_(max_line_bytes) {}

  int fd() const { return fd_.get(); }
  uint32_t worker() const { return worker_; }
  Stream stream() const { return stream_; }

 private:
  friend class LogCollector;
  UniqueFd fd_;
  uint32_t worker_;
  Stream stream_;
  LineSplitter splitter_;
};

// A pipe for one output stream: pipe2(O_CLOEXEC), the read end O_NONBLOCK (the supervisor's),
// the write end blocking (the child's: a child that outruns lbd's reading waits, as it would on a
// terminal).
struct OutputPipe {
  UniqueFd read;
  UniqueFd write;
};
Result<OutputPipe> make_output_pipe();

// A child's stdout and stderr pipes.
struct ChildPipes {
  LogPipe out;          // the supervisor watches these
  LogPipe err;
  UniqueFd out_write;   // the child's fd 1 and 2 (O_CLOEXEC here: dup2 them into place); the
  UniqueFd err_write;   // parent closes its copies right after fork
};

class LogCollector {
 public:
  // Validates the options (ConfigError: a bad app name, sizes too small for one record), creates
  // the directory, opens <dir>/<app>.log and starts the writer thread. Errors from the kernel
  // (mkdir, open, thread creation) come back as an Error.
  static Result<std::unique_ptr<LogCollector>> create(LogOptions options);

  // Flushes what is queued (waiting at most kFlushTimeout for the writer) and stops the writer.
  ~LogCollector();
  LogCollector(const LogCollector&) = delete;
  LogCollector& operator=(const LogCollector&) = delete;

  // Both pipes of worker `worker_id`'s child, with this collector's line bound.
  Result<ChildPipes> make_child_pipes(uint32_t worker_id) const;
  // The read end of a pipe a predecessor made (a takeover): split into lines like its own.
  LogPipe adopt_pipe(UniqueFd read_end, uint32_t worker_id, Stream stream) const {
    return LogPipe(std::move(read_end), worker_id, stream, options_.max_line_bytes);
  }

  // Call when epoll reports `pipe` readable (or hung up). Reads what is there, at most
  // kReadBudget bytes per call so one chatty child cannot starve the loop (level-triggered epoll
  // calls again), and queues its complete lines. At EOF the partial line is queued too and the
  // answer is kClosed. Never blocks: the fd is non-blocking and the queue never waits.
  PipeState on_readable(LogPipe& pipe);

  // For a pipe given up before its EOF: reads what is there (within kReadBudget), then queues its
  // partial line too, so nothing the child wrote is silently lost with the pipe. The caller then
  // unwatches and destroys it.
  void flush(LogPipe& pipe);

  // lbd's own line in the app's log, stream `lbd` (e.g. "exited with status 1"). Subject to the
  // same bound as the children's lines.
  void note(uint32_t worker_id, std::string_view text);

  // Records dropped (queue full) or lost (a failed write) so far.
  uint64_t dropped_lines() const;
  // Records in the file(s) so far, lbd's own included.
  uint64_t written_lines() const;
  // The latest write or rotation error the writer thread met since the last call, if any: the
  // writer cannot log it itself (lbd's logger is single-threaded), so the supervisor asks.
  std::optional<Error> take_error();

  static constexpr size_t kReadBudget = 256 * 1024;
  static constexpr size_t kReadChunk = 64 * 1024;  // one read(), formatted and queued at once
  static constexpr std::chrono::milliseconds kFlushTimeout{5000};

 private:
  struct Shared;  // what the writer thread and the supervisor's thread share (log_collector.cpp)

  LogCollector(LogOptions options, std::shared_ptr<Shared> shared);
  // Queues the records in staging_ (`lines` of them, all from `worker`), or drops them.
  void commit(uint32_t worker, uint64_t lines);
  void queue_lines(LogPipe& pipe, std::string_view bytes, bool at_eof);

  LogOptions options_;
  std::shared_ptr<Shared> shared_;  // shared with the writer thread, which may outlive us (see ~)
  std::thread writer_;
  // The supervisor's thread only:
  TimestampFormatter clock_;
  std::string staging_;             // records being formatted, before they are queued
  std::unique_ptr<char[]> read_buffer_;
};

}  // namespace lbd::logs
