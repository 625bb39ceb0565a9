// The log record format (userspace/logs/record.h): what LogCollector writes is what `lbctl logs`
// parses back, field for field; app names are checked; timestamps are fixed-width.
#include "logs/record.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "common/result.h"

namespace lbd::logs {
namespace {

timespec at(time_t seconds, long nanoseconds) { return timespec{seconds, nanoseconds}; }

TEST(LogRecord, FormatsTheDocumentedFieldsAndParsesBack) {
  TimestampFormatter clock;
  std::string out;
  append_record(out, clock, at(1'700'000'000, 123'456'789), "web", 3, "out", "hello world");
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.back(), '\n');
  const std::string line = out.substr(0, out.size() - 1);
  // "YYYY-MM-DDTHH:MM:SS.123456 web 3 out hello world" (the date in local time)
  EXPECT_EQ(line.size(), kTimestampLength + std::string(" web 3 out hello world").size()) << line;
  EXPECT_EQ(line.substr(19, 8), ".123456 ") << line;
  EXPECT_EQ(line.substr(kTimestampLength), " web 3 out hello world");

  auto record = parse_record(line);
  ASSERT_TRUE(record) << line;
  EXPECT_EQ(record->timestamp, line.substr(0, kTimestampLength));
  EXPECT_EQ(record->app, "web");
  EXPECT_EQ(record->worker, 3u);
  EXPECT_EQ(record->stream, "out");
  EXPECT_EQ(record->text, "hello world");
}

TEST(LogRecord, TimestampsAreFixedWidthAndSortAsText) {
  TimestampFormatter clock;
  std::string a, b, c;
  append_record(a, clock, at(1'700'000'000, 999'999'000), "x", 0, "out", "");
  append_record(b, clock, at(1'700'000'001, 5'000), "x", 0, "out", "");
  append_record(c, clock, at(1'700'000'001, 10'000), "x", 0, "out", "");
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_EQ(b.substr(19, 7), ".000005");
  EXPECT_EQ(a.size(), b.size());
}

TEST(LogRecord, EmptyTextAndSpacesInTextSurvive) {
  TimestampFormatter clock;
  std::string out;
  append_record(out, clock, at(1'700'000'000, 0), "app", 0, "err", "");
  const std::string empty_line = out.substr(0, out.size() - 1);  // the record's views point into it
  auto empty = parse_record(empty_line);
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->text, "");
  EXPECT_EQ(empty->stream, "err");

  out.clear();
  append_record(out, clock, at(1'700'000'000, 0), "app", 12, "err+", "  two  spaces ");
  const std::string spaced_line = out.substr(0, out.size() - 1);
  auto spaced = parse_record(spaced_line);
  ASSERT_TRUE(spaced);
  EXPECT_EQ(spaced->text, "  two  spaces ");
  EXPECT_EQ(spaced->stream, "err+");
  EXPECT_EQ(spaced->worker, 12u);
}

TEST(LogRecord, ANewlineInANoteCannotSplitTheRecord) {
  TimestampFormatter clock;
  std::string out;
  append_record(out, clock, at(1'700'000'000, 0), "app", 1, "lbd", "first\nsecond");
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1);
  EXPECT_TRUE(out.ends_with(" lbd first second\n")) << out;
}

TEST(LogRecord, StreamNames) {
  EXPECT_EQ(stream_name(Stream::kOut), "out");
  EXPECT_EQ(stream_name(Stream::kErr), "err");
  EXPECT_EQ(stream_name(Stream::kLbd), "lbd");
  EXPECT_EQ(stream_name(Stream::kOut, true), "out+");
  EXPECT_EQ(stream_name(Stream::kErr, true), "err+");
}

TEST(LogRecord, NotRecords) {
  for (const char* line : {
           "",
           "hello",
           "2026-11-28T12:00:00.123456",                 // fields missing
           "2026-11-28T12:00:00.123456 web",             //
           "2026-11-28T12:00:00.123456 web 0",           //
           "2026-11-28 12:00:00.123456 web 0 out x",     // not one timestamp field
           "2026-11-28T12:00:00.12345 web 0 out x",      // short fraction
           "2026-11-28T12:00:00.123456 w/b 0 out x",     // bad app name
           "2026-11-28T12:00:00.123456 web -1 out x",    // bad worker
           "2026-11-28T12:00:00.123456 web 99999999999 out x",  // worker out of range
           "2026-11-28T12:00:00.123456 web 0 stdout x",  // bad stream
       }) {
    EXPECT_FALSE(parse_record(line)) << "'" << line << "'";
  }
  EXPECT_TRUE(parse_record("2026-11-28T12:00:00.123456 web 0 out"));  // empty text, no trailing space
}

TEST(LogRecord, AppNames) {
  for (const char* good : {"web", "a", "Web_2", "api.v1", "x-y", "0day"}) {
    EXPECT_TRUE(is_valid_app_name(good)) << good;
    EXPECT_NO_THROW(validate_app_name(good));
  }
  for (const char* bad : {"", ".", "..", "-x", "_x", ".hidden", "a/b", "a b", "tab\t", "é"}) {
    EXPECT_FALSE(is_valid_app_name(bad)) << bad;
    EXPECT_THROW(validate_app_name(bad), ConfigError) << bad;
  }
  EXPECT_TRUE(is_valid_app_name(std::string(kMaxAppName, 'a')));
  EXPECT_FALSE(is_valid_app_name(std::string(kMaxAppName + 1, 'a')));
}

}  // namespace
}  // namespace lbd::logs
