// lbctl's side of the control protocol (userspace/control/protocol.h): one request per
// connection, then progress lines and one final answer. Every verb goes through here, the
// one-shot ones (`lbctl drain 0`) and the dashboard's keys (`lbctl top`) alike.
//
//   auto result = call_lbd(socket, request, print_progress);   blocks until the final answer
//
//   auto call = ControlCall::start(socket, request);           the dashboard: poll call->fd(),
//   ... on POLLIN: if (auto answer = call->read_some(...))     then read what came; the screen
//                                                               keeps refreshing meanwhile
//
// Errors come back as lbd::Error with the one line an operator reads ("lbd is not running (no
// control socket at /run/lbd/lbd.sock)", "no such slot: 7 (slots are 0-1)"); only main() decides
// to print it and exit.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "common/unique_fd.h"
#include "control/protocol.h"

namespace lbd::ctl {

// Receives each progress line ("slot 0: starting pid 812") as it arrives.
using ProgressHandler = std::function<void(const std::string& message)>;

// One request in flight. Move-only; destroying it closes the connection, which does not cancel
// the operation: lbd carries on and drops its answer.
class ControlCall {
 public:
  // Connects and sends the request. A Unix socket takes a request line (well under its buffer)
  // at once, so this does not wait for lbd to do anything.
  static Result<ControlCall> start(const std::string& socket_path, const control::Request& request);

  // Readable when lbd has answered something.
  int fd() const { return fd_.get(); }

  // Call when fd() is readable: reads what has arrived, hands progress lines to `on_progress`,
  // and returns the final answer once it has come (nothing while the operation goes on).
  std::optional<Result<nlohmann::json>> read_some(const ProgressHandler& on_progress);

  // Blocks until the final answer.
  Result<nlohmann::json> wait(const ProgressHandler& on_progress);

 private:
  ControlCall(UniqueFd fd, std::string send_error) : fd_(std::move(fd)), send_error_(std::move(send_error)) {}
  // The final answer among the complete lines buffered so far, if it has come.
  std::optional<Result<nlohmann::json>> take_lines(const ProgressHandler& on_progress);

  UniqueFd fd_;
  std::string buffer_;      // received bytes not yet parsed (a partial line)
  std::string send_error_;  // why sending failed; lbd's answer, if any, still says more
};

// start() then wait().
Result<nlohmann::json> call_lbd(const std::string& socket_path, const control::Request& request,
                                     const ProgressHandler& on_progress);

// What a successful answer means, in one line: "draining [0]", "policy least",
// "reload done: 2 slot(s) in 1.42 s". Status answers are not summarised (they are the tables).
std::string describe_result(const control::Request& request, const nlohmann::json& result);

}  // namespace lbd::ctl
