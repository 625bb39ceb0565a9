#include "supervisor/admin_server.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "common/log.h"
#include "metrics/exposition.h"
#include "net/listener.h"

namespace lbd {

namespace {

constexpr size_t kMaxClients = 32;
constexpr int kBacklog = 64;
// From accept to the answer being sent: a client that trickles its request, or never reads the
// answer, is closed after this.
constexpr auto kClientTimeout = std::chrono::seconds(5);
// After the answer, how long we wait for the client to close before we do. Closing while its
// unread bytes sit in our receive buffer would send a reset, and the client could lose the answer.
constexpr auto kLinger = std::chrono::seconds(1);
// A GET needs no body; these only bound what a confused client may send.
constexpr HttpLimits kLimits{.max_header_bytes = 8 * 1024, .max_body_bytes = 4 * 1024};

bool is_read(std::string_view method) { return method == "GET" || method == "HEAD"; }

AdminResponse text(int status, std::string body) {
  AdminResponse response;
  response.status = status;
  response.body = std::move(body);
  return response;
}

}  // namespace

struct AdminServer::Client {
  UniqueFd fd;
  RequestParser parser{kLimits};
  std::string received;  // the request's bytes until it is answered (an upgrade passes them on)
  std::string out;       // the answer
  size_t out_sent = 0;
  bool answered = false;     // `out` holds the whole answer; input is discarded from now on
  bool peer_closed = false;  // the client has finished sending (EOF)
  Clock::time_point deadline;
};

// --- the endpoints ------------------------------------------------------------------------------

AdminResponse answer_admin_request(const Request& request, const AdminEndpoints& endpoints) {
  const std::string_view path = request.path();
  const bool known = path == "/metrics" || path == "/healthz" || path == "/readyz";
  if (!known) return text(404, "not found (try /metrics, /healthz or /readyz)\n");
  if (!is_read(request.method())) {
    AdminResponse response = text(405, "method not allowed\n");
    response.extra_headers = "Allow: GET, HEAD\r\n";
    return response;
  }
  if (path == "/healthz") return text(200, "ok\n");
  if (path == "/readyz") {
    const std::string reason = endpoints.not_ready_because();
    return reason.empty() ? text(200, "ready\n") : text(503, "not ready: " + reason + "\n");
  }
  AdminResponse response = text(200, endpoints.metrics());
  response.content_type = metrics::kContentType;
  return response;
}

AdminResponse admin_error_response(int status) {
  return text(status, std::to_string(status) + " " + status_reason(status) + "\n");
}

std::string serialize_admin_response(const AdminResponse& response, bool head) {
  std::string out = "HTTP/1.1 " + std::to_string(response.status) + " " + status_reason(response.status) +
                    "\r\nServer: lbd\r\nDate: " + http_date_now() +
                    "\r\nContent-Type: " + response.content_type +
                    "\r\nContent-Length: " + std::to_string(response.body.size()) +
                    "\r\nCache-Control: no-store\r\nConnection: close\r\n" + response.extra_headers +
                    "\r\n";
  if (!head) out += response.body;
  return out;
}

// --- the server ---------------------------------------------------------------------------------

Result<AdminServer> AdminServer::open(const net::Address& address, Poller& poller,
                                      AdminEndpoints endpoints) {
  auto fd = net::listen_exclusive(address, kBacklog);
  if (!fd) return fd.error().wrap("admin endpoint");
  auto bound = net::local_address(fd->get());
  if (!bound) return bound.error().wrap("admin endpoint");
  LBD_TRY(poller.watch(fd->get(), Source::kAdmin, 0));
  return AdminServer(*bound, std::move(*fd), poller, std::move(endpoints));
}

Result<AdminServer> AdminServer::adopt(UniqueFd listener, Poller& poller, AdminEndpoints endpoints) {
  auto bound = net::local_address(listener.get());
  if (!bound) return bound.error().wrap("admin endpoint");
  LBD_TRY(poller.watch(listener.get(), Source::kAdmin, 0));
  return AdminServer(*bound, std::move(listener), poller, std::move(endpoints));
}

AdminServer::AdminServer(net::Address address, UniqueFd fd, Poller& poller, AdminEndpoints endpoints)
    : address_(address), listener_(std::move(fd)), poller_(&poller), endpoints_(std::move(endpoints)) {}

AdminServer::AdminServer(AdminServer&&) noexcept = default;
AdminServer::~AdminServer() = default;

void AdminServer::on_listener_ready() {
  while (true) {
    UniqueFd fd(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd) {  // EAGAIN, or a transient error: nothing to do until the next event
      accept_pause_.pause_if_out_of_fds(errno, *poller_, listener_.get(), "admin");
      return;
    }
    if (clients_.size() >= kMaxClients) {
      // Closed at once: left in the queue, it would keep the listener readable and the loop busy.
      if (turned_away_++ % 1000 == 0) {
        spdlog::warn("admin: {} connections open; turning new ones away ({} so far)", kMaxClients,
                     turned_away_);
      }
      continue;
    }
    const ClientId id = next_id_++;
    auto client = std::make_unique<Client>();
    client->fd = std::move(fd);
    client->deadline = Clock::now() + kClientTimeout;
    if (!poller_->watch(client->fd.get(), Source::kAdminClient, id, EPOLLIN | EPOLLRDHUP)) continue;
    clients_.emplace(id, std::move(client));
  }
}

void AdminServer::on_client_event(ClientId id, uint32_t events) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  Client& client = *it->second;
  if (events & EPOLLERR) return drop(id);
  if (events & EPOLLOUT) {
    flush(id, client);
    if (!clients_.count(id)) return;
  }
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) read_request(id, client);
}

void AdminServer::read_request(ClientId id, Client& client) {
  char buffer[4096];
  // A bounded number of reads per wake-up: a client that floods us cannot hold the loop (the
  // poller is level-triggered and comes back for the rest).
  for (int reads = 0; reads < 64 && !client.peer_closed; reads++) {
    ssize_t n = recv(client.fd.get(), buffer, sizeof(buffer), 0);
    if (n > 0) {
      if (client.answered) continue;  // one request per connection: the rest is discarded
      parse(id, client, std::string_view(buffer, static_cast<size_t>(n)));
      if (!clients_.count(id)) return;  // answered and closed
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n < 0 || !client.answered || client.out_sent == client.out.size()) {
      // Reset; or the client stopped sending before its request was whole; or it closed after
      // reading the whole answer (the usual end).
      return drop(id);
    }
    // Closed its side with the answer still being sent: finish sending. Not reading any more
    // (a half-closed socket stays readable, which would wake the loop for nothing).
    client.peer_closed = true;
    (void)poller_->modify(client.fd.get(), Source::kAdminClient, id, EPOLLOUT);
  }
}

void AdminServer::parse(ClientId id, Client& client, std::string_view bytes) {
  client.received.append(bytes);  // bounded: the parser refuses more than kLimits, and answers
  RequestParser::Step step = client.parser.parse(bytes);
  if (step.status == RequestParser::Status::kRequest) {
    const Request& request = client.parser.request();
    answer(id, client, answer_admin_request(request, endpoints_), request.method() == "HEAD");
  } else if (step.status == RequestParser::Status::kError) {
    spdlog::debug("admin: bad request: {} ({})", client.parser.error_status(), client.parser.error_reason());
    answer(id, client, admin_error_response(client.parser.error_status()), false);
  }
}

std::vector<AdminServer::Held> AdminServer::held_clients() const {
  std::vector<Held> held;
  for (const auto& [id, client] : clients_) {
    held.push_back({.fd = client->fd.get(),
                    .received = client->answered ? std::string() : client->received,
                    .unsent = client->answered ? client->out.substr(client->out_sent) : std::string(),
                    .answered = client->answered,
                    .peer_closed = client->peer_closed});
  }
  return held;
}

Result<void> AdminServer::adopt_client(UniqueFd fd, const Held& held) {
  if (clients_.size() >= kMaxClients) return Error::from_errno(EMFILE, "admin: too many connections to take over");
  const ClientId id = next_id_++;
  auto client = std::make_unique<Client>();
  client->fd = std::move(fd);  // non-blocking already: that is the socket's, shared with its first lbd
  client->deadline = Clock::now() + kClientTimeout;
  Client& c = *client;
  clients_.emplace(id, std::move(client));
  if (auto watched = poller_->watch(c.fd.get(), Source::kAdminClient, id, EPOLLIN | EPOLLRDHUP); !watched) {
    clients_.erase(id);
    return watched.error();
  }
  if (held.answered) {
    // The rest of its answer (or nothing: then the FIN again and the wait for its close).
    c.answered = true;
    c.peer_closed = held.peer_closed;
    c.out = held.unsent;
    flush(id, c);
  } else if (!held.received.empty()) {
    parse(id, c, held.received);  // a request the predecessor had only part of
  }
  return {};
}

void AdminServer::answer(ClientId id, Client& client, const AdminResponse& response, bool head) {
  client.answered = true;
  client.received.clear();
  client.out = serialize_admin_response(response, head);
  client.out_sent = 0;
  flush(id, client);
}

void AdminServer::flush(ClientId id, Client& client) {
  while (client.out_sent < client.out.size()) {
    ssize_t n = send(client.fd.get(), client.out.data() + client.out_sent,
                     client.out.size() - client.out_sent, MSG_NOSIGNAL);
    if (n > 0) {
      client.out_sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      const uint32_t events = client.peer_closed ? EPOLLOUT : EPOLLIN | EPOLLRDHUP | EPOLLOUT;
      (void)poller_->modify(client.fd.get(), Source::kAdminClient, id, events);
      return;
    }
    return drop(id);
  }
  if (client.peer_closed) return drop(id);
  // All sent: say we are done (FIN) and wait briefly for the client to close first.
  shutdown(client.fd.get(), SHUT_WR);
  client.deadline = std::min(client.deadline, Clock::now() + kLinger);
  (void)poller_->modify(client.fd.get(), Source::kAdminClient, id, EPOLLIN | EPOLLRDHUP);
}

void AdminServer::expire(Clock::time_point now) {
  std::vector<ClientId> late;
  for (const auto& [id, client] : clients_) {
    if (client->deadline <= now) late.push_back(id);
  }
  for (ClientId id : late) drop(id);
}

std::optional<AdminServer::Clock::time_point> AdminServer::next_deadline() const {
  std::optional<Clock::time_point> next;
  for (const auto& [id, client] : clients_) {
    if (!next || client->deadline < *next) next = client->deadline;
  }
  return next;
}

void AdminServer::drop(ClientId id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  poller_->unwatch(it->second->fd.get());
  clients_.erase(it);
}

}  // namespace lbd
