// The API a C++ service links against to run its own handler inside lbd's workers.
//
//   void handle(lbd::Exchange& ex) {
//     if (ex.request().path() == "/") return ex.respond(200, "hi\n");
//     ex.respond(404, "not found\n");
//   }
//   int main(int argc, char** argv) { return lbd::run(argc, argv, handle); }   // service.h
//
// A handler runs on the worker's event loop: it must not block. To answer later, call
// respond_after(); the loop keeps serving other connections meanwhile. Requests on one
// connection are answered in order (HTTP/1.1 pipelining), so the next request on the same
// connection waits for this one.
//
// A service may also take messages: one line of text an operator sends to some or all workers
// (`lbctl send 1 TEXT`, `lbctl send --all TEXT`; Node's worker.send, PM2's sendDataToProcessId):
//
//   lbd::Service service{.handler = handle,
//                        .on_message = [](std::string_view text) { spdlog::info("got {}", text); }};
//   int main(int argc, char** argv) { return lbd::run(argc, argv, service); }
//
// on_message runs on the worker's event loop too, between requests: it must not block either.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lbd {

struct Header {
  std::string_view name;
  std::string_view value;
};

// A parsed request. Every view stays valid until the exchange is answered.
class Request {
 public:
  std::string_view method() const { return method_; }
  std::string_view target() const { return target_; }  // "/work?us=10"
  std::string_view path() const { return path_; }      // "/work"
  std::string_view query() const { return query_; }    // "us=10"
  std::span<const Header> headers() const { return headers_; }
  std::string_view body() const { return body_; }
  int http_minor() const { return http_minor_; }

  // Header lookup, case-insensitive on the name.
  std::optional<std::string_view> header(std::string_view name) const;
  // The value of `name` in the query string ("us" in "us=10&x=1"); not URL-decoded.
  std::optional<std::string_view> query_param(std::string_view name) const;

 private:
  friend class RequestParser;
  std::string_view method_, target_, path_, query_, body_;
  std::vector<Header> headers_;
  int http_minor_ = 1;
};

// One request and its answer.
class Exchange {
 public:
  virtual ~Exchange() = default;

  virtual const Request& request() const = 0;
  // The worker's slot, the same number the X-Worker header carries.
  virtual uint32_t worker_slot() const = 0;

  // Adds a response header; call before respond().
  virtual void add_header(std::string_view name, std::string_view value) = 0;
  // Answers now. Content-Length, Date, Server, X-Worker and Connection are added for you.
  virtual void respond(int status, std::string_view body,
                       std::string_view content_type = "text/plain") = 0;
  // Answers later without blocking the loop: `then` runs on the worker's loop after `delay` and
  // must call respond(). If the client goes away first, `then` is dropped.
  virtual void respond_after(std::chrono::milliseconds delay,
                             std::function<void(Exchange&)> then) = 0;
};

// A handler that neither responds nor defers produces a 500.
using Handler = std::function<void(Exchange&)>;

// Receives an operator's message: one line (no newline, no control characters but tab, valid
// UTF-8, 1 to 4095 bytes: common/message_text.h). The view is valid during the call only.
using MessageHandler = std::function<void(std::string_view text)>;

// What a service runs in each worker: its handler and, optionally, what it does with messages.
// The worker logs every message it receives (`message: TEXT`), then calls on_message, if set.
struct Service {
  Handler handler;
  MessageHandler on_message;
};

}  // namespace lbd
