// lbload's response parser on hostile bytes (a server under test may answer anything), fed in
// the pieces fuzz_split.h cuts: it never claims more than it was given, a complete response has
// a status in 100..999, and after an error or at EOF it stays consistent.
#include "fuzz_split.h"
#include "lbload/response_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lbd::load::ResponseParser parser;
  bool bad = false;
  for (std::string_view piece : lbd::fuzz::pieces(data, size)) {
    while (!bad) {
      auto step = parser.feed(piece);
      if (step.consumed > piece.size()) __builtin_trap();
      piece.remove_prefix(step.consumed);
      if (step.status == lbd::load::ResponseParser::Status::kBad) {
        if (parser.error() == nullptr) __builtin_trap();
        bad = true;
      } else if (step.status == lbd::load::ResponseParser::Status::kComplete) {
        if (parser.status() < 100 || parser.status() > 999) __builtin_trap();
        (void)parser.worker();
        parser.next();
        if (piece.empty()) break;
      } else {
        if (!piece.empty()) __builtin_trap();
        break;
      }
    }
    if (bad) break;
  }
  if (!bad) (void)parser.finish();
  return 0;
}
