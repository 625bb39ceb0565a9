// One app's log file, <dir>/<app>.log, with size-based rotation. Used by LogCollector's writer
// thread only (its calls may block on a slow disk; the supervisor's thread never makes them).
//
//   auto file = LogFile::open({.dir = "/var/log/lbd", .app = "web", .max_bytes = 10 << 20, .keep_files = 5});
//   file->append(records);      // whole records, each ending in '\n'
//
// Rotation: before a record would take app.log past max_bytes, app.log.(N-1) -> app.log.N, ...,
// app.log -> app.log.1 (each rename replaces the target, so the oldest falls off the end), and a
// fresh app.log is opened. Files are cut only between records, so every file holds whole lines
// and, as long as max_bytes is at least one record, no file is ever larger than max_bytes.
// A reader following app.log (lbctl logs -f) sees its inode change and finishes the old file
// first: nothing is written to a file after it has been renamed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"
#include "common/unique_fd.h"

namespace lbd::logs {

struct LogFileOptions {
  std::string dir;          // must exist
  std::string app;          // a valid app name (record.h)
  uint64_t max_bytes = 0;   // rotate before the file would pass this
  unsigned keep_files = 0;  // rotated files kept; 0: app.log is deleted when it is full
  int group = -1;           // the group that may read the log (the program's); -1: lbd's own
};

class LogFile {
 public:
  // Opens <dir>/<app>.log for appending, creating it (0640, in `group` when given). An existing
  // file is continued, and rotated first if it is already full.
  static Result<LogFile> open(LogFileOptions options);

  // Appends `records` (whole records, each ending in '\n': the caller's batch), rotating between
  // records as needed. One write() per run of records that fits the current file. On an error
  // the rest of the batch is abandoned and a record cut short is truncated away, so the file
  // never holds a torn line.
  Result<void> append(std::string_view records);

  // Records written since open().
  uint64_t records_written() const { return records_written_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // <path>.N
  std::string rotated_path(unsigned n) const { return path_ + "." + std::to_string(n); }

 private:
  explicit LogFile(LogFileOptions options);
  Result<void> reopen();
  Result<void> rotate();
  Result<void> write_all(std::string_view bytes);

  LogFileOptions options_;
  std::string path_;
  UniqueFd fd_;
  uint64_t size_ = 0;
  uint64_t records_written_ = 0;
};

// mkdir -p: creates `dir` and its missing parents with `mode` (before the umask), in `group`
// when it is not -1 (directories that exist already are left as they are).
Result<void> make_directories(const std::string& dir, unsigned mode = 0755, int group = -1);

}  // namespace lbd::logs
