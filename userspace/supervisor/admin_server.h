// lbd's admin HTTP endpoint (--admin ADDR:PORT), for monitoring and load balancers in front:
//   GET /metrics   Prometheus text format 0.0.4 (supervisor/metrics.cpp builds it)
//   GET /healthz   200 "ok" while lbd runs
//   GET /readyz    200 while at least one worker is active and lbd is not stopping; 503 while
//                  every slot is drained and from the moment a graceful stop begins, so a
//                  balancer stops sending before connections are closed
// HEAD works like GET; another method on these paths gets 405, another path 404.
//
// Served by the supervisor on its own epoll loop, off the workers' data path, and kept small:
// one request per connection, answered with "Connection: close"; parsed by the workers' llhttp
// parser (worker/http.h) with tight limits (8 KiB of headers: 431; a body over 4 KiB: 413;
// anything malformed: 400). A slow or hostile client cannot block the supervisor or crowd out
// the others for long: every socket is non-blocking, a connection has 5 s from accept to its
// answer being sent (then it is closed), and at most 32 connections are served at once; a
// connection beyond that is closed at once (docs/ARCHITECTURE.md, invariants 4 and 5).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "net/address.h"
#include "supervisor/poller.h"
#include "worker/http.h"

namespace lbd {

// What the endpoints ask the supervisor.
struct AdminEndpoints {
  // Why lbd should not be sent traffic now ("every worker is drained", "lbd is stopping"), or
  // empty when it is ready.
  std::function<std::string()> not_ready_because;
  // The /metrics body.
  std::function<std::string()> metrics;
};

struct AdminResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string extra_headers;  // preformatted "Name: value\r\n" lines
  std::string body;
};

// The answer to one parsed request: routing only, no sockets, so unit tests can drive it.
AdminResponse answer_admin_request(const Request& request, const AdminEndpoints& endpoints);
// The answer to a request the parser refused (400, 413, 431).
AdminResponse admin_error_response(int status);
// The bytes on the wire, always with "Connection: close"; without the body when `head`.
std::string serialize_admin_response(const AdminResponse& response, bool head);

class AdminServer {
 public:
  using ClientId = uint32_t;
  using Clock = std::chrono::steady_clock;

  // Listens on `address` (port 0: a free port, see address()) and starts watching it.
  static Result<AdminServer> open(const net::Address& address, Poller& poller, AdminEndpoints endpoints);
  // Serves on a listener a predecessor opened (an upgrade): no gap for the monitoring.
  static Result<AdminServer> adopt(UniqueFd listener, Poller& poller, AdminEndpoints endpoints);

  AdminServer(AdminServer&&) noexcept;
  AdminServer& operator=(AdminServer&&) = delete;
  ~AdminServer();

  // Where it listens, with the real port.
  const net::Address& address() const { return address_; }
  int listener_fd() const { return listener_.get(); }

  // An upgrade passes on, with the listener, every connection this lbd holds: a probe or scrape
  // accepted just before the handover would otherwise end without an answer when this lbd exits
  // (docs/ARCHITECTURE.md, section 7: no gap for the monitoring). Each with the bytes of its
  // request received so far (not answered yet), or what is left to send of its answer.
  struct Held {
    int fd;
    std::string received;  // while not answered
    std::string unsent;    // once answered
    bool answered = false;
    bool peer_closed = false;
  };
  std::vector<Held> held_clients() const;
  // The successor's side: serves one of them from now on.
  Result<void> adopt_client(UniqueFd fd, const Held& held);

  // Poller events.
  void on_listener_ready();
  void on_client_event(ClientId id, uint32_t events);
  // Closes connections whose time is up.
  void expire(Clock::time_point now);
  // When expire() next has something to do; empty when no connection is open.
  std::optional<Clock::time_point> next_deadline() const;

  // Out of descriptors, the listener is not watched for a moment (AcceptPause): the timers call
  // this to watch it again, and until() says when.
  void resume_accepting(std::chrono::steady_clock::time_point now) {
    accept_pause_.resume_if_due(*poller_, listener_.get(), Source::kAdmin, now);
  }
  std::optional<std::chrono::steady_clock::time_point> accepting_paused_until() const { return accept_pause_.until(); }

 private:
  struct Client;

  AdminServer(net::Address address, UniqueFd fd, Poller& poller, AdminEndpoints endpoints);
  void read_request(ClientId id, Client& client);
  // Feeds a request's bytes to its parser, and answers once it is whole (or refused).
  void parse(ClientId id, Client& client, std::string_view bytes);
  void answer(ClientId id, Client& client, const AdminResponse& response, bool head);
  void flush(ClientId id, Client& client);
  void drop(ClientId id);

  net::Address address_;
  UniqueFd listener_;
  Poller* poller_;
  AcceptPause accept_pause_;
  AdminEndpoints endpoints_;
  // unique_ptr: a RequestParser points at itself (llhttp's data pointer) and must not move.
  std::map<ClientId, std::unique_ptr<Client>> clients_;
  ClientId next_id_ = 1;
  uint64_t turned_away_ = 0;
};

}  // namespace lbd
