#include "control/protocol.h"

#include <cmath>

#include "common/message_text.h"

namespace lbd::control {

namespace {

using nlohmann::json;

Error bad(const std::string& what) { return Error::invalid(what); }

// What each verb requires of a request beyond the fields' own checks; empty when it is complete.
std::string needs_slot_or_all(const Request& r) { return r.all == r.slot.has_value() ? "name one slot, or all" : ""; }
std::string needs_slot(const Request& r) { return r.slot ? "" : "restart needs a slot"; }
std::string needs_workers(const Request& r) {
  return r.workers == 0 ? "scale needs a number of workers, at least 1" : "";
}
std::string needs_policy(const Request& r) { return r.policy.empty() ? "policy needs a policy name" : ""; }
std::string needs_message(const Request& r) {
  if (std::string target = needs_slot_or_all(r); !target.empty()) return target;
  return message_text_problem(r.text);
}

// Every verb, once: its name on the wire and what a request for it must say. A new verb is a line
// here, its handler in lbd (supervisor/control_verbs.cpp), its command in lbctl, and a test.
struct VerbSpec {
  Verb verb;
  const char* name;
  std::string (*incomplete)(const Request&);  // null: nothing more is needed
};
constexpr VerbSpec kVerbs[] = {
    {Verb::kStatus, "status", nullptr},
    {Verb::kDrain, "drain", needs_slot_or_all},
    {Verb::kUndrain, "undrain", needs_slot_or_all},
    {Verb::kReload, "reload", nullptr},
    {Verb::kRestart, "restart", needs_slot},
    {Verb::kScale, "scale", needs_workers},
    {Verb::kPolicy, "policy", needs_policy},
    {Verb::kStop, "stop", nullptr},
    {Verb::kUpgrade, "upgrade", nullptr},
    {Verb::kSend, "send", needs_message},
};

}  // namespace

const char* verb_name(Verb verb) {
  for (const auto& v : kVerbs) {
    if (v.verb == verb) return v.name;
  }
  return "unknown";
}

Result<Request> parse_request(const std::string& line) {
  if (line.size() > kMaxRequestBytes) return bad("request too long");
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return bad("malformed request: not JSON");
  if (!j.is_object()) return bad("malformed request: expected a JSON object");
  auto verb = j.find("verb");
  if (verb == j.end() || !verb->is_string()) return bad("malformed request: no \"verb\"");

  Request request;
  const VerbSpec* spec = nullptr;
  for (const auto& v : kVerbs) {
    if (*verb == v.name) spec = &v;
  }
  if (!spec) return bad("unknown verb '" + verb->get<std::string>() + "'");
  request.verb = spec->verb;

  try {
    if (auto it = j.find("slot"); it != j.end()) {
      if (!it->is_number_unsigned() || it->get<uint64_t>() > UINT32_MAX) {
        return bad("\"slot\" must be a slot number");
      }
      request.slot = it->get<uint32_t>();
    }
    if (auto it = j.find("all"); it != j.end()) request.all = it->get<bool>();
    if (auto it = j.find("wait"); it != j.end()) request.wait = it->get<bool>();
    if (auto it = j.find("timeout_s"); it != j.end()) {
      double t = it->get<double>();
      if (!(t > 0) || t > 86400 || !std::isfinite(t)) return bad("\"timeout_s\" must be between 0 and 86400");
      request.timeout_s = t;
    }
    if (auto it = j.find("parallel"); it != j.end()) {
      if (!it->is_number_unsigned() || *it == 0 || it->get<uint64_t>() > UINT32_MAX) {
        return bad("\"parallel\" must be at least 1");
      }
      request.parallel = it->get<uint32_t>();
    }
    if (auto it = j.find("workers"); it != j.end()) {
      if (!it->is_number_unsigned() || it->get<uint64_t>() > UINT32_MAX) {
        return bad("\"workers\" must be a number of workers");
      }
      request.workers = it->get<uint32_t>();
    }
    if (auto it = j.find("policy"); it != j.end()) request.policy = it->get<std::string>();
    if (auto it = j.find("text"); it != j.end()) request.text = it->get<std::string>();
  } catch (const json::exception&) {
    return bad("malformed request: a field has the wrong type");
  }

  if (spec->incomplete) {
    if (std::string missing = spec->incomplete(request); !missing.empty()) return bad(missing);
  }
  return request;
}

std::string encode_request(const Request& request) {
  json j = {{"verb", verb_name(request.verb)}};
  if (request.slot) j["slot"] = *request.slot;
  if (request.all) j["all"] = true;
  if (request.wait) j["wait"] = true;
  if (request.timeout_s) j["timeout_s"] = *request.timeout_s;
  if (request.verb == Verb::kReload) j["parallel"] = request.parallel;
  if (request.verb == Verb::kScale) j["workers"] = request.workers;
  if (request.verb == Verb::kPolicy) j["policy"] = request.policy;
  if (request.verb == Verb::kSend) j["text"] = request.text;
  // Never throws: text that is not UTF-8 (only a send's could be, and lbctl checks it with
  // message_text_problem() first) would go with its bad bytes replaced by U+FFFD.
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string progress_line(const std::string& message) {
  return json{{"progress", message}}.dump() + "\n";
}

std::string ok_line(const json& result) { return json{{"ok", true}, {"result", result}}.dump() + "\n"; }

std::string error_line(const std::string& message) {
  return json{{"ok", false}, {"error", message}}.dump() + "\n";
}

Result<Reply> parse_reply(const std::string& line) {
  json j = json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return bad("lbd sent a line that is not JSON");
  Reply reply;
  if (auto it = j.find("progress"); it != j.end() && it->is_string()) {
    reply.kind = Reply::Kind::kProgress;
    reply.message = it->get<std::string>();
    return reply;
  }
  auto ok = j.find("ok");
  if (ok == j.end() || !ok->is_boolean()) return bad("lbd sent a reply without \"ok\"");
  if (ok->get<bool>()) {
    reply.kind = Reply::Kind::kOk;
    reply.result = j.value("result", json::object());
  } else {
    reply.kind = Reply::Kind::kError;
    reply.message = j.value("error", std::string("unknown error"));
  }
  return reply;
}

}  // namespace lbd::control
