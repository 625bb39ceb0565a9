#include "worker/bundled_app.h"

#include <time.h>

#include <charconv>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace lbd {

namespace {

// Upper bounds keep a typo from parking a worker: 10 s of CPU, 5 minutes of sleep.
constexpr uint64_t kMaxWorkUs = 10'000'000;
constexpr uint64_t kMaxSleepMs = 300'000;

bool parse_number(const Request& request, std::string_view name, uint64_t max, uint64_t* out) {
  auto text = request.query_param(name);
  if (!text) return false;
  auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), *out);
  return ec == std::errc() && end == text->data() + text->size() && *out <= max;
}

uint64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// Spins until this thread has used `us` of CPU: the worker is truly busy, as under real work,
// and if it is preempted the work takes longer in wall time, as real work would.
void burn_cpu(uint64_t us) {
  const uint64_t until = thread_cpu_ns() + us * 1000;
  volatile uint64_t sink = 0;
  while (thread_cpu_ns() < until) {
    for (int i = 0; i < 64; i++) sink = sink + static_cast<uint64_t>(i);
  }
}

// The last message a worker received (bundled_service); none in bundled_app.
using LastMessage = std::optional<std::string>;

void serve(Exchange& ex, bool demo_routes, const LastMessage* last_message) {
  const Request& request = ex.request();
  const std::string_view path = request.path();
  const std::string_view method = request.method();

  if (path == "/") {
    if (method != "GET" && method != "HEAD") return ex.respond(405, "method not allowed\n");
    return ex.respond(200, "hello, world\n");
  }
  if (path == "/work" && demo_routes) {
    uint64_t us = 0;
    if (!parse_number(request, "us", kMaxWorkUs, &us)) {
      return ex.respond(400, "usage: /work?us=N (N <= 10000000)\n");
    }
    burn_cpu(us);
    return ex.respond(200, "worked " + std::to_string(us) + " us\n");
  }
  if (path == "/sleep" && demo_routes) {
    uint64_t ms = 0;
    if (!parse_number(request, "ms", kMaxSleepMs, &ms)) {
      return ex.respond(400, "usage: /sleep?ms=N (N <= 300000)\n");
    }
    return ex.respond_after(std::chrono::milliseconds(ms), [ms](Exchange& later) {
      later.respond(200, "slept " + std::to_string(ms) + " ms\n");
    });
  }
  if (path == "/last-message" && demo_routes && last_message) {
    if (method != "GET" && method != "HEAD") return ex.respond(405, "method not allowed\n");
    if (!*last_message) return ex.respond(404, "no message yet\n");
    return ex.respond(200, **last_message + "\n");
  }
  if (path == "/echo") {
    if (method != "POST" && method != "PUT") return ex.respond(405, "method not allowed\n");
    return ex.respond(200, request.body(), "application/octet-stream");
  }
  ex.respond(404, "not found\n");
}

}  // namespace

Handler bundled_app(bool demo_routes) {
  return [demo_routes](Exchange& ex) { serve(ex, demo_routes, nullptr); };
}

Service bundled_service(bool demo_routes) {
  // Shared by the two callbacks, which run on the same loop: no lock.
  auto last_message = std::make_shared<LastMessage>();
  return Service{
      .handler = [demo_routes, last_message](Exchange& ex) { serve(ex, demo_routes, last_message.get()); },
      .on_message =
          [last_message](std::string_view text) { *last_message = std::string(text); },
  };
}

}  // namespace lbd
