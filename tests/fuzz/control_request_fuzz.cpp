// The control protocol on hostile bytes: what the supervisor decodes from any client of its
// socket (parse_request), and what lbctl decodes from an answer (parse_reply, and a status
// report's JSON). Any input gives a value or a clear error: no exception escapes, nothing
// crashes, and a request that decodes encodes to a line that decodes to the same verb.
#include <nlohmann/json.hpp>

#include <string>

#include "control/protocol.h"
#include "control/status.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string line(reinterpret_cast<const char*>(data), size);
  auto request = lbd::control::parse_request(line);
  if (request) {
    auto again = lbd::control::parse_request(lbd::control::encode_request(*request));
    if (!again || again->verb != request->verb) __builtin_trap();
  } else if (request.error().message().empty()) {
    __builtin_trap();
  }
  (void)lbd::control::parse_reply(line);
  nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!j.is_discarded()) (void)lbd::control::status_from_json(j);
  return 0;
}
