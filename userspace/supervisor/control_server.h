// lbd's end of the control socket (protocol: control/protocol.h). A Unix stream socket, mode
// 0600; each connecting peer's credentials (SO_PEERCRED) are checked: only root or lbd's own
// uid may act, anyone else gets a refusal. One request per connection; the answer (progress
// lines, then one final line) may come much later, from a long operation.
//
// Never blocks: every socket is non-blocking and driven by the supervisor's poller. A client
// that sends garbage, a line over 64 KiB, or nothing for 10 s is answered or dropped, and
// nothing else is affected (docs/ARCHITECTURE.md, invariant 4).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "control/protocol.h"
#include "supervisor/poller.h"

namespace lbd {

class ControlServer {
 public:
  using ClientId = uint32_t;
  using RequestHandler = std::function<void(ClientId, const control::Request&)>;

  // Binds `path` (creating its directory, replacing a stale socket file, refusing if another
  // lbd answers there) and starts watching it.
  static Result<ControlServer> open(const std::string& path, Poller& poller, RequestHandler handler);
  // Serves on a listener a predecessor bound at `path` (an upgrade): no gap for lbctl.
  static Result<ControlServer> adopt(const std::string& path, UniqueFd listener, Poller& poller,
                                     RequestHandler handler);

  ControlServer(ControlServer&&) noexcept;
  ControlServer& operator=(ControlServer&&) = delete;
  ~ControlServer();  // removes the socket file

  const std::string& path() const { return path_; }
  int listener_fd() const { return listener_.get(); }
  // Leaves the socket file in place at destruction: a successor serves on it now.
  void hand_over() { path_.clear(); }

  // An upgrade passes on, with the listener, the clients this lbd accepted whose request has not
  // come whole yet: lbctl connects, then sends, and this lbd may accept in between and then hand
  // over. Closed when this lbd exits, they would end without an answer; the successor takes them
  // (pidfd_getfd, like the listener) with what they sent so far, and answers them
  // (docs/ARCHITECTURE.md, section 7: no gap for lbctl).
  struct Waiting {
    int fd;
    std::string received;  // a request line's beginning (no newline yet), often nothing
  };
  std::vector<Waiting> waiting_clients() const;
  // The successor's side: serves one of them from now on.
  Result<void> adopt_client(UniqueFd fd, std::string received);

  // Poller events.
  void on_listener_ready();
  void on_client_event(ClientId id, uint32_t events);
  // Drops clients that connected and said nothing for too long.
  void expire_silent_clients();

  // Replies to a request. `final` ends the exchange: the connection closes once it is written.
  // A client that has gone away is skipped silently.
  void progress(ClientId id, const std::string& message);
  void finish_ok(ClientId id, const nlohmann::json& result = nlohmann::json::object());
  void finish_error(ClientId id, const std::string& message);
  bool connected(ClientId id) const { return clients_.count(id) != 0; }

  // Out of descriptors, the listener is not watched for a moment (AcceptPause): the timers call
  // this to watch it again, and until() says when.
  void resume_accepting(std::chrono::steady_clock::time_point now) {
    accept_pause_.resume_if_due(*poller_, listener_.get(), Source::kControl, now);
  }
  std::optional<std::chrono::steady_clock::time_point> accepting_paused_until() const { return accept_pause_.until(); }

 private:
  struct Client {
    UniqueFd fd;
    std::string in;
    std::string out;
    bool asked = false;    // its request has been handed to the supervisor
    bool closing = false;  // close once `out` is written
    std::chrono::steady_clock::time_point connected_at;
  };

  ControlServer(std::string path, UniqueFd fd, Poller& poller, RequestHandler handler);
  void write(ClientId id, const std::string& line, bool final);
  void flush(ClientId id);
  void drop(ClientId id);

  std::string path_;
  UniqueFd listener_;
  Poller* poller_;
  AcceptPause accept_pause_;
  RequestHandler handler_;
  std::map<ClientId, Client> clients_;
  ClientId next_id_ = 1;
};

}  // namespace lbd
