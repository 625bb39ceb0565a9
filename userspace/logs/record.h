// The log record: one line of an app's log file, written by LogCollector and read by
// `lbctl logs`. Its format is stable (operators grep it, lbctl parses it):
//
//   2026-11-28T12:00:00.123456 web 0 out hello world
//   |                          |   | |   `- the text, as the child wrote it (no '\n'; may be empty)
//   |                          |   | `- stream: out | err | lbd (lbd's own notes), and out+ | err+
//   |                          |   |    for the second and later pieces of a line longer than the
//   |                          |   |    splitter's bound (the rest of the previous line of that
//   |                          |   |    worker's stream)
//   |                          |   `- worker id (the slot), decimal
//   |                          `- app name: [A-Za-z0-9][A-Za-z0-9_.-]* (no spaces, safe as a file name)
//   `- local time when lbd read the line, microseconds; fixed width, so records sort as strings
//
// Fields are separated by one space; the text is everything after the fourth space.
// (Timestamps are local wall-clock time: across a DST change or a clock step they do not sort.)
#pragma once

#include "common/app_name.h"

#include <time.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lbd::logs {

enum class Stream : uint8_t {
  kOut,  // the child's stdout
  kErr,  // the child's stderr
  kLbd,  // lbd's own notes about the app (dropped lines, ...)
};

// "out", "err", "lbd"; with `continuation`, "out+" and "err+".
std::string_view stream_name(Stream stream, bool continuation = false);

// App names become file names (<dir>/<app>.log) and record fields: common/app_name.h.
bool is_valid_app_name(std::string_view name);
// Throws ConfigError ("bad app name '...': ...") unless is_valid_app_name().
void validate_app_name(std::string_view name);

// "2026-11-28T12:00:00.123456": always this long.
inline constexpr size_t kTimestampLength = 26;

// Formats local timestamps, reusing the date and time while the second stays the same (one
// localtime_r per second instead of per line). Not shared between threads: one per thread.
class TimestampFormatter {
 public:
  void append(std::string& out, const timespec& when);
  // The current time (CLOCK_REALTIME).
  static timespec now();

 private:
  time_t second_ = -1;
  char prefix_[32] = {};  // "2026-11-28T12:00:00" for second_
};

// Appends one record and its '\n' to `out`. A '\n' in `text` (possible only in lbd's own notes)
// becomes a space: one record is one line.
void append_record(std::string& out, TimestampFormatter& clock, const timespec& when,
                   std::string_view app, uint32_t worker, std::string_view stream,
                   std::string_view text);

// Upper bound of a record's length without its text.
inline constexpr size_t kRecordOverhead = kTimestampLength + 1 + kMaxAppName + 1 + 10 + 1 + 4 + 1 + 1;

// A record read back; the views point into the line given to parse_record.
struct RecordView {
  std::string_view timestamp;
  std::string_view app;
  uint32_t worker = 0;
  std::string_view stream;  // as written: "out", "err+", ...
  std::string_view text;
};

// Parses one line (without its '\n'); nothing if it is not a record.
std::optional<RecordView> parse_record(std::string_view line);

}  // namespace lbd::logs
