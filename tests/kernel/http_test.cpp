// HTTP/1.1 as a client sees it through a real lbd: one worker (--mode reuseport, no root), real
// sockets on loopback. Each test is one thing a client relies on.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <fstream>
#include <sys/socket.h>
#include <thread>
#include <netinet/tcp.h>
#include <sys/time.h>

#include <cstring>

#include "common/unique_fd.h"
#include "support/control_test.h"
#include "support/lbd_test.h"
#include "supervisor/process_stats.h"

namespace lbd::test {
namespace {

constexpr int kEstablished = 1;  // TCP states as /proc/net/tcp numbers them
constexpr int kSynReceived = 3;

// The kernel's state of the server's end of a loopback IPv4 connection, from /proc/net/tcp
// (1 ESTABLISHED, 4 FIN_WAIT1, ...); 0 once the socket is gone.
int server_end_state(uint16_t server_port, uint16_t client_port) {
  std::ifstream table("/proc/net/tcp");
  std::string line;
  std::getline(table, line);  // the header
  char local[16], remote[16];
  const std::string want_local = fmt::format(":{:04X}", server_port), want_remote = fmt::format(":{:04X}", client_port);
  while (std::getline(table, line)) {
    unsigned state = 0;
    if (std::sscanf(line.c_str(), " %*d: %15s %15s %x", local, remote, &state) != 3) continue;
    if (std::string_view(local).ends_with(want_local) && std::string_view(remote).ends_with(want_remote)) {
      return static_cast<int>(state);
    }
  }
  return 0;
}

class Http : public LbdTest {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(start(lbd_flags("reuseport", 1, extra_flags_))); }

  HttpConnection connect() {
    HttpResult failure;
    HttpConnection c = HttpConnection::open(address(), after(2s), &failure);
    EXPECT_TRUE(c.valid()) << failure.describe();
    return c;
  }

  std::vector<std::string> extra_flags_ = {"--demo-routes"};
};

TEST_F(Http, KeepAliveServesSeveralRequestsOnOneConnection) {
  HttpConnection c = connect();
  for (int i = 0; i < 5; i++) {
    HttpResult r = c.request(http_get("/"), after(2s));
    ASSERT_TRUE(r.ok()) << "request " << i << ": " << r.describe();
    EXPECT_EQ(r.response.status, 200);
    EXPECT_EQ(r.response.body, "hello, world\n");
    EXPECT_EQ(r.response.worker(), 0);
    EXPECT_FALSE(r.response.closes()) << "request " << i << " was answered with Connection: close";
  }
}

TEST_F(Http, PipelinedRequestsAreAnsweredInOrder) {
  HttpConnection c = connect();
  // A slow one first: the answers must still come back in request order.
  ASSERT_EQ(c.send(http_get("/sleep?ms=100") + http_get("/") + http_post("/echo", "third"), after(2s)),
            Outcome::kOk);
  HttpResult first = c.read_response(after(3s));
  HttpResult second = c.read_response(after(3s));
  HttpResult third = c.read_response(after(3s));
  ASSERT_TRUE(first.ok() && second.ok() && third.ok())
      << first.describe() << " / " << second.describe() << " / " << third.describe();
  EXPECT_EQ(first.response.body, "slept 100 ms\n");
  EXPECT_EQ(second.response.body, "hello, world\n");
  EXPECT_EQ(third.response.body, "third");
}

TEST_F(Http, PostEchoReturnsAContentLengthBody) {
  // The largest body lbd takes (1 MiB): its answer needs many sends.
  std::string body(1024 * 1024, '\0');
  for (size_t i = 0; i < body.size(); i++) body[i] = static_cast<char>('a' + i % 26);
  HttpResult r = fetch(address(), http_post("/echo", body), after(3s));
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.response.status, 200);
  EXPECT_EQ(r.response.body, body);
}

TEST_F(Http, ManyPipelinedRequestsAcrossReceiveBuffersAreAnsweredInOrder) {
  // 100 requests of growing size in one write (about 40 KB): they straddle the worker's 4 KiB
  // receive buffers at every possible place.
  std::string batch;
  std::vector<std::string> bodies;
  for (int i = 0; i < 100; i++) {
    bodies.push_back("request " + std::to_string(i) + " " + std::string(static_cast<size_t>(i) * 7, 'x'));
    batch += http_post("/echo", bodies.back());
  }
  HttpConnection c = connect();
  ASSERT_EQ(c.send(batch, after(2s)), Outcome::kOk);
  for (int i = 0; i < 100; i++) {
    HttpResult r = c.read_response(after(3s));
    ASSERT_TRUE(r.ok()) << "answer " << i << ": " << r.describe();
    EXPECT_EQ(r.response.body, bodies[static_cast<size_t>(i)]) << "answer " << i;
  }
}

// A regression: after a large answer the worker once miscounted what it had left to send, took
// the connection for a client that does not read, and stopped reading it for good.
TEST_F(Http, PipelinedRequestsAfterALargerAnswerAreAnswered) {
  HttpConnection c = connect();
  HttpResult big = c.request(http_post("/echo", std::string(1000, 'x')), after(2s));
  ASSERT_TRUE(big.ok()) << big.describe();
  ASSERT_EQ(c.send(http_get("/") + http_get("/"), after(2s)), Outcome::kOk);
  for (int i = 0; i < 2; i++) {
    HttpResult r = c.read_response(after(2s));
    ASSERT_TRUE(r.ok()) << "pipelined answer " << i << ": " << r.describe();
    EXPECT_EQ(r.response.body, "hello, world\n");
  }
}

// A client may send its requests, then shut down its sending side, and still read every answer
// (curl --http1.1 with a file upload does this; so do scripts that pipe into nc).
TEST_F(Http, HalfClosedClientGetsEveryPipelinedAnswer) {
  HttpConnection c = connect();
  ASSERT_EQ(c.send(http_get("/sleep?ms=100") + http_get("/") + http_get("/"), after(2s)), Outcome::kOk);
  c.shutdown_write();
  const char* expected[] = {"slept 100 ms\n", "hello, world\n", "hello, world\n"};
  for (const char* body : expected) {
    HttpResult r = c.read_response(after(3s));
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.response.body, body);
  }
  EXPECT_EQ(c.wait_for_close(after(3s)), PeerEnd::kClosed) << "the server closes once all is answered";
}

TEST_F(Http, RequestArrivingByteByByteIsAnswered) {
  HttpConnection c = connect();
  const std::string request = http_post("/echo", "slowly");
  for (char byte : request) {
    ASSERT_EQ(c.send(std::string_view(&byte, 1), after(2s)), Outcome::kOk);
    std::this_thread::sleep_for(1ms);  // the client's pace: one segment per byte
  }
  HttpResult r = c.read_response(after(2s));
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.response.body, "slowly");
}

TEST_F(Http, ConnectionCloseIsHonoured) {
  HttpConnection c = connect();
  HttpResult r = c.request(http_get("/", /*close=*/true), after(2s));
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.response.status, 200);
  EXPECT_TRUE(r.response.closes());
  EXPECT_EQ(c.wait_for_close(after(2s)), PeerEnd::kClosed);
}

TEST_F(Http, Http10ClientIsAnsweredThenClosed) {
  HttpConnection c = connect();
  HttpResult r = c.request("GET / HTTP/1.0\r\n\r\n", after(2s));
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.response.status, 200);
  EXPECT_EQ(r.response.body, "hello, world\n");
  EXPECT_EQ(c.wait_for_close(after(2s)), PeerEnd::kClosed);
}

TEST_F(Http, Http10KeepAliveIsHonoured) {
  HttpConnection c = connect();
  for (int i = 0; i < 3; i++) {
    HttpResult r = c.request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", after(2s));
    ASSERT_TRUE(r.ok()) << "request " << i << ": " << r.describe();
    EXPECT_EQ(r.response.status, 200);
    EXPECT_EQ(r.response.header("Connection"), "keep-alive");
  }
}

// RFC 9110 section 10.1.1: a server that gets "Expect: 100-continue" MUST answer at once, with
// 100 (Continue) or a final status. Clients wait for it before sending the body: curl waits 1 s
// (and sends the header itself for bodies over 1 MiB), so every such upload would stall.
TEST_F(Http, ExpectContinueGets100BeforeTheBody) {
  HttpConnection c = connect();
  ASSERT_EQ(c.send("POST /echo HTTP/1.1\r\nHost: lbd-test\r\nContent-Length: 5\r\n"
                   "Expect: 100-continue\r\n\r\n",
                   after(2s)),
            Outcome::kOk);
  HttpResult interim = c.read_response(after(500ms));
  ASSERT_TRUE(interim.ok()) << "no 100 Continue: " << interim.describe();
  EXPECT_EQ(interim.response.status, 100);
  ASSERT_EQ(c.send("hello", after(2s)), Outcome::kOk);
  HttpResult r = c.read_response(after(2s));
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.response.status, 200);
  EXPECT_EQ(r.response.body, "hello");
}

TEST_F(Http, PostEchoReturnsAChunkedBodyDechunked) {
  const std::string body = "a chunked body that arrives in pieces of seven bytes";
  HttpResult r = fetch(address(), http_post_chunked("/echo", body, 7), after(3s));
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.response.status, 200);
  EXPECT_EQ(r.response.body, body);
}

TEST_F(Http, HeadHasHeadersButNoBody) {
  HttpConnection c = connect();
  HttpResult head = c.request(http_head("/"), after(2s));
  ASSERT_TRUE(head.ok()) << head.describe();
  EXPECT_EQ(head.response.status, 200);
  EXPECT_EQ(head.response.header("Content-Length"), "13");  // what GET would send
  // Had any body bytes followed, they would now be read as the start of the next response.
  HttpResult get = c.request(http_get("/"), after(2s));
  ASSERT_TRUE(get.ok()) << get.describe();
  EXPECT_EQ(get.response.status, 200);
  EXPECT_EQ(get.response.body, "hello, world\n");
}

TEST_F(Http, UnknownPathIs404) {
  HttpResult r = fetch(address(), http_get("/no/such/thing"), after(2s));
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.response.status, 404);
  EXPECT_EQ(r.response.worker(), 0);
}

TEST_F(Http, MalformedRequestLineGets400ThenClose) {
  HttpConnection c = connect();
  HttpResult r = c.request("GET\x01/ HTTP/1.1\r\nHost: x\r\n\r\n", after(2s));
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.response.status, 400);
  EXPECT_TRUE(r.response.closes());
  // The server closes after the answer (an orderly close, so the client did see the 400).
  EXPECT_EQ(c.wait_for_close(after(5s)), PeerEnd::kClosed);
}

TEST_F(Http, OversizedHeadersGet431) {
  std::string request = "GET / HTTP/1.1\r\nHost: lbd-test\r\n";
  const std::string pad(1000, 'p');
  for (int i = 0; request.size() < 64 * 1024; i++) request += "X-Pad-" + std::to_string(i) + ": " + pad + "\r\n";
  request += "\r\n";
  HttpConnection c = connect();
  HttpResult r = c.request(request, after(3s));
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.response.status, 431);
  EXPECT_EQ(c.wait_for_close(after(5s)), PeerEnd::kClosed);
}

TEST_F(Http, SlowRequestDoesNotDelayAnotherConnectionOnTheSameWorker) {
  // --workers 1: both connections are served by the same event loop.
  HttpConnection slow = connect();
  const auto sent = Clock::now();
  ASSERT_EQ(slow.send(http_get("/sleep?ms=1000"), after(2s)), Outcome::kOk);

  HttpResult quick = fetch(address(), http_get("/"), after(2s));
  ASSERT_TRUE(quick.ok()) << quick.describe();
  EXPECT_EQ(quick.response.status, 200);
  // Answered before the other's second of sleep was over (a loaded machine may be slow, but
  // not that slow): the loop did not wait on it.
  EXPECT_LT(quick.elapsed, 1000ms) << "GET / waited for the other connection's /sleep";
  EXPECT_TRUE(slow.nothing_received()) << "the slow answer came before the quick one";

  HttpResult slept = slow.read_response(after(5s));
  ASSERT_TRUE(slept.ok()) << slept.describe();
  EXPECT_EQ(slept.response.status, 200);
  EXPECT_GE(Clock::now() - sent, 1000ms);
}

// The worker's listeners defer the accept until a request's first bytes are in (worker.cpp,
// Worker::create): a connection that has sent nothing stays in the kernel, half-open
// (SYN_RECV on the server's side), and one that sends is answered at once.
TEST_F(Http, AConnectionIsHandedToTheWorkerOnlyWithItsRequest) {
  HttpConnection c = connect();
  sockaddr_in self{};
  socklen_t self_length = sizeof(self);
  ASSERT_EQ(getsockname(c.fd(), reinterpret_cast<sockaddr*>(&self), &self_length), 0);
  const uint16_t client_port = ntohs(self.sin_port);
  const uint16_t server_port = ntohs(reinterpret_cast<const sockaddr_in*>(address().sockaddr_ptr())->sin_port);
  // Without the deferral the handshake's last ACK makes the server's end ESTABLISHED at once.
  EXPECT_FALSE(eventually(after(300ms), [&] { return server_end_state(server_port, client_port) != kSynReceived; }))
      << "the server's end is in state " << server_end_state(server_port, client_port) << ", not SYN_RECV";
  HttpResult r = c.request(http_get("/"), after(2s));
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(server_end_state(server_port, client_port), kEstablished);
}

class HttpIdleTimeout : public Http {
 protected:
  HttpIdleTimeout() { extra_flags_ = {"--demo-routes", "--idle-timeout", "0.5"}; }
};

TEST_F(HttpIdleTimeout, IdleKeepAliveConnectionIsClosedByTheServer) {
  HttpConnection busy = connect();
  HttpConnection idle = connect();
  ASSERT_TRUE(idle.request(http_get("/"), after(2s)).ok());
  const auto idle_since = Clock::now();

  // One connection keeps asking at the client's pace, the other says nothing. Watch for the
  // idle one to be closed, for at most 3 s.
  std::optional<Clock::duration> closed_after;
  while (Clock::now() < idle_since + 3s) {
    HttpResult r = busy.request(http_get("/"), after(2s));
    ASSERT_TRUE(r.ok()) << "the busy connection: " << r.describe();
    if (!idle.nothing_received()) {
      closed_after = Clock::now() - idle_since;
      break;
    }
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(closed_after) << "the idle connection is still open after 3 s";
  EXPECT_EQ(idle.wait_for_close(after(1s)), PeerEnd::kClosed);
  EXPECT_GE(*closed_after, 500ms);
  EXPECT_LT(*closed_after, 2s);
  // The busy connection was never idle for 0.5 s: still open.
  HttpResult r = busy.request(http_get("/"), after(2s));
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.response.status, 200);
}

// A last answer goes out with its connection's close linked behind it (worker.cpp,
// submit_send): the close waits for every byte. A client that asks for a large answer with
// `Connection: close` and never reads it must still lose the connection at the idle timeout,
// not hold it (and a slot of its worker's table) for as long as it likes.
class HttpUnreadLastAnswer : public ControlTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 1, {"--idle-timeout", "0.5"})));
  }
  int64_t open_connections() {
    nlohmann::json s = status();
    return s.contains("workers") ? s["workers"][0].value("connections", int64_t{-1}) : -1;
  }
};

TEST_F(HttpUnreadLastAnswer, IsCutOffAtTheIdleTimeout) {
  // A client with 536-byte segments and a 4 KiB receive buffer: the server's socket sizes its
  // send buffer by the segment size (tens of KiB, not the megabyte loopback's 64 KiB segments
  // get), so a 1 MiB answer (the echo of the largest body a request may have) cannot all go into
  // the kernel: the send waits on the client.
  UniqueFd client(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(client.valid());
  const int segment = 536, small = 4096;
  const timeval send_timeout{.tv_sec = 10, .tv_usec = 0};
  ASSERT_EQ(setsockopt(client.get(), IPPROTO_TCP, TCP_MAXSEG, &segment, sizeof(segment)), 0);
  ASSERT_EQ(setsockopt(client.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
  ASSERT_EQ(setsockopt(client.get(), SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout)), 0);
  ASSERT_EQ(connect(client.get(), address().sockaddr_ptr(), address().length()), 0) << strerror(errno);
  const std::string body(1u << 20, 'x');
  const std::string request = "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body;
  for (size_t sent = 0; sent < request.size();) {
    const ssize_t n = send(client.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    ASSERT_GT(n, 0) << "sending the request: " << strerror(errno);
    sent += static_cast<size_t>(n);
  }
  ASSERT_TRUE(eventually(after(5s), [&] { return open_connections() == 1; }))
      << "the worker never held the connection";
  const auto answered = Clock::now();
  sockaddr_in self{};
  socklen_t self_length = sizeof(self);
  ASSERT_EQ(getsockname(client.get(), reinterpret_cast<sockaddr*>(&self), &self_length), 0);
  const uint16_t client_port = ntohs(self.sin_port);
  const uint16_t server_port = ntohs(reinterpret_cast<const sockaddr_in*>(address().sockaddr_ptr())->sin_port);
  // Closed by the worker with the answer's start still queued: the kernel's end leaves
  // ESTABLISHED (for FIN_WAIT1, the FIN behind the queued bytes) at the close.
  ASSERT_EQ(server_end_state(server_port, client_port), kEstablished);
  ASSERT_TRUE(eventually(after(5s), [&] { return server_end_state(server_port, client_port) != kEstablished; }))
      << "the worker still holds a connection whose client has not read for 5 s (--idle-timeout 0.5)\n"
      << lbd().log();
  EXPECT_LT(Clock::now() - answered, 3s);
  // The worker is not stuck on it: the next client is served.
  HttpResult served = fetch(address(), http_get("/"), after(2s));
  EXPECT_TRUE(served.ok()) << served.describe();
}

class HttpHeaderTimeout : public Http {
 protected:
  HttpHeaderTimeout() { extra_flags_ = {"--header-timeout", "1"}; }
};

TEST_F(HttpHeaderTimeout, AHeadThatTricklesInGets408WithinTheTimeout) {
  // Slowloris: half a head, then one byte every 100 ms, which would keep an idle timer alive
  // for ever. The head's deadline runs from its first byte.
  HttpConnection slow = connect();
  HttpConnection idle = connect();
  ASSERT_TRUE(idle.request(http_get("/"), after(2s)).ok());  // keep-alive, between requests
  const auto started = Clock::now();
  ASSERT_EQ(slow.send("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ", after(1s)), Outcome::kOk);
  HttpResult r = slow.trickle_until_answered("a", 100ms, started + 5s);
  const auto answered_after = Clock::now() - started;
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.response.status, 408);
  EXPECT_GE(answered_after, 900ms);
  EXPECT_LE(answered_after, 3s) << "--header-timeout 1, checked every 100 ms: at most 1.1 s, with slack";
  EXPECT_EQ(slow.wait_for_close(after(5s)), PeerEnd::kClosed);
  // A connection between requests is not in a head: only the idle timeout (60 s) applies to it.
  EXPECT_TRUE(idle.nothing_received());
  HttpResult again = idle.request(http_get("/"), after(2s));
  EXPECT_TRUE(again.ok()) << again.describe();
}

TEST_F(Http, AClientThatSendsOneRequestPerSegmentAndNeverReadsIsPausedWithBoundedMemory) {
  // Each request in its own segment: the output limit must hold even when no further request
  // follows in the same read. The worker stops reading from this client once 256 KiB of answers
  // waits; what the client sends after that waits in the kernel's receive buffer (or the client's
  // sends stall), instead of becoming answers in the worker's memory.
  // A small receive buffer before connecting: a small window, so the kernel holds little of
  // what the worker sends and the rest would have to wait in the worker.
  UniqueFd greedy(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int small = 4096;
  ASSERT_EQ(setsockopt(greedy.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
  int one = 1;
  ASSERT_EQ(setsockopt(greedy.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)), 0);
  ASSERT_EQ(::connect(greedy.get(), address().sockaddr_ptr(), address().length()), 0) << strerror(errno);
  const pid_t worker = lbd().worker_pid(0);
  ASSERT_GT(worker, 0);
  // A warm-up that touches what any busy worker touches once: its 4 MiB of receive buffers (the
  // kernel takes them in turn, so 1,024 receives go round them all) and its answer buffers (deep
  // pipelines from a client that does read).
  {
    HttpConnection warm = connect();
    for (int i = 0; i < 2000; i++) ASSERT_TRUE(warm.request(http_get("/"), after(2s)).ok());
    std::string burst;
    for (int i = 0; i < 2000; i++) burst += http_get("/");
    for (int round = 0; round < 20; round++) {
      ASSERT_EQ(warm.send(burst, after(5s)), Outcome::kOk);
      for (int i = 0; i < 2000; i++) ASSERT_TRUE(warm.read_response(after(5s)).ok());
    }
  }
  const uint64_t before = read_process_usage(worker).value_or(ProcessUsage{}).rss_bytes / 1024;

  const std::string request = http_get("/");
  size_t sent = 0;
  auto stalled_since = Clock::now();
  // 100,000 answers are some 14 MB, past what the kernel's send buffer takes (4 MiB at most):
  // unbounded, the rest would show in the worker. The attacker paces its requests so that each
  // arrives, and is read, on its own.
  while (sent < 100'000 && Clock::now() - stalled_since < 2s) {
    if (::send(greedy.get(), request.data(), request.size(), MSG_DONTWAIT | MSG_NOSIGNAL) ==
        static_cast<ssize_t>(request.size())) {
      sent++;
      stalled_since = Clock::now();
      std::this_thread::sleep_for(20us);
    } else if (errno != EAGAIN) {
      break;
    } else {
      std::this_thread::sleep_for(1ms);  // the client's own pace while its buffer is full
    }
  }
  const uint64_t after_kib = read_process_usage(worker).value_or(ProcessUsage{}).rss_bytes / 1024;
  EXPECT_LT(after_kib - std::min(after_kib, before), 2048u)
      << "resident " << before << " KiB before, " << after_kib << " KiB after " << sent << " requests";
  // Everyone else is served meanwhile.
  EXPECT_EQ(fetch(address(), http_get("/"), after(2s)).status(), 200);
}

}  // namespace
}  // namespace lbd::test
