#include "supervisor/control_server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/log.h"

namespace lbd {

namespace {

constexpr size_t kMaxClients = 64;
constexpr size_t kMaxPendingOutput = 4 * 1024 * 1024;  // a client that never reads is dropped
constexpr auto kSilentClientTimeout = std::chrono::seconds(10);

Result<sockaddr_un> unix_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return Error::from_errno(ENAMETOOLONG, "control socket path '" + path + "'");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// True if something accepts connections at `path` (another lbd). Non-blocking: a listener whose
// queue is full answers EAGAIN at once, and is someone too.
bool someone_listens(const sockaddr_un& addr) {
  UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!probe) return false;
  return connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0 || errno == EAGAIN;
}

}  // namespace

Result<ControlServer> ControlServer::open(const std::string& path, Poller& poller, RequestHandler handler) {
  auto addr = unix_address(path);
  if (!addr) return addr.error();
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  if (someone_listens(*addr)) {
    return Error::from_errno(EADDRINUSE, "another lbd is running (control socket " + path + ")");
  }
  unlink(path.c_str());  // a stale file from a previous run

  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return Error::from_errno("control socket");
  // Created 0600 from the start: no window in which others could connect.
  mode_t old_mask = umask(0177);
  int bound = bind(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr));
  umask(old_mask);
  if (bound != 0) return Error::from_errno("cannot create the control socket " + path);
  if (listen(fd.get(), 64) != 0) return Error::from_errno("listen on control socket");
  LBD_TRY(poller.watch(fd.get(), Source::kControl, 0));
  return ControlServer(path, std::move(fd), poller, std::move(handler));
}

Result<ControlServer> ControlServer::adopt(const std::string& path, UniqueFd listener, Poller& poller,
                                          RequestHandler handler) {
  LBD_TRY(poller.watch(listener.get(), Source::kControl, 0));
  return ControlServer(path, std::move(listener), poller, std::move(handler));
}

ControlServer::ControlServer(std::string path, UniqueFd fd, Poller& poller, RequestHandler handler)
    : path_(std::move(path)), listener_(std::move(fd)), poller_(&poller), handler_(std::move(handler)) {}

ControlServer::ControlServer(ControlServer&& other) noexcept
    : path_(std::move(other.path_)),
      listener_(std::move(other.listener_)),
      poller_(other.poller_),
      handler_(std::move(other.handler_)),
      clients_(std::move(other.clients_)),
      next_id_(other.next_id_) {
  other.path_.clear();
}

ControlServer::~ControlServer() {
  if (!path_.empty() && listener_) unlink(path_.c_str());
}

void ControlServer::on_listener_ready() {
  while (true) {
    UniqueFd fd(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd) {  // EAGAIN, or a transient error: nothing to do until the next event
      accept_pause_.pause_if_out_of_fds(errno, *poller_, listener_.get(), "control");
      return;
    }
    ucred peer{};
    socklen_t len = sizeof(peer);
    const bool known = getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &peer, &len) == 0;
    const ClientId id = next_id_++;
    Client& client = clients_[id];
    client.fd = std::move(fd);
    client.connected_at = std::chrono::steady_clock::now();
    if (!poller_->watch(client.fd.get(), Source::kControlClient, id, EPOLLIN | EPOLLRDHUP)) {
      drop(id);
      continue;
    }
    if (!known || (peer.uid != 0 && peer.uid != geteuid())) {
      spdlog::warn("control: refused a client with uid {} (only root or uid {} may control lbd)",
                   known ? std::to_string(peer.uid) : "unknown", geteuid());
      finish_error(id, "permission denied: only root or uid " + std::to_string(geteuid()) +
                           " may control this lbd");
      continue;
    }
    if (clients_.size() > kMaxClients) finish_error(id, "too many control connections; try again");
  }
}

std::vector<ControlServer::Waiting> ControlServer::waiting_clients() const {
  std::vector<Waiting> waiting;
  for (const auto& [id, client] : clients_) {
    // An asked client's request is being served by this lbd (an upgrade refuses while an
    // operation runs, so that is the upgrade's own, answered at the handover); a closing one has
    // had its answer.
    if (!client.asked && !client.closing) waiting.push_back({client.fd.get(), client.in});
  }
  return waiting;
}

Result<void> ControlServer::adopt_client(UniqueFd fd, std::string received) {
  const ClientId id = next_id_++;
  Client& client = clients_[id];
  client.fd = std::move(fd);  // non-blocking already: that is the socket's, shared with its first lbd
  client.in = std::move(received);
  client.connected_at = std::chrono::steady_clock::now();
  if (auto watched = poller_->watch(client.fd.get(), Source::kControlClient, id, EPOLLIN | EPOLLRDHUP); !watched) {
    clients_.erase(id);
    return watched.error();
  }
  return {};
}

void ControlServer::on_client_event(ClientId id, uint32_t events) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  Client& client = it->second;
  if (events & EPOLLOUT) flush(id);
  if (!clients_.count(id)) return;
  if (!(events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP | EPOLLERR))) return;

  char buffer[4096];
  while (true) {
    ssize_t n = recv(client.fd.get(), buffer, sizeof(buffer), 0);
    if (n > 0) {
      if (client.asked || client.closing) continue;  // one request per connection; rest ignored
      client.in.append(buffer, static_cast<size_t>(n));
      size_t newline = client.in.find('\n');
      if (newline == std::string::npos) {
        if (client.in.size() > control::kMaxRequestBytes) {
          finish_error(id, "request too long (limit " + std::to_string(control::kMaxRequestBytes) + " bytes)");
          if (!clients_.count(id)) return;  // answered and closed
        }
        continue;
      }
      std::string line = client.in.substr(0, newline);
      client.in.clear();
      auto request = control::parse_request(line);
      if (!request) {
        spdlog::debug("control: bad request: {}", request.error().message());
        finish_error(id, request.error().message());
        if (!clients_.count(id)) return;  // answered and closed
        continue;
      }
      client.asked = true;
      handler_(id, *request);
      if (!clients_.count(id)) return;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
    // The peer closed (or failed). An operation it started goes on; its answer is dropped.
    drop(id);
    return;
  }
}

void ControlServer::expire_silent_clients() {
  const auto now = std::chrono::steady_clock::now();
  std::vector<ClientId> silent;
  for (const auto& [id, client] : clients_) {
    if (!client.asked && !client.closing && now - client.connected_at > kSilentClientTimeout) {
      silent.push_back(id);
    }
  }
  for (ClientId id : silent) finish_error(id, "no request within 10 s");
}

void ControlServer::progress(ClientId id, const std::string& message) {
  write(id, control::progress_line(message), false);
}

void ControlServer::finish_ok(ClientId id, const nlohmann::json& result) {
  write(id, control::ok_line(result), true);
}

void ControlServer::finish_error(ClientId id, const std::string& message) {
  write(id, control::error_line(message), true);
}

void ControlServer::write(ClientId id, const std::string& line, bool final) {
  auto it = clients_.find(id);
  if (it == clients_.end() || it->second.closing) return;
  it->second.out += line;
  if (final) it->second.closing = true;
  if (it->second.out.size() > kMaxPendingOutput) {
    drop(id);
    return;
  }
  flush(id);
}

void ControlServer::flush(ClientId id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  Client& client = it->second;
  while (!client.out.empty()) {
    ssize_t n = send(client.fd.get(), client.out.data(), client.out.size(), MSG_NOSIGNAL);
    if (n > 0) {
      client.out.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      (void)poller_->modify(client.fd.get(), Source::kControlClient, id, EPOLLIN | EPOLLRDHUP | EPOLLOUT);
      return;
    }
    drop(id);
    return;
  }
  if (client.closing) {
    drop(id);
    return;
  }
  (void)poller_->modify(client.fd.get(), Source::kControlClient, id, EPOLLIN | EPOLLRDHUP);
}

void ControlServer::drop(ClientId id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  poller_->unwatch(it->second.fd.get());
  clients_.erase(it);
}

}  // namespace lbd
