// Reads HTTP/1.1 responses off a client connection with llhttp (Node.js's parser, in response
// mode): bytes go in as they arrive, in any split; out comes "need more", "complete" or "bad".
// Only what a load generator needs is kept: the status, whether the server keeps the connection
// open, and the X-Worker header (which lbd worker answered). Bodies are skipped, never copied.
//
//   ResponseParser parser;
//   auto step = parser.feed(bytes);        // kComplete: parser.status(), parser.worker()
//   parser.next();                          // the next response on a keep-alive connection
//   parser.finish();                        // the server closed: true if that ends the response
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <string>
#include <string_view>

namespace lbd::load {

class ResponseParser {
 public:
  enum class Status {
    kNeedMore,  // every byte consumed, the response is not complete
    kComplete,  // a whole response has been read
    kBad,       // not an HTTP/1.x response; error() says why
  };
  struct Step {
    Status status;
    size_t consumed;  // bytes of the input used; after kComplete the rest is not a response of ours
  };

  ResponseParser();
  ResponseParser(const ResponseParser&) = delete;
  ResponseParser& operator=(const ResponseParser&) = delete;

  // A new connection.
  void reset();
  // Done with a complete response; parse the next one on the same connection.
  void next();

  Step feed(std::string_view data);
  // The peer closed the connection (EOF). True if that completes the response (a body without
  // Content-Length runs until the close); false if the response is cut short or never began.
  bool finish();

  // True once any byte of the current response has been seen.
  bool started() const { return started_; }
  // After kComplete:
  int status() const { return status_; }
  // The server will keep the connection open for another request.
  bool keep_alive() const { return keep_alive_; }
  bool has_worker() const { return has_worker_; }
  // The X-Worker value ("0", "1", ...), empty when the response had none.
  std::string_view worker() const { return worker_; }
  // After kBad: llhttp's reason.
  const char* error() const;

 private:
  static int on_message_begin(llhttp_t* p);
  static int on_header_field(llhttp_t* p, const char* at, size_t len);
  static int on_header_field_complete(llhttp_t* p);
  static int on_header_value(llhttp_t* p, const char* at, size_t len);
  static int on_header_value_complete(llhttp_t* p);
  static int on_headers_complete(llhttp_t* p);
  static int on_message_complete(llhttp_t* p);
  static const llhttp_settings_t& settings();
  void clear_response();

  llhttp_t parser_;
  bool started_ = false;
  bool complete_ = false;
  int status_ = 0;
  bool keep_alive_ = false;
  // Header name being read: only "X-Worker" matters, so longer names are not kept.
  std::string field_;
  bool field_too_long_ = false;
  bool in_worker_value_ = false;
  bool has_worker_ = false;
  std::string worker_;
};

}  // namespace lbd::load
