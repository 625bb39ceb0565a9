// The worker's HTTP layer on byte strings: RequestParser (incremental, pipelining-aware, with
// limits that turn bad input into 400/413/431) and append_response (the exact bytes a client
// sees). No sockets.
#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "worker/http.h"

namespace lbd {

// Failure messages say "kNeedMore", not "4-byte object <01-00 00-00>".
void PrintTo(RequestParser::Status status, std::ostream* os) {
  switch (status) {
    case RequestParser::Status::kNeedMore: *os << "kNeedMore"; return;
    case RequestParser::Status::kRequest: *os << "kRequest"; return;
    case RequestParser::Status::kError: *os << "kError"; return;
  }
  *os << "Status(" << static_cast<int>(status) << ")";
}

namespace {

using Status = RequestParser::Status;

// Feeds `data` in one call and expects a complete request that used every byte.
void expect_one_request(RequestParser& parser, std::string_view data) {
  auto step = parser.parse(data);
  ASSERT_EQ(step.status, Status::kRequest) << "input: " << data;
  EXPECT_EQ(step.consumed, data.size()) << "input: " << data;
}

// --- requests -------------------------------------------------------------------------------

TEST(HttpParser, ParsesASimpleGet) {
  RequestParser parser;
  expect_one_request(parser, "GET /hello HTTP/1.1\r\nHost: example\r\n\r\n");
  const Request& r = parser.request();
  EXPECT_EQ(r.method(), "GET");
  EXPECT_EQ(r.target(), "/hello");
  EXPECT_EQ(r.path(), "/hello");
  EXPECT_EQ(r.query(), "");
  EXPECT_EQ(r.body(), "");
  EXPECT_EQ(r.http_minor(), 1);
  ASSERT_EQ(r.headers().size(), 1u);
  EXPECT_EQ(r.headers()[0].name, "Host");
  EXPECT_EQ(r.headers()[0].value, "example");
  EXPECT_FALSE(parser.in_request());
}

TEST(HttpParser, SplitsTheTargetIntoPathAndQuery) {
  struct Case {
    const char* target;
    const char* path;
    const char* query;
  };
  const Case cases[] = {
      {"/", "/", ""},
      {"/work?us=10", "/work", "us=10"},
      {"/a/b?x=1&y=2", "/a/b", "x=1&y=2"},
      {"/empty?", "/empty", ""},
      {"/q?a=1?b=2", "/q", "a=1?b=2"},
  };
  for (const Case& c : cases) {
    RequestParser parser;
    expect_one_request(parser, std::string("GET ") + c.target + " HTTP/1.1\r\n\r\n");
    EXPECT_EQ(parser.request().target(), c.target);
    EXPECT_EQ(parser.request().path(), c.path) << c.target;
    EXPECT_EQ(parser.request().query(), c.query) << c.target;
  }
}

TEST(HttpParser, QueryParamFindsValuesByName) {
  RequestParser parser;
  expect_one_request(parser, "GET /work?us=10&flag&name=&x=a%20b HTTP/1.1\r\n\r\n");
  const Request& r = parser.request();
  EXPECT_EQ(r.query_param("us"), "10");
  EXPECT_EQ(r.query_param("flag"), "") << "a name without '=' is present with an empty value";
  EXPECT_EQ(r.query_param("name"), "");
  EXPECT_EQ(r.query_param("x"), "a%20b") << "values are not URL-decoded";
  EXPECT_EQ(r.query_param("u"), std::nullopt) << "a prefix of a name is not the name";
  EXPECT_EQ(r.query_param("missing"), std::nullopt);
}

TEST(HttpParser, HeaderLookupIgnoresCase) {
  RequestParser parser;
  expect_one_request(parser, "GET / HTTP/1.1\r\nContent-Type: text/plain\r\nX-Trace-ID: abc\r\n\r\n");
  const Request& r = parser.request();
  EXPECT_EQ(r.header("content-type"), "text/plain");
  EXPECT_EQ(r.header("CONTENT-TYPE"), "text/plain");
  EXPECT_EQ(r.header("x-trace-id"), "abc");
  EXPECT_EQ(r.header("X-Trace"), std::nullopt);
  EXPECT_EQ(r.header("Accept"), std::nullopt);
}

TEST(HttpParser, KeepsHeadersWithEmptyValuesAndTheHeadersAfterThem) {
  RequestParser parser;
  expect_one_request(parser, "GET / HTTP/1.1\r\nX-Empty:\r\nX-Blank: \r\nX-After: yes\r\n\r\n");
  const Request& r = parser.request();
  ASSERT_EQ(r.headers().size(), 3u);
  EXPECT_EQ(r.header("X-Empty"), "");
  EXPECT_EQ(r.header("X-Blank"), "");
  EXPECT_EQ(r.header("X-After"), "yes");
  EXPECT_EQ(r.headers()[2].name, "X-After");
}

TEST(HttpParser, AssemblesAHeaderSplitAcrossTwoReads) {
  RequestParser parser;
  std::string_view first = "GET /split HTTP/1.1\r\nX-Lo";
  std::string_view second = "ng-Name: first half, sec";
  std::string_view third = "ond half\r\nHost: h\r\n\r\n";
  auto step = parser.parse(first);
  EXPECT_EQ(step.status, Status::kNeedMore);
  EXPECT_EQ(step.consumed, first.size());
  EXPECT_TRUE(parser.in_request());
  EXPECT_EQ(parser.parse(second).status, Status::kNeedMore);
  expect_one_request(parser, third);
  EXPECT_EQ(parser.request().header("X-Long-Name"), "first half, second half");
  EXPECT_EQ(parser.request().header("Host"), "h");
  EXPECT_EQ(parser.request().headers().size(), 2u);
}

TEST(HttpParser, ParsesARequestFedOneByteAtATime) {
  const std::string text =
      "POST /one?by=one HTTP/1.1\r\nHost: bytes\r\nX-A: 1\r\nContent-Length: 5\r\n\r\nhello";
  RequestParser parser;
  for (size_t i = 0; i + 1 < text.size(); i++) {
    auto step = parser.parse(std::string_view(text).substr(i, 1));
    ASSERT_EQ(step.status, Status::kNeedMore) << "byte " << i;
    ASSERT_EQ(step.consumed, 1u) << "byte " << i;
  }
  expect_one_request(parser, std::string_view(text).substr(text.size() - 1));
  const Request& r = parser.request();
  EXPECT_EQ(r.method(), "POST");
  EXPECT_EQ(r.target(), "/one?by=one");
  EXPECT_EQ(r.header("host"), "bytes");
  EXPECT_EQ(r.header("x-a"), "1");
  EXPECT_EQ(r.body(), "hello");
}

TEST(HttpParser, RequestOutlivesTheReceiveBuffer) {
  // The worker recycles its receive buffer as soon as parse() returns.
  std::string buffer = "PUT /keep?me=1 HTTP/1.1\r\nX-Name: value\r\nContent-Length: 4\r\n\r\nbody";
  RequestParser parser;
  expect_one_request(parser, buffer);
  buffer.assign(buffer.size(), 'Z');
  const Request& r = parser.request();
  EXPECT_EQ(r.method(), "PUT");
  EXPECT_EQ(r.target(), "/keep?me=1");
  EXPECT_EQ(r.query_param("me"), "1");
  EXPECT_EQ(r.header("X-Name"), "value");
  EXPECT_EQ(r.body(), "body");
}

TEST(HttpParser, HandsOutPipelinedRequestsOneAtATime) {
  const std::string first = "GET /first HTTP/1.1\r\nHost: a\r\n\r\n";
  const std::string second = "GET /second HTTP/1.1\r\nHost: b\r\n\r\n";
  const std::string both = first + second;
  RequestParser parser;

  auto step = parser.parse(both);
  ASSERT_EQ(step.status, Status::kRequest);
  EXPECT_EQ(step.consumed, first.size()) << "the second request must be left unconsumed";
  EXPECT_EQ(parser.request().path(), "/first");

  // Until the first is answered, nothing more is parsed.
  auto held = parser.parse(std::string_view(both).substr(step.consumed));
  EXPECT_EQ(held.status, Status::kRequest);
  EXPECT_EQ(held.consumed, 0u);
  EXPECT_EQ(parser.request().path(), "/first");

  parser.next();
  auto rest = parser.parse(std::string_view(both).substr(step.consumed));
  ASSERT_EQ(rest.status, Status::kRequest);
  EXPECT_EQ(rest.consumed, second.size());
  EXPECT_EQ(parser.request().path(), "/second");
  EXPECT_EQ(parser.request().header("Host"), "b");
}

TEST(HttpParser, ReadsAContentLengthBody) {
  RequestParser parser;
  expect_one_request(parser, "POST /submit HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world");
  EXPECT_EQ(parser.request().method(), "POST");
  EXPECT_EQ(parser.request().body(), "hello world");
}

TEST(HttpParser, WaitsForTheWholeBody) {
  RequestParser parser;
  EXPECT_EQ(parser.parse("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234").status, Status::kNeedMore);
  EXPECT_TRUE(parser.in_request());
  expect_one_request(parser, "56789");
  EXPECT_EQ(parser.request().body(), "0123456789");
}

TEST(HttpParser, ReadsAChunkedBody) {
  RequestParser parser;
  expect_one_request(parser,
                     "POST /chunks HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
  EXPECT_EQ(parser.request().body(), "hello world");
}

TEST(HttpParser, ReadsAChunkedBodySplitAcrossReads) {
  RequestParser parser;
  EXPECT_EQ(parser.parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel").status,
            Status::kNeedMore);
  EXPECT_EQ(parser.parse("lo\r\n3\r\n!!!").status, Status::kNeedMore);
  expect_one_request(parser, "\r\n0\r\n\r\n");
  EXPECT_EQ(parser.request().body(), "hello!!!");
}

TEST(HttpParser, KeepAliveFollowsVersionAndConnectionHeader) {
  struct Case {
    const char* description;
    const char* request;
    bool keep_alive;
    int http_minor;
  };
  const Case cases[] = {
      {"HTTP/1.1 keeps the connection by default", "GET / HTTP/1.1\r\n\r\n", true, 1},
      {"HTTP/1.1 with Connection: close", "GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false, 1},
      {"HTTP/1.1 with Connection: Close (any case)", "GET / HTTP/1.1\r\nConnection: Close\r\n\r\n",
       false, 1},
      {"HTTP/1.0 closes by default", "GET / HTTP/1.0\r\n\r\n", false, 0},
      {"HTTP/1.0 with Connection: keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
       true, 0},
      {"an Upgrade request is answered and closed",
       "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", false, 1},
  };
  for (const Case& c : cases) {
    RequestParser parser;
    auto step = parser.parse(c.request);
    ASSERT_EQ(step.status, Status::kRequest) << c.description;
    EXPECT_EQ(parser.keep_alive(), c.keep_alive) << c.description;
    EXPECT_EQ(parser.request().http_minor(), c.http_minor) << c.description;
  }
}

TEST(HttpParser, KeepAliveIsDecidedPerPipelinedRequest) {
  RequestParser parser;
  std::string both = "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n";
  auto step = parser.parse(both);
  ASSERT_EQ(step.status, Status::kRequest);
  EXPECT_TRUE(parser.keep_alive());
  parser.next();
  ASSERT_EQ(parser.parse(std::string_view(both).substr(step.consumed)).status, Status::kRequest);
  EXPECT_FALSE(parser.keep_alive());
}

// --- bad input ------------------------------------------------------------------------------

TEST(HttpParser, RejectsMalformedRequestsWith400) {
  struct Case {
    const char* description;
    const char* request;
  };
  const Case cases[] = {
      {"not a method", "GARBAGE\r\n\r\n"},
      {"lowercase method", "get / HTTP/1.1\r\n\r\n"},
      {"space in the target", "GET /a b HTTP/1.1\r\n\r\n"},
      {"bad version", "GET / HTTP/9.Z\r\n\r\n"},
      {"CR without LF after the request line", "GET / HTTP/1.1\rHost: x\r\n\r\n"},
      {"CR without LF after a header", "GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n"},
      {"control character in a header value", "GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n"},
      {"obsolete line folding", "GET / HTTP/1.1\r\n Folded: x\r\n\r\n"},
      {"bad content length", "POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n"},
      {"two different Content-Lengths (request smuggling)",
       "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"},
      {"Content-Length with chunked (request smuggling)",
       "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"},
      {"chunked not last in a request's Transfer-Encoding",
       "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"},
      {"bad chunk size", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"},
      {"a TLS ClientHello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"},
  };
  for (const Case& c : cases) {
    RequestParser parser;
    auto step = parser.parse(c.request);
    EXPECT_EQ(step.status, Status::kError) << c.description;
    EXPECT_EQ(parser.error_status(), 400) << c.description;
    EXPECT_NE(std::string(parser.error_reason()), "") << c.description;
  }
}

// RFC 9112 section 5.1: "A server MUST reject, with a response status code of 400 (Bad
// Request), any received request message that contains whitespace between a header field name
// and colon." A name is a token, so a space inside one is just as malformed. Accepting either
// lets a front proxy and lbd disagree on which headers a request has (request smuggling), and
// the handler's header("Host") misses "Host : x".
TEST(HttpParser, RejectsWhitespaceInOrBeforeAHeaderNameWith400) {
  struct Case {
    const char* description;
    const char* request;
  };
  const Case cases[] = {
      {"space between name and colon", "GET / HTTP/1.1\r\nHost : example\r\n\r\n"},
      {"tab between name and colon", "GET / HTTP/1.1\r\nHost\t: example\r\n\r\n"},
      {"space inside the name", "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"},
  };
  for (const Case& c : cases) {
    RequestParser parser;
    auto step = parser.parse(c.request);
    EXPECT_EQ(step.status, Status::kError) << c.description;
    EXPECT_EQ(parser.error_status(), 400) << c.description;
  }
}

TEST(HttpParser, RejectsOversizedHeadersWith431) {
  RequestParser parser;  // default limit: 16 KiB
  std::string request = "GET / HTTP/1.1\r\nX-Big: " + std::string(17 * 1024, 'a') + "\r\n\r\n";
  auto step = parser.parse(request);
  EXPECT_EQ(step.status, Status::kError);
  EXPECT_EQ(parser.error_status(), 431);
}

TEST(HttpParser, RejectsMoreThanAHundredHeaderFieldsWith431) {
  // Small fields under the byte limit: each still costs the parser a span.
  auto request_with = [](int fields) {
    std::string request = "GET / HTTP/1.1\r\n";
    for (int i = 0; i < fields; i++) request += "X-" + std::to_string(i) + ": v\r\n";
    return request + "\r\n";
  };
  RequestParser hundred;
  EXPECT_EQ(hundred.parse(request_with(100)).status, Status::kRequest);
  EXPECT_EQ(hundred.request().headers().size(), 100u);
  RequestParser more;
  EXPECT_EQ(more.parse(request_with(101)).status, Status::kError);
  EXPECT_EQ(more.error_status(), 431);
  EXPECT_STREQ(more.error_reason(), "too many header fields");
}

TEST(HttpParser, InHeadUntilTheHeadersAreComplete) {
  RequestParser parser;
  EXPECT_FALSE(parser.in_head());
  EXPECT_EQ(parser.parse("GET / HTTP/1.1\r\nHost: x").status, Status::kNeedMore);
  EXPECT_TRUE(parser.in_head());
  EXPECT_EQ(parser.parse("\r\nContent-Length: 4\r\n\r\nab").status, Status::kNeedMore);
  EXPECT_FALSE(parser.in_head()) << "the head is complete; the body is another matter";
  EXPECT_EQ(parser.parse("cd").status, Status::kRequest);
  parser.next();
  EXPECT_FALSE(parser.in_head());
}

// Bytes llhttp never reports (blank lines before a request line, whitespace) still count: a
// client could otherwise send them forever on one connection.
TEST(HttpParser, BlankLinesBeforeARequestCountAgainstTheHeadLimit) {
  HttpLimits limits;
  limits.max_header_bytes = 1024;
  RequestParser parser(limits);
  std::string blank_lines;
  for (int i = 0; i < 511; i++) blank_lines += "\r\n";
  EXPECT_EQ(parser.parse(blank_lines).status, Status::kNeedMore);
  EXPECT_TRUE(parser.in_head()) << "a blank line starts the header timeout";
  auto step = parser.parse("\r\n\r\n");
  EXPECT_EQ(step.status, Status::kError);
  EXPECT_EQ(parser.error_status(), 431);
  EXPECT_EQ(parser.parse("GET / HTTP/1.1\r\n\r\n").status, Status::kError) << "nothing is parsed after an error";
}

TEST(HttpParser, AHeadEndingExactlyAtTheLimitIsAcceptedAndItsBodyDoesNotCount) {
  HttpLimits limits;
  const std::string head = "POST / HTTP/1.1\r\nContent-Length: 4000\r\n\r\n";
  limits.max_header_bytes = head.size();
  RequestParser parser(limits);
  auto step = parser.parse(head + std::string(4000, 'b'));
  ASSERT_EQ(step.status, Status::kRequest);
  EXPECT_EQ(step.consumed, head.size() + 4000);
  EXPECT_EQ(parser.request().body().size(), 4000u);
  parser.next();
  RequestParser one_over(limits);
  EXPECT_EQ(one_over.parse("\r\n" + head).status, Status::kError) << "the blank line before it counts";
  EXPECT_EQ(one_over.error_status(), 431);
}

TEST(HttpParser, EachRequestOnAConnectionGetsTheWholeHeadLimit) {
  HttpLimits limits;
  limits.max_header_bytes = 100;
  RequestParser parser(limits);
  const std::string request = "GET / HTTP/1.1\r\nX-Pad: " + std::string(50, 'p') + "\r\n\r\n";
  for (int i = 0; i < 10; i++) {
    auto step = parser.parse(request);
    ASSERT_EQ(step.status, Status::kRequest) << "request " << i;
    parser.next();
  }
}

TEST(HttpParser, ChunkExtensionsCountAgainstTheHeadLimit) {
  HttpLimits limits;
  limits.max_header_bytes = 256;
  RequestParser parser(limits);
  std::string request = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  ASSERT_EQ(parser.parse(request).status, Status::kNeedMore);
  std::string chunk = "1;ext=" + std::string(100, 'e') + "\r\nx\r\n";
  EXPECT_EQ(parser.parse(chunk).status, Status::kNeedMore);
  EXPECT_EQ(parser.parse(chunk).status, Status::kNeedMore);
  EXPECT_EQ(parser.parse(chunk).status, Status::kError) << "300 bytes of extensions in one request";
  EXPECT_EQ(parser.error_status(), 400);
}

TEST(HttpParser, BodiesShareTheBudgetAndLeaveItWhenAnswered) {
  BodyBudget budget;
  budget.limit = 1000;
  RequestParser first, second;
  first.set_body_budget(&budget);
  second.set_body_budget(&budget);
  auto post = [](size_t bytes) {
    return "POST / HTTP/1.1\r\nContent-Length: " + std::to_string(bytes) + "\r\n\r\n" + std::string(bytes, 'b');
  };
  ASSERT_EQ(first.parse(post(600)).status, Status::kRequest);
  EXPECT_EQ(budget.used, 600u);
  EXPECT_EQ(second.parse(post(600)).status, Status::kError);
  EXPECT_EQ(second.error_status(), 503);
  first.next();
  EXPECT_EQ(budget.used, 0u) << "an answered request's body leaves the budget";
  second.reset();
  EXPECT_EQ(second.parse(post(600)).status, Status::kRequest);
  {
    RequestParser gone;
    gone.set_body_budget(&budget);
    EXPECT_EQ(gone.parse(post(900).substr(0, 300)).status, Status::kNeedMore);
  }
  EXPECT_EQ(budget.used, 600u) << "a connection that goes mid-body gives its part back";
  second.reset();
  EXPECT_EQ(budget.used, 0u);
}

TEST(HttpParser, LargeBuffersAreGivenBackAfterTheRequest) {
  RequestParser parser;
  std::string request = "POST / HTTP/1.1\r\nContent-Length: 100000\r\n";
  for (int i = 0; i < 60; i++) request += "X-" + std::to_string(i) + ": " + std::string(100, 'v') + "\r\n";
  request += "\r\n" + std::string(100000, 'b');
  ASSERT_EQ(parser.parse(request).status, Status::kRequest);
  const size_t held = parser.buffer_capacity();
  EXPECT_GE(held, 100000u);
  parser.next();
  EXPECT_LT(parser.buffer_capacity(), 8u * 1024) << "was " << held;
  ASSERT_EQ(parser.parse("GET / HTTP/1.1\r\n\r\n").status, Status::kRequest);
  EXPECT_EQ(parser.request().target(), "/");
}

TEST(HttpParser, RejectsAnOversizedTargetWith431) {
  RequestParser parser;
  std::string request = "GET /" + std::string(17 * 1024, 'p') + " HTTP/1.1\r\n\r\n";
  EXPECT_EQ(parser.parse(request).status, Status::kError);
  EXPECT_EQ(parser.error_status(), 431);
}

TEST(HttpParser, RejectsManySmallHeadersAddingUpPastTheLimitWith431) {
  RequestParser parser;
  std::string request = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 2000; i++) request += "X-H" + std::to_string(i) + ": vvvvv\r\n";
  request += "\r\n";
  EXPECT_EQ(parser.parse(request).status, Status::kError);
  EXPECT_EQ(parser.error_status(), 431);
}

TEST(HttpParser, HonoursASmallCustomHeaderLimit) {
  HttpLimits limits;
  limits.max_header_bytes = 64;

  RequestParser small(limits);
  expect_one_request(small, "GET /ok HTTP/1.1\r\nHost: a\r\n\r\n");

  RequestParser large(limits);
  auto step = large.parse("GET / HTTP/1.1\r\nX-Long: " + std::string(100, 'x') + "\r\n\r\n");
  EXPECT_EQ(step.status, Status::kError);
  EXPECT_EQ(large.error_status(), 431);
}

TEST(HttpParser, HeaderLimitIsCountedPerRequest) {
  // Many small pipelined requests on one connection never add up to 431.
  HttpLimits limits;
  limits.max_header_bytes = 64;
  RequestParser parser(limits);
  for (int i = 0; i < 50; i++) {
    expect_one_request(parser, "GET /again HTTP/1.1\r\nHost: a\r\n\r\n");
    parser.next();
  }
}

TEST(HttpParser, RejectsAnOversizedBodyWith413) {
  HttpLimits limits;
  limits.max_body_bytes = 10;
  struct Case {
    const char* description;
    std::string request;
  };
  const Case cases[] = {
      {"Content-Length", "POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world"},
      {"chunked", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n"},
  };
  for (const Case& c : cases) {
    RequestParser parser(limits);
    EXPECT_EQ(parser.parse(c.request).status, Status::kError) << c.description;
    EXPECT_EQ(parser.error_status(), 413) << c.description;
  }
}

TEST(HttpParser, AcceptsABodyExactlyAtTheLimit) {
  HttpLimits limits;
  limits.max_body_bytes = 11;
  RequestParser parser(limits);
  expect_one_request(parser, "POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world");
  EXPECT_EQ(parser.request().body(), "hello world");
}

TEST(HttpParser, ResetStartsOverMidRequest) {
  RequestParser parser;
  EXPECT_EQ(parser.parse("GET /abandoned HT").status, Status::kNeedMore);
  EXPECT_TRUE(parser.in_request());
  parser.reset();
  EXPECT_FALSE(parser.in_request());
  expect_one_request(parser, "GET /fresh HTTP/1.1\r\nHost: new\r\n\r\n");
  EXPECT_EQ(parser.request().path(), "/fresh");
  EXPECT_EQ(parser.request().headers().size(), 1u);
}

TEST(HttpParser, ResetRecoversFromAnError) {
  RequestParser parser;
  EXPECT_EQ(parser.parse("NONSENSE\r\n\r\n").status, Status::kError);
  parser.reset();
  expect_one_request(parser, "GET /after-error HTTP/1.1\r\n\r\n");
  EXPECT_EQ(parser.request().path(), "/after-error");
}

TEST(HttpParser, ResetDropsAPausedPipelinedRequest) {
  RequestParser parser;
  ASSERT_EQ(parser.parse("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n").status, Status::kRequest);
  parser.reset();  // the connection closed with a request still unanswered; a new one begins
  expect_one_request(parser, "GET /c HTTP/1.0\r\n\r\n");
  EXPECT_EQ(parser.request().path(), "/c");
  EXPECT_FALSE(parser.keep_alive());
}

// --- responses ------------------------------------------------------------------------------

constexpr std::string_view kDate = "Sun, 06 Nov 1994 08:49:37 GMT";

ResponseHead head_with(int status, bool keep_alive, bool http10 = false, bool omit_body = false) {
  ResponseHead head;
  head.status = status;
  head.keep_alive = keep_alive;
  head.http10 = http10;
  head.worker_slot = 3;
  head.date = kDate;
  head.omit_body = omit_body;
  return head;
}

TEST(HttpResponse, SerializesA200WithTheWorkerSlot) {
  std::string out;
  append_response(out, head_with(200, true), "hi\n");
  EXPECT_EQ(out,
            "HTTP/1.1 200 OK\r\n"
            "Server: lbd\r\n"
            "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
            "Content-Type: text/plain\r\n"
            "Content-Length: 3\r\n"
            "X-Worker: 3\r\n"
            "\r\n"
            "hi\n");
}

TEST(HttpResponse, SaysConnectionCloseWhenNotKeepingAlive) {
  std::string out;
  append_response(out, head_with(404, false), "nope");
  EXPECT_EQ(out,
            "HTTP/1.1 404 Not Found\r\n"
            "Server: lbd\r\n"
            "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
            "Content-Type: text/plain\r\n"
            "Content-Length: 4\r\n"
            "X-Worker: 3\r\n"
            "Connection: close\r\n"
            "\r\n"
            "nope");
}

TEST(HttpResponse, SaysKeepAliveToAnHttp10ClientKeptOpen) {
  std::string out;
  append_response(out, head_with(200, true, /*http10=*/true), "");
  EXPECT_NE(out.find("\r\nConnection: keep-alive\r\n"), std::string::npos) << out;

  std::string closing;
  append_response(closing, head_with(200, false, /*http10=*/true), "");
  EXPECT_NE(closing.find("\r\nConnection: close\r\n"), std::string::npos) << closing;
  EXPECT_EQ(closing.find("keep-alive"), std::string::npos) << closing;
}

TEST(HttpResponse, Http11KeepAliveNeedsNoConnectionHeader) {
  std::string out;
  append_response(out, head_with(200, true), "x");
  EXPECT_EQ(out.find("Connection:"), std::string::npos) << out;
}

TEST(HttpResponse, HeadKeepsContentLengthButSendsNoBody) {
  std::string out;
  append_response(out, head_with(200, true, false, /*omit_body=*/true), "twelve bytes");
  EXPECT_NE(out.find("\r\nContent-Length: 12\r\n"), std::string::npos) << out;
  ASSERT_GE(out.size(), 4u);
  EXPECT_EQ(out.substr(out.size() - 4), "\r\n\r\n") << "nothing may follow the headers";
}

TEST(HttpResponse, PutsExtraHeadersAndContentTypeInTheHead) {
  ResponseHead head = head_with(201, true);
  head.content_type = "application/json";
  head.extra_headers = "X-One: 1\r\nX-Two: 2\r\n";
  std::string out;
  append_response(out, head, "{}");
  EXPECT_EQ(out,
            "HTTP/1.1 201 Created\r\n"
            "Server: lbd\r\n"
            "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
            "Content-Type: application/json\r\n"
            "Content-Length: 2\r\n"
            "X-Worker: 3\r\n"
            "X-One: 1\r\n"
            "X-Two: 2\r\n"
            "\r\n"
            "{}");
}

TEST(HttpResponse, AppendsAfterResponsesAlreadyInTheBuffer) {
  // Answers to pipelined requests are batched into one send buffer.
  std::string out;
  append_response(out, head_with(200, true), "one");
  size_t first = out.size();
  append_response(out, head_with(200, false), "two");
  EXPECT_EQ(out.substr(first - 3, 3), "one");
  EXPECT_EQ(out.compare(first, 17, "HTTP/1.1 200 OK\r\n"), 0);
  EXPECT_EQ(out.substr(out.size() - 3), "two");
}

TEST(HttpResponse, StatusReasonsForTheCodesLbdSends) {
  struct Case {
    int status;
    const char* reason;
  };
  const Case cases[] = {
      {200, "OK"},
      {400, "Bad Request"},
      {404, "Not Found"},
      {408, "Request Timeout"},
      {413, "Content Too Large"},
      {431, "Request Header Fields Too Large"},
      {500, "Internal Server Error"},
      {503, "Service Unavailable"},
      {299, "Unknown"},
  };
  for (const Case& c : cases) EXPECT_STREQ(status_reason(c.status), c.reason) << c.status;
}

TEST(HttpResponse, StatusLineCarriesTheReason) {
  std::string out;
  append_response(out, head_with(431, false), "");
  EXPECT_EQ(out.rfind("HTTP/1.1 431 Request Header Fields Too Large\r\n", 0), 0u) << out;
}

TEST(HttpResponse, DateIsAnImfFixdate) {
  std::string date = http_date_now();
  ASSERT_EQ(date.size(), kDate.size()) << date;
  EXPECT_EQ(date[3], ',');
  EXPECT_EQ(date.substr(date.size() - 4), " GMT");
}

}  // namespace
}  // namespace lbd
