// Bad input gets a clear answer and leaves every worker serving (docs/ARCHITECTURE.md, invariant 4): after
// each kind of abuse, both workers still answer GET / and neither was restarted.
#include <gtest/gtest.h>

#include "support/lbd_test.h"

namespace lbd::test {
namespace {

constexpr unsigned kWorkers = 2;

class BadInput : public LbdTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(start(lbd_flags("reuseport", kWorkers)));
    for (unsigned slot = 0; slot < kWorkers; slot++) pids_.push_back(lbd().worker_pid(slot));
  }

  // Each worker answers a normal request, none crashed or was replaced.
  void expect_workers_unharmed() {
    for (unsigned slot = 0; slot < kWorkers; slot++) {
      HttpResult r = fetch_from_worker(address(), static_cast<int>(slot), after(5s));
      ASSERT_TRUE(r.ok()) << "worker " << slot << ": " << r.describe();
      EXPECT_EQ(r.response.status, 200);
      EXPECT_EQ(r.response.worker(), static_cast<int>(slot)) << "no answer from worker " << slot;
      EXPECT_EQ(lbd().worker_pid(slot), pids_[slot]) << "worker " << slot << " was restarted";
      EXPECT_NE(process_state(pids_[slot]), 0) << "worker " << slot << " is gone";
    }
    EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u);
  }

  // Sends `bytes` on a new connection and expects `status`, then an orderly close.
  void expect_refused_with(std::string_view bytes, int status) {
    SCOPED_TRACE("request: " + std::string(bytes.substr(0, 60)));
    HttpResult failure;
    HttpConnection c = HttpConnection::open(address(), after(2s), &failure);
    ASSERT_TRUE(c.valid()) << failure.describe();
    HttpResult r = c.request(bytes, after(3s));
    ASSERT_TRUE(r.ok()) << r.describe();
    ASSERT_EQ(r.response.status, status) << "body: " << r.response.body;
    EXPECT_TRUE(r.response.closes()) << "an error answer must close the connection";
    EXPECT_EQ(c.wait_for_close(after(5s)), PeerEnd::kClosed);
  }

  std::vector<pid_t> pids_;
};

TEST_F(BadInput, MalformedRequestsGet400AndWorkersStayUp) {
  const std::vector<std::string> malformed = {
      "GARBAGE\r\n\r\n",
      std::string("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 11),  // a TLS ClientHello
      std::string("GET /\0 HTTP/1.1\r\n\r\n", 19),                       // NUL in the target
      "GET / HTTP/1.1\r\nBad\x01Header: x\r\n\r\n",
      "GET / HTTP/1.1\r\n Folded: x\r\n\r\n",
      "GET / HTTP/1.1\nHost: bare line feeds\n\n",
      "GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
      "POST /echo HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "GET / HTTP/1.1\r\nHost: x\r\n\r\n\xff\xfe\xfd garbage after a good request\r\n\r\n",
  };
  // Several rounds, so each worker (the kernel's hash picks) sees each kind.
  for (int round = 0; round < 4; round++) {
    for (size_t i = 0; i < malformed.size(); i++) {
      if (i + 1 == malformed.size()) continue;  // checked below: its first answer is a 200
      ASSERT_NO_FATAL_FAILURE(expect_refused_with(malformed[i], 400));
    }
    // A good request, then garbage: the good one is answered, the garbage gets a 400.
    HttpConnection c = HttpConnection::open(address(), after(2s));
    ASSERT_TRUE(c.valid());
    ASSERT_EQ(c.send(malformed.back(), after(2s)), Outcome::kOk);
    HttpResult good = c.read_response(after(2s));
    HttpResult bad = c.read_response(after(2s));
    ASSERT_TRUE(good.ok() && bad.ok()) << good.describe() << " / " << bad.describe();
    EXPECT_EQ(good.response.status, 200);
    EXPECT_EQ(bad.response.status, 400);
  }
  expect_workers_unharmed();
}

// RFC 9112 section 5.1: "A server MUST reject, with a response status code of 400 (Bad Request),
// any received request message that contains whitespace between a header field name and colon."
// A proxy in front of lbd may read such a header differently (request smuggling).
TEST_F(BadInput, WhitespaceInAHeaderNameGets400) {
  ASSERT_NO_FATAL_FAILURE(expect_refused_with("GET / HTTP/1.1\r\nHost: x\r\nX-Custom : 5\r\n\r\n", 400));
  ASSERT_NO_FATAL_FAILURE(expect_refused_with("GET / HTTP/1.1\r\nHost: x\r\nBad Header Name: x\r\n\r\n", 400));
  expect_workers_unharmed();
}

TEST_F(BadInput, OversizedHeadersAndBodiesAreRefusedAndWorkersStayUp) {
  std::string headers = "GET / HTTP/1.1\r\nHost: lbd-test\r\n";
  while (headers.size() < 64 * 1024) headers += "X-Pad: " + std::string(1000, 'p') + "\r\n";
  headers += "\r\n";
  const std::string long_target = "GET /" + std::string(20 * 1024, 'a') + " HTTP/1.1\r\n\r\n";
  const std::string big_body = "POST /echo HTTP/1.1\r\nHost: lbd-test\r\nContent-Length: 2000000\r\n\r\n" +
                               std::string(2'000'000, 'b');
  for (int round = 0; round < 4; round++) {
    ASSERT_NO_FATAL_FAILURE(expect_refused_with(headers, 431));
    ASSERT_NO_FATAL_FAILURE(expect_refused_with(long_target, 431));
    ASSERT_NO_FATAL_FAILURE(expect_refused_with(big_body, 413));
  }
  expect_workers_unharmed();
}

TEST_F(BadInput, ClientsThatVanishMidRequestDoNotHurtWorkers) {
  const std::vector<std::string> halves = {
      "GET / HTTP/1.1\r\nHost: lbd-test\r\n",                              // headers unfinished
      "POST /echo HTTP/1.1\r\nContent-Length: 1000\r\n\r\nonly ten b",     // body unfinished
      http_get("/sleep?ms=200"),                                         // answer still pending
      http_get("/") + "GET / HT",                                        // one done, one half
  };
  for (int round = 0; round < 10; round++) {
    for (const auto& half : halves) {
      for (bool with_reset : {false, true}) {
        HttpConnection c = HttpConnection::open(address(), after(2s));
        ASSERT_TRUE(c.valid());
        ASSERT_EQ(c.send(half, after(2s)), Outcome::kOk);
        if (with_reset) {
          c.reset();
        } else {
          c.close();
        }
      }
    }
  }
  expect_workers_unharmed();
}

// A client that pipelines requests and never reads the answers: the worker must stop reading
// (backpressure) instead of buffering answers without bound, or a few such clients take its
// memory and the kernel kills it with every connection it holds.
TEST_F(BadInput, AClientThatNeverReadsCannotMakeAWorkerBufferWithoutBound) {
  HttpConnection c = HttpConnection::open(address(), after(2s));
  ASSERT_TRUE(c.valid());
  HttpResult first = c.request(http_get("/"), after(2s));
  ASSERT_TRUE(first.ok()) << first.describe();
  const pid_t worker = pids_.at(static_cast<size_t>(first.response.worker()));
  const size_t rss_before = process_rss_bytes(worker);

  // Up to 32 MiB of pipelined GET / (each answer is ~4x the request). With backpressure our
  // sends stall once the socket buffers are full; that ends the loop too.
  std::string batch;
  for (int i = 0; i < 1000; i++) batch += http_get("/");
  size_t sent = 0;
  const Deadline deadline = after(10s);
  while (sent < 32 * 1024 * 1024 && Clock::now() < deadline) {
    if (c.send(batch, after(1s)) != Outcome::kOk) break;
    sent += batch.size();
  }
  // Let the worker finish what it read: until its memory stops changing. One still growing 10 s
  // after the client stopped sending is buffering for it without bound, the failure itself.
  size_t rss = process_rss_bytes(worker);
  EXPECT_TRUE(eventually(after(10s), [&] {
    std::this_thread::sleep_for(100ms);
    const size_t now = process_rss_bytes(worker);
    return std::exchange(rss, now) == now;
  })) << "the worker's memory was still changing 10 s after the client stopped sending";
  const size_t growth = rss > rss_before ? rss - rss_before : 0;
  EXPECT_LT(growth, 16u * 1024 * 1024) << "after " << sent / (1024 * 1024) << " MiB of requests, the worker holds "
                                       << growth / (1024 * 1024) << " MiB more";
  c.reset();
  expect_workers_unharmed();
}

TEST_F(BadInput, TenThousandSilentConnectionsDoNotHurtWorkers) {
  // Opened and closed without a byte: half with an orderly close, half with a reset.
  constexpr int kConnections = 10'000;
  const Deadline deadline = after(30s);
  int opened = 0;
  for (; opened < kConnections && Clock::now() < deadline; opened++) {
    HttpResult failure;
    HttpConnection c = HttpConnection::open(address(), after(2s), &failure);
    ASSERT_TRUE(c.valid()) << "connection " << opened << ": " << failure.describe();
    if (opened % 2) c.reset();
  }
  EXPECT_EQ(opened, kConnections) << "only " << opened << " connections in 30 s";
  expect_workers_unharmed();
}

}  // namespace
}  // namespace lbd::test
