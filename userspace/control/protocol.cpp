#include "control/protocol.h"

#include <cmath>

namespace lbd::control {

namespace {

using nlohmann::json;

struct VerbName {
  Verb verb;
  const char* name;
};
constexpr VerbName kVerbs[] = {
    {Verb::kStatus, "status"}, {Verb::kDrain, "drain"},     {Verb::kUndrain, "undrain"},
    {Verb::kReload, "reload"}, {Verb::kRestart, "restart"}, {Verb::kScale, "scale"},
    {Verb::kPolicy, "policy"}, {Verb::kStop, "stop"},
};

Error bad(const std::string& what) { return Error(std::make_error_code(std::errc::invalid_argument), what); }

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
  bool known = false;
  for (const auto& v : kVerbs) {
    if (*verb == v.name) {
      request.verb = v.verb;
      known = true;
    }
  }
  if (!known) return bad("unknown verb '" + verb->get<std::string>() + "'");

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
  } catch (const json::exception&) {
    return bad("malformed request: a field has the wrong type");
  }

  switch (request.verb) {
    case Verb::kDrain:
    case Verb::kUndrain:
      if (request.all == request.slot.has_value()) return bad("name one slot, or all");
      break;
    case Verb::kRestart:
      if (!request.slot) return bad("restart needs a slot");
      break;
    case Verb::kScale:
      if (request.workers == 0) return bad("scale needs a number of workers, at least 1");
      break;
    case Verb::kPolicy:
      if (request.policy.empty()) return bad("policy needs a policy name");
      break;
    default:
      break;
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
  return j.dump() + "\n";
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
