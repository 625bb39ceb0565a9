// What one HTTP request costs a worker in user space, syscalls aside: llhttp parsing through
// RequestParser, the handler (the bundled app, called through lbd::Handler), and the answer
// serialized into the connection's output buffer. The calls and their order are the worker's
// own (Worker::process, answer and respond in userspace/worker/worker.cpp); only the socket is
// missing. This is the part of the ~10 µs of server CPU per keep-alive request (README,
// Benchmarks) that lbd's own code adds, and what a change to the HTTP path should not grow.
//
// Variants: one GET; 16 GETs pipelined in one receive buffer; a POST /echo with a 1 KiB
// Content-Length body; the same body chunked. The per_request counter is CPU time per request,
// so the pipelined variant compares directly with the single one.
#include <benchmark/benchmark.h>

#include <string>
#include <string_view>

#include "worker/buffered_exchange.h"
#include "worker/bundled_app.h"
#include "worker/handler.h"
#include "worker/http.h"

namespace lbd {
namespace {

// A keep-alive connection: its parser and output buffer live across requests, as in a worker.
class BenchConnection {
 public:
  // Worker::process() and answer(): every complete request in `data` answered in order.
  // Returns how many, or -1 if the input is not acceptable HTTP.
  int serve(std::string_view data) {
    int answered = 0;
    while (true) {
      RequestParser::Step step = parser_.parse(data);
      data.remove_prefix(step.consumed);
      if (step.status == RequestParser::Status::kNeedMore) return answered;
      if (step.status == RequestParser::Status::kError) return -1;
      exchange_.begin();
      handler_(exchange_);
      if (!exchange_.responded()) exchange_.respond(500, "the handler did not answer\n", "text/plain");
      parser_.next();
      answered++;
      if (data.empty()) return answered;
    }
  }
  // What Worker::flush() leaves behind once the answers are handed to the kernel: an empty
  // buffer that keeps its capacity.
  std::string& out() { return out_; }

 private:
  const std::string date_ = http_date_now();  // the worker caches it once a second
  Handler handler_ = bundled_app(false);
  RequestParser parser_;
  std::string out_;
  BufferedExchange exchange_{parser_, out_, date_};
};

constexpr std::string_view kGet =
    "GET / HTTP/1.1\r\n"
    "Host: localhost:8080\r\n"
    "User-Agent: curl/7.88.1\r\n"
    "Accept: */*\r\n"
    "\r\n";

std::string post_content_length() {
  std::string request =
      "POST /echo HTTP/1.1\r\n"
      "Host: localhost:8080\r\n"
      "User-Agent: curl/7.88.1\r\n"
      "Accept: */*\r\n"
      "Content-Type: application/octet-stream\r\n"
      "Content-Length: 1024\r\n"
      "\r\n";
  return request + std::string(1024, 'x');
}

// The same 1 KiB as four 256-byte chunks (0x100).
std::string post_chunked() {
  std::string request =
      "POST /echo HTTP/1.1\r\n"
      "Host: localhost:8080\r\n"
      "User-Agent: curl/7.88.1\r\n"
      "Accept: */*\r\n"
      "Content-Type: application/octet-stream\r\n"
      "Transfer-Encoding: chunked\r\n"
      "\r\n";
  for (int i = 0; i < 4; i++) request += "100\r\n" + std::string(256, 'x') + "\r\n";
  return request + "0\r\n\r\n";
}

// Serves `input` (holding `requests` requests) once per iteration on one connection.
void run(benchmark::State& state, const std::string& input, int requests,
         std::string_view expected_body) {
  BenchConnection connection;
  // Check once that this measures the success path: every request answered 200, kept alive.
  if (connection.serve(input) != requests || !connection.out().starts_with("HTTP/1.1 200 OK\r\n") ||
      connection.out().find("Connection: close") != std::string::npos ||
      !connection.out().ends_with(expected_body)) {
    state.SkipWithError("the request was not answered as expected");
    return;
  }
  for (auto _ : state) {
    connection.out().clear();
    int answered = connection.serve(input);
    benchmark::DoNotOptimize(answered);
    benchmark::DoNotOptimize(connection.out().data());
  }
  state.SetItemsProcessed(state.iterations() * requests);
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(input.size()));
  state.counters["per_request"] = benchmark::Counter(
      requests, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void BM_HttpGet(benchmark::State& state) { run(state, std::string(kGet), 1, "hello, world\n"); }

void BM_HttpGetPipelined16(benchmark::State& state) {
  std::string input;
  for (int i = 0; i < 16; i++) input += kGet;
  run(state, input, 16, "hello, world\n");
}

void BM_HttpPost1KiB(benchmark::State& state) {
  run(state, post_content_length(), 1, std::string(1024, 'x'));
}

void BM_HttpPostChunked1KiB(benchmark::State& state) {
  run(state, post_chunked(), 1, std::string(1024, 'x'));
}

BENCHMARK(BM_HttpGet);
BENCHMARK(BM_HttpGetPipelined16);
BENCHMARK(BM_HttpPost1KiB);
BENCHMARK(BM_HttpPostChunked1KiB);

}  // namespace
}  // namespace lbd
