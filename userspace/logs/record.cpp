#include "logs/record.h"

#include "common/app_name.h"

#include <charconv>
#include <cstdio>

#include "common/result.h"

namespace lbd::logs {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Appends `value` as exactly `width` decimal digits, zero-padded.
void append_digits(std::string& out, uint64_t value, int width) {
  char digits[20];
  for (int i = width - 1; i >= 0; i--) {
    digits[i] = static_cast<char>('0' + value % 10);
    value /= 10;
  }
  out.append(digits, static_cast<size_t>(width));
}

// "YYYY-MM-DDTHH:MM:SS.uuuuuu": digits where digits belong.
bool looks_like_timestamp(std::string_view s) {
  static constexpr std::string_view kShape = "dddd-dd-ddTdd:dd:dd.dddddd";
  if (s.size() != kShape.size()) return false;
  for (size_t i = 0; i < s.size(); i++) {
    if (kShape[i] == 'd' ? !is_digit(s[i]) : s[i] != kShape[i]) return false;
  }
  return true;
}

}  // namespace

std::string_view stream_name(Stream stream, bool continuation) {
  switch (stream) {
    case Stream::kOut: return continuation ? "out+" : "out";
    case Stream::kErr: return continuation ? "err+" : "err";
    case Stream::kLbd: return "lbd";
  }
  return "?";
}

bool is_valid_app_name(std::string_view name) { return is_app_name(name); }

void validate_app_name(std::string_view name) {
  if (!is_valid_app_name(name)) {
    throw ConfigError("bad app name '" + std::string(name) + "': use " + kAppNameRule);
  }
}

timespec TimestampFormatter::now() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts;
}

void TimestampFormatter::append(std::string& out, const timespec& when) {
  if (when.tv_sec != second_) {
    tm local{};
    localtime_r(&when.tv_sec, &local);
    // %Y could exceed four digits only in the year 10000; strftime never overflows the buffer.
    if (strftime(prefix_, sizeof(prefix_), "%Y-%m-%dT%H:%M:%S", &local) == 0) prefix_[0] = '\0';
    second_ = when.tv_sec;
  }
  out.append(prefix_);
  out.push_back('.');
  append_digits(out, static_cast<uint64_t>(when.tv_nsec / 1000), 6);
}

void append_record(std::string& out, TimestampFormatter& clock, const timespec& when,
                   std::string_view app, uint32_t worker, std::string_view stream,
                   std::string_view text) {
  clock.append(out, when);
  out.push_back(' ');
  out.append(app);
  out.push_back(' ');
  char number[16];
  auto [end, ec] = std::to_chars(number, number + sizeof(number), worker);
  (void)ec;  // a uint32_t always fits
  out.append(number, end);
  out.push_back(' ');
  out.append(stream);
  out.push_back(' ');
  const size_t text_at = out.size();
  out.append(text);
  if (text.find('\n') != std::string_view::npos) {
    for (size_t i = text_at; i < out.size(); i++) {
      if (out[i] == '\n') out[i] = ' ';
    }
  }
  out.push_back('\n');
}

std::optional<RecordView> parse_record(std::string_view line) {
  RecordView record;
  // The four space-separated fields before the text.
  std::string_view fields[4];
  std::string_view rest = line;
  for (int i = 0; i < 4; i++) {
    const size_t space = rest.find(' ');
    if (space == std::string_view::npos) {
      // Only the last field may end the line (a record with empty text and no trailing space).
      if (i != 3) return std::nullopt;
      fields[i] = rest;
      rest = {};
      break;
    }
    fields[i] = rest.substr(0, space);
    rest.remove_prefix(space + 1);
  }
  if (!looks_like_timestamp(fields[0]) || !is_valid_app_name(fields[1])) return std::nullopt;
  const std::string_view worker = fields[2];
  auto [end, ec] = std::from_chars(worker.data(), worker.data() + worker.size(), record.worker);
  if (worker.empty() || ec != std::errc() || end != worker.data() + worker.size()) return std::nullopt;
  const std::string_view stream = fields[3];
  if (stream != "out" && stream != "err" && stream != "lbd" && stream != "out+" && stream != "err+") {
    return std::nullopt;
  }
  record.timestamp = fields[0];
  record.app = fields[1];
  record.stream = stream;
  record.text = rest;
  return record;
}

}  // namespace lbd::logs
