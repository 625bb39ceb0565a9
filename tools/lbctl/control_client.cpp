#include "lbctl/control_client.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace lbd::ctl {

namespace {

using nlohmann::json;

// An error whose text already says what errno meant, in the operator's words.
Error plain_error(std::string message) { return Error(std::error_code(), std::move(message)); }

Result<UniqueFd> connect_to(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return plain_error("control socket path too long: " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Error::from_errno("socket");
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno == ENOENT || errno == ECONNREFUSED) {
      return plain_error("lbd is not running (no control socket at " + path + ")");
    }
    if (errno == EACCES || errno == EPERM) {
      return plain_error("permission denied: " + path + " (run as root or as the user lbd runs as)");
    }
    return Error::from_errno("cannot connect to " + path);
  }
  return fd;
}

}  // namespace

Result<ControlCall> ControlCall::start(const std::string& socket_path, const control::Request& request) {
  auto fd = connect_to(socket_path);
  if (!fd) return fd.error();
  const std::string line = control::encode_request(request);
  std::string send_error;
  if (send(fd->get(), line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    // lbd may have answered and closed before reading (a refusal): its answer is still there.
    send_error = std::string("cannot send the request: ") + strerror(errno);
  }
  return ControlCall(std::move(*fd), std::move(send_error));
}

std::optional<Result<json>> ControlCall::take_lines(const ProgressHandler& on_progress) {
  size_t newline;
  while ((newline = buffer_.find('\n')) != std::string::npos) {
    auto reply = control::parse_reply(buffer_.substr(0, newline));
    buffer_.erase(0, newline + 1);
    if (!reply) return Result<json>(reply.error());
    switch (reply->kind) {
      case control::Reply::Kind::kProgress:
        if (on_progress) on_progress(reply->message);
        break;
      case control::Reply::Kind::kOk:
        return Result<json>(std::move(reply->result));
      case control::Reply::Kind::kError:
        return Result<json>(plain_error(reply->message));
    }
  }
  return std::nullopt;
}

std::optional<Result<json>> ControlCall::read_some(const ProgressHandler& on_progress) {
  if (auto answer = take_lines(on_progress)) return answer;
  char chunk[4096];
  const ssize_t n = recv(fd_.get(), chunk, sizeof(chunk), 0);
  if (n > 0) {
    buffer_.append(chunk, static_cast<size_t>(n));
    return take_lines(on_progress);
  }
  if (n < 0 && errno == EINTR) return std::nullopt;
  return Result<json>(plain_error(!send_error_.empty() ? send_error_
                                                       : "lbd closed the connection without an answer (did it stop?)"));
}

Result<json> ControlCall::wait(const ProgressHandler& on_progress) {
  while (true) {
    if (auto answer = read_some(on_progress)) return std::move(*answer);
  }
}

Result<json> call_lbd(const std::string& socket_path, const control::Request& request,
                      const ProgressHandler& on_progress) {
  auto call = ControlCall::start(socket_path, request);
  if (!call) return call.error();
  return call->wait(on_progress);
}

std::string describe_result(const control::Request& request, const json& result) {
  switch (request.verb) {
    case control::Verb::kStatus:
      return "status";
    case control::Verb::kDrain:
      return request.wait ? "drained" : "draining " + result.value("drained", json::array()).dump();
    case control::Verb::kPolicy:
      return "policy " + result.value("policy", std::string());
    case control::Verb::kStop:
      return "lbd is stopping";
    case control::Verb::kSend: {
      const json sent = result.value("sent", json::array());
      std::string slots;
      for (const auto& slot : sent) slots += (slots.empty() ? "" : ", ") + slot.dump();
      return "sent to " + std::to_string(sent.size()) + " of " + std::to_string(result.value("workers", 0)) +
             " worker(s)" + (slots.empty() ? "" : " (slot " + slots + ")");
    }
    case control::Verb::kUpgrade:
      return "upgraded: lbd pid " + std::to_string(result.value("old_pid", 0)) + " handed over to pid " +
             std::to_string(result.value("new_pid", 0));
    default: {
      char line[128];
      snprintf(line, sizeof(line), "%s done: %d slot(s) in %.2f s",
               result.value("verb", std::string("operation")).c_str(), result.value("slots", 0),
               result.value("seconds", 0.0));
      return line;
    }
  }
}

}  // namespace lbd::ctl
