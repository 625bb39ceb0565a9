// The control protocol between lbd and lbctl: JSON lines over a Unix stream socket.
//
// The client sends one request, a JSON object on one line:
//   {"verb":"status"}
//   {"verb":"drain","slot":0,"timeout_s":10,"wait":true}     or  {"verb":"drain","all":true,...}
//   {"verb":"undrain","slot":0}                                or  {"verb":"undrain","all":true}
//   {"verb":"reload","parallel":1,"timeout_s":30}
//   {"verb":"restart","slot":0,"timeout_s":30}
//   {"verb":"scale","workers":4}
//   {"verb":"policy","policy":"rr"}
//   {"verb":"stop"}
//   {"verb":"upgrade","timeout_s":30}     start the lbd binary on disk as this one's successor
//   {"verb":"send","slot":1,"text":"flush caches"}             or  {"verb":"send","all":true,...}
//                                         one line to active workers (common/message_text.h);
//                                         answers {"sent":[1],"undelivered":[...]}
// lbd answers with any number of progress lines, {"progress":"slot 0: worker 812 ready"}, then
// exactly one final line: {"ok":true,"result":{...}} or {"ok":false,"error":"no such slot: 7"}.
// A request that is not one line of JSON, is longer than kMaxRequestBytes, or names an unknown
// verb gets {"ok":false,"error":...} and the connection is closed; lbd keeps serving.
//
// Shared by lbd (supervisor/control_server.*) and lbctl (tools/lbctl); knows nothing else.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace lbd::control {

inline constexpr size_t kMaxRequestBytes = 64 * 1024;
inline constexpr const char* kDefaultSocketPath = "/run/lbd/lbd.sock";

enum class Verb { kStatus, kDrain, kUndrain, kReload, kRestart, kScale, kPolicy, kStop, kUpgrade, kSend };
const char* verb_name(Verb verb);

struct Request {
  Verb verb = Verb::kStatus;
  std::optional<uint32_t> slot;  // drain, undrain, restart, send
  bool all = false;              // drain, undrain, send
  bool wait = false;             // drain: answer once the workers have exited
  std::optional<double> timeout_s;
  uint32_t parallel = 1;         // reload
  uint32_t workers = 0;          // scale
  std::string policy;            // policy
  std::string text;              // send: the message
};

// Parses one request line. The error says what is wrong in words an operator can act on.
Result<Request> parse_request(const std::string& line);
std::string encode_request(const Request& request);

// Reply lines, newline-terminated.
std::string progress_line(const std::string& message);
std::string ok_line(const nlohmann::json& result = nlohmann::json::object());
std::string error_line(const std::string& message);

// One reply line as the client sees it.
struct Reply {
  enum class Kind { kProgress, kOk, kError } kind = Kind::kError;
  std::string message;     // progress text, or the error
  nlohmann::json result;   // kOk
};
Result<Reply> parse_reply(const std::string& line);

}  // namespace lbd::control
