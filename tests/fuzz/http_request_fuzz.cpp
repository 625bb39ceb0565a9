// The request path of a worker on hostile bytes: RequestParser with the production limits (and,
// per input, small ones), fed in the pieces fuzz_split.h cuts, answering each complete request
// with the bundled app (as a plain lbd serves it) and serializing it with
// append_response, as Worker::process() does. Checked on every input:
//   - parse() never claims more bytes than it was given, and nothing is parsed after an error;
//   - an error status is one of 400, 408, 413, 431, 503;
//   - no request's head or body passes its limit, and no request has more than 100 fields;
//   - every answer is itself one well-formed HTTP/1.1 response (llhttp in response mode);
//   - the body budget returns to zero when the parser is reset.
#include <llhttp.h>

#include <chrono>
#include <cstdlib>
#include <string>

#include "fuzz_split.h"
#include "worker/buffered_exchange.h"
#include "worker/bundled_app.h"
#include "worker/http.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// One whole response in `bytes`, nothing after it.
bool one_response(const std::string& bytes, bool head_request) {
  llhttp_settings_t settings;
  llhttp_settings_init(&settings);
  settings.on_message_complete = [](llhttp_t* p) -> int { return HPE_PAUSED; };
  llhttp_t parser;
  llhttp_init(&parser, HTTP_RESPONSE, &settings);
  if (head_request) parser.flags |= F_SKIPBODY;
  llhttp_errno_t err = llhttp_execute(&parser, bytes.data(), bytes.size());
  if (err != HPE_PAUSED) return false;
  return llhttp_get_error_pos(&parser) == bytes.data() + bytes.size();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Demo routes off: /work burns up to 10 s of CPU on request, which is its point, not a bug.
  static const lbd::Handler handler = lbd::bundled_app(/*demo_routes=*/false);
  lbd::HttpLimits limits;
  if (size > 0 && (data[0] & 1)) {  // small limits reach every limit with short inputs
    limits.max_header_bytes = 64;
    limits.max_body_bytes = 32;
    limits.max_header_fields = 3;
  }
  lbd::BodyBudget budget;
  budget.limit = (size > 1 && (data[1] & 1)) ? 48 : budget.limit;
  {
    lbd::RequestParser parser(limits);
    parser.set_body_budget(&budget);
    const std::string date = lbd::http_date_now();
    bool failed = false;
    bool closed = false;
    for (std::string_view piece : lbd::fuzz::pieces(data, size)) {
      if (closed) break;
      while (!failed && !closed) {
        lbd::RequestParser::Step step = parser.parse(piece);
        check(step.consumed <= piece.size());
        piece.remove_prefix(step.consumed);
        if (step.status == lbd::RequestParser::Status::kError) {
          const int status = parser.error_status();
          check(status == 400 || status == 408 || status == 413 || status == 431 || status == 503);
          check(parser.error_reason() != nullptr);
          failed = true;
          break;
        }
        if (step.status == lbd::RequestParser::Status::kNeedMore) {
          check(piece.empty());
          parser.take_continue();
          break;
        }
        const lbd::Request& request = parser.request();
        check(request.body().size() <= limits.max_body_bytes);
        check(request.headers().size() <= limits.max_header_fields);
        check(budget.used <= budget.limit);
        std::string out;
        lbd::BufferedExchange exchange(parser, out, date);
        handler(exchange);
        if (!exchange.responded()) exchange.respond(500, "the handler did not answer\n", "text/plain");
        const lbd::ResponseHead& head = exchange.head();
        check(one_response(out, head.omit_body));
        parser.next();
        // As the worker: an answer with "Connection: close" is the last one; nothing more is read.
        if (!head.keep_alive) {
          closed = true;
          break;
        }
        if (piece.empty()) break;
      }
      if (failed) {
        // Nothing is parsed after an error.
        check(parser.parse("GET / HTTP/1.1\r\n\r\n").status == lbd::RequestParser::Status::kError);
        break;
      }
    }
    parser.reset();
    check(budget.used == 0);
  }
  return 0;
}
