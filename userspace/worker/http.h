// HTTP/1.1 for the worker runtime: an incremental request parser over llhttp (Node.js's parser)
// and the response serializer. Pure logic, no sockets: unit-tested on byte strings.
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "worker/handler.h"

namespace lbd {

struct HttpLimits {
  // Every byte of a head counts: blank lines before it, the request line, headers, whitespace.
  // Trailers and chunk extensions count against the same figure. More gets 431 (400 for framing).
  size_t max_header_bytes = 16 * 1024;
  size_t max_body_bytes = 1024 * 1024;  // more gets 413
  size_t max_header_fields = 100;       // header lines; more gets 431 (each costs a span)
};

// What all of one worker's connections hold in request bodies at once (--body-memory). Bodies
// are buffered whole before the handler runs, so without a budget a few thousand clients each
// sending up to the body limit could take gigabytes; past the budget a request gets 503.
struct BodyBudget {
  size_t limit = 64 * 1024 * 1024;
  size_t used = 0;
};

// Feeds bytes in, gets whole requests out, one at a time. Bytes of the next pipelined request
// are left unconsumed until the current one has been answered and next() called.
//
// The parser copies what a Request needs (target, headers, body) into its own storage, so the
// caller may recycle its receive buffer as soon as parse() returns.
class RequestParser {
 public:
  enum class Status {
    kNeedMore,  // every byte consumed, no complete request yet
    kRequest,   // a complete request is available in request()
    kError,     // the input is not acceptable HTTP; answer error_status() and close
  };
  struct Step {
    Status status;
    size_t consumed;  // bytes of `data` used, whatever the status
  };

  explicit RequestParser(const HttpLimits& limits = {});
  RequestParser(const RequestParser&) = delete;
  RequestParser& operator=(const RequestParser&) = delete;
  ~RequestParser();

  void set_limits(const HttpLimits& limits) { limits_ = limits; }
  // Bodies are charged to `budget` (shared by a worker's connections; it must outlive the parser).
  void set_body_budget(BodyBudget* budget) { budget_ = budget; }
  // Starts over for a new connection, and gives back memory held for earlier large requests.
  void reset();
  Step parse(std::string_view data);
  // After kRequest: the request, valid until next().
  const Request& request() const { return request_; }
  // After kRequest: whether the client wants the connection kept open (HTTP version and the
  // Connection header; false after an Upgrade request, which lbd does not support).
  bool keep_alive() const { return keep_alive_; }
  // After kError: 400, 413, 431 or 503; and a short reason for the log.
  int error_status() const { return error_status_; }
  const char* error_reason() const;
  // True from the first byte of a request until it is complete.
  bool in_request() const { return in_request_; }
  // In a request whose head (request line and headers) has not all arrived, blank lines before
  // it included: what the header timeout applies to.
  bool in_head() const { return in_request_ ? !headers_complete_ : head_bytes_ > 0; }
  // In a request whose head has arrived and whose body has not: what --min-body-rate applies to.
  bool in_body() const { return in_request_ && headers_complete_; }
  // Body bytes of the current request received so far.
  size_t body_received() const { return body_.size(); }
  // Bytes of memory the parser's own buffers hold (for tests of what a connection keeps).
  size_t buffer_capacity() const {
    return head_.capacity() + body_.capacity() + header_spans_.capacity() * sizeof(HeaderSpan) +
           request_.headers_.capacity() * sizeof(Header);
  }
  // True once after the headers of a request that asked `Expect: 100-continue` and whose body
  // has not arrived: the caller sends "100 Continue".
  bool take_continue();
  // Done with the current request: parse the next one. The request's body leaves the budget,
  // and buffers grown past their usual size for a large request are given back.
  void next();

 private:
  static int on_message_begin(llhttp_t* p);
  static int on_url(llhttp_t* p, const char* at, size_t len);
  static int on_header_field(llhttp_t* p, const char* at, size_t len);
  static int on_header_value(llhttp_t* p, const char* at, size_t len);
  static int on_header_value_complete(llhttp_t* p);
  static int on_headers_complete(llhttp_t* p);
  static int on_body(llhttp_t* p, const char* at, size_t len);
  static int on_chunk_extension(llhttp_t* p, const char* at, size_t len);
  static int on_message_complete(llhttp_t* p);
  static const llhttp_settings_t& settings();

  // Between requests or in a head: every byte received counts against max_header_bytes.
  bool counting_head() const { return !in_request_ || !headers_complete_; }
  Step execute(std::string_view data);
  Step fail(int status, const char* reason, size_t consumed);
  bool count_framing_bytes(size_t len);
  void release_body();
  void trim_buffers();
  void build_request();

  HttpLimits limits_;
  llhttp_t parser_;
  Request request_;
  // Target, then name/value pairs, back to back; views are built when the request completes
  // because appending may move the storage.
  std::string head_;
  struct HeaderSpan {
    uint32_t name_at, name_len, value_at, value_len;
  };
  std::vector<HeaderSpan> header_spans_;
  uint32_t target_len_ = 0;
  bool in_value_ = false;
  std::string body_;
  BodyBudget* budget_ = nullptr;
  size_t head_bytes_ = 0;     // received while counting_head(), since the last request ended
  size_t framing_bytes_ = 0;  // trailers and chunk extensions of the current request
  bool in_request_ = false;
  bool headers_complete_ = false;
  bool continue_pending_ = false;
  bool keep_alive_ = true;
  bool paused_ = false;
  int error_status_ = 400;
  const char* failure_ = nullptr;  // our own error, found outside llhttp's callbacks
};

// Appends one complete response to `out`.
struct ResponseHead {
  int status = 200;
  std::string_view content_type = "text/plain";
  std::string_view extra_headers;  // preformatted "Name: value\r\n" lines
  bool keep_alive = true;
  // HTTP/1.0 clients get "Connection: keep-alive" when kept open, since 1.0 defaults to close.
  bool http10 = false;
  uint32_t worker_slot = 0;
  std::string_view date;  // RFC 7231 IMF-fixdate, cached by the caller once a second
  bool omit_body = false;  // HEAD: headers as for GET, no body
};
void append_response(std::string& out, const ResponseHead& head, std::string_view body);

// The parts of the head that follow from the request `parser` has just completed: kept alive
// only if the client asked for it and `may_keep_alive` (the worker is not draining, the
// connection is not closing), an explicit keep-alive for HTTP/1.0, no body for HEAD. The caller
// fills in the rest. Shared by the worker and bench/micro, so the benchmark answers as it does.
ResponseHead response_head_for(const RequestParser& parser, bool may_keep_alive);

const char* status_reason(int status);

// "Sun, 06 Nov 1994 08:49:37 GMT" for the current second.
std::string http_date_now();

}  // namespace lbd
