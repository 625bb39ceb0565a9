// lbload's response framing (tools/lbload/response_parser.h) on byte strings: where a response
// ends (Content-Length, chunked, the connection's close), whatever way the bytes are split
// across reads; the status, keep-alive and X-Worker it reports; and what it refuses.
#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <string_view>

#include "lbload/response_parser.h"

namespace lbd::load {

void PrintTo(ResponseParser::Status status, std::ostream* os) {
  switch (status) {
    case ResponseParser::Status::kNeedMore: *os << "kNeedMore"; return;
    case ResponseParser::Status::kComplete: *os << "kComplete"; return;
    case ResponseParser::Status::kBad: *os << "kBad"; return;
  }
  *os << "Status(" << static_cast<int>(status) << ")";
}

namespace {

using Status = ResponseParser::Status;

const std::string kLengthResponse =
    "HTTP/1.1 200 OK\r\nServer: lbd\r\nContent-Length: 13\r\nX-Worker: 1\r\n\r\nhello, world\n";
const std::string kChunkedResponse =
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-worker: 7\r\n\r\n"
    "5\r\nhello\r\n8\r\n, world\n\r\n0\r\n\r\n";

// Feeds `bytes` in pieces of `piece` bytes; returns the status after the last piece and checks
// that nothing before it claimed completion.
Status feed_in_pieces(ResponseParser& parser, std::string_view bytes, size_t piece) {
  Status last = Status::kNeedMore;
  for (size_t at = 0; at < bytes.size(); at += piece) {
    const std::string_view part = bytes.substr(at, piece);
    const auto step = parser.feed(part);
    last = step.status;
    if (last == Status::kBad) return last;
    if (last == Status::kComplete) {
      EXPECT_EQ(at + step.consumed, bytes.size()) << "completed early, piece " << piece;
      return last;
    }
    EXPECT_EQ(step.consumed, part.size());
  }
  return last;
}

TEST(LbloadResponseParser, ContentLengthResponse) {
  ResponseParser parser;
  const auto step = parser.feed(kLengthResponse);
  ASSERT_EQ(step.status, Status::kComplete);
  EXPECT_EQ(step.consumed, kLengthResponse.size());
  EXPECT_EQ(parser.status(), 200);
  EXPECT_TRUE(parser.keep_alive());
  EXPECT_TRUE(parser.has_worker());
  EXPECT_EQ(parser.worker(), "1");
}

// Found by tests/fuzz/lbload_response_fuzz: llhttp took this status line with a code of 0, and
// lbload counted a complete answer with status 0.
TEST(LbloadResponseParser, AStatusLineWithoutAValidCodeIsBad) {
  const std::string response =
      "HTTP/1.0  e051.1 200 OK\r\nContent-Length: 26\r\nX-Worker: 1\r\n\r\nhello, world3Sr\xff\xff\xff\xff\xff \rbu/y";
  for (size_t piece : {size_t{1}, size_t{7}, response.size()}) {
    ResponseParser parser;
    EXPECT_EQ(feed_in_pieces(parser, response, piece), Status::kBad) << "piece " << piece;
  }
}

TEST(LbloadResponseParser, ChunkedResponse) {
  ResponseParser parser;
  ASSERT_EQ(parser.feed(kChunkedResponse).status, Status::kComplete);
  EXPECT_EQ(parser.status(), 200);
  EXPECT_EQ(parser.worker(), "7") << "the header name is case-insensitive";
}

TEST(LbloadResponseParser, AnySplitAcrossReadsGivesTheSameAnswer) {
  for (const std::string& response : {kLengthResponse, kChunkedResponse}) {
    for (size_t piece = 1; piece <= response.size(); piece++) {
      ResponseParser parser;
      ASSERT_EQ(feed_in_pieces(parser, response, piece), Status::kComplete) << "piece " << piece;
      EXPECT_EQ(parser.status(), 200);
      EXPECT_FALSE(parser.worker().empty()) << "piece " << piece;
      EXPECT_EQ(parser.worker(), response == kLengthResponse ? "1" : "7") << "piece " << piece;
    }
  }
}

TEST(LbloadResponseParser, IncompleteBodyNeedsMore) {
  ResponseParser parser;
  const std::string cut = kLengthResponse.substr(0, kLengthResponse.size() - 3);
  EXPECT_EQ(parser.feed(cut).status, Status::kNeedMore);
  EXPECT_TRUE(parser.started());
  EXPECT_FALSE(parser.finish()) << "a close now cuts the response short";
}

TEST(LbloadResponseParser, KeepAliveResponsesOneAfterAnother) {
  ResponseParser parser;
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(parser.feed(kLengthResponse).status, Status::kComplete) << "response " << i;
    parser.next();
    ASSERT_EQ(parser.feed(kChunkedResponse).status, Status::kComplete) << "response " << i;
    EXPECT_EQ(parser.worker(), "7");
    parser.next();
  }
}

TEST(LbloadResponseParser, StopsAtTheEndOfOneResponse) {
  ResponseParser parser;
  const std::string two = kLengthResponse + kLengthResponse;
  const auto step = parser.feed(two);
  ASSERT_EQ(step.status, Status::kComplete);
  EXPECT_EQ(step.consumed, kLengthResponse.size());
}

TEST(LbloadResponseParser, ConnectionCloseMeansNoKeepAlive) {
  ResponseParser parser;
  ASSERT_EQ(parser.feed("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").status,
            Status::kComplete);
  EXPECT_FALSE(parser.keep_alive());
  parser.reset();
  ASSERT_EQ(parser.feed("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").status, Status::kComplete);
  EXPECT_FALSE(parser.keep_alive()) << "HTTP/1.0 without keep-alive";
}

TEST(LbloadResponseParser, BodyUntilCloseCompletesAtEof) {
  ResponseParser parser;
  EXPECT_EQ(parser.feed("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nsome body").status, Status::kNeedMore);
  EXPECT_TRUE(parser.finish());
  EXPECT_EQ(parser.status(), 200);
  EXPECT_FALSE(parser.keep_alive());
}

TEST(LbloadResponseParser, EofBeforeAnythingIsNotAResponse) {
  ResponseParser parser;
  EXPECT_FALSE(parser.started());
  EXPECT_FALSE(parser.finish());
}

TEST(LbloadResponseParser, ReportsErrorStatuses) {
  ResponseParser parser;
  ASSERT_EQ(parser.feed("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy").status,
            Status::kComplete);
  EXPECT_EQ(parser.status(), 503);
  EXPECT_FALSE(parser.has_worker());
  EXPECT_EQ(parser.worker(), "");
}

TEST(LbloadResponseParser, RefusesWhatIsNotAResponse) {
  const char* bad[] = {
      "HTTP/1.1 OK\r\n\r\n",                   // no status code
      "HTTP/9.9 200 OK\r\n\r\n",               // no such version
      "GET / HTTP/1.1\r\n\r\n",                // a request
      "hello, world\n",                        // not HTTP at all
      "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
  };
  for (const char* text : bad) {
    ResponseParser parser;
    EXPECT_EQ(parser.feed(text).status, Status::kBad) << text;
    EXPECT_NE(std::string(parser.error()), "") << text;
  }
}

TEST(LbloadResponseParser, ResetStartsOverAfterABadResponse) {
  ResponseParser parser;
  ASSERT_EQ(parser.feed("garbage\r\n").status, Status::kBad);
  parser.reset();
  EXPECT_EQ(parser.feed(kLengthResponse).status, Status::kComplete);
}

TEST(LbloadResponseParser, OverlongWorkerHeaderNamesAreNotMistaken) {
  ResponseParser parser;
  ASSERT_EQ(parser.feed("HTTP/1.1 200 OK\r\nX-Worker-Extra: 9\r\nX-Worke: 8\r\nContent-Length: 0\r\n\r\n").status,
            Status::kComplete);
  EXPECT_FALSE(parser.has_worker());
}

}  // namespace
}  // namespace lbd::load
