#include "supervisor/notify.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>

#include "common/unique_fd.h"

namespace lbd {

void notify_service_manager(const char* message) {
  const char* path = getenv("NOTIFY_SOCKET");
  if (!path || (path[0] != '/' && path[0] != '@')) return;
  UniqueFd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  size_t len = std::min(strlen(path), sizeof(addr.sun_path) - 1);
  memcpy(addr.sun_path, path, len);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  sendto(fd.get(), message, strlen(message), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr),
         static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len));
}

Result<UniqueFd> notify_listener(const std::string& name) {
  UniqueFd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return Error::from_errno("notify socket");
  int one = 1;
  if (setsockopt(fd.get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) != 0) {
    return Error::from_errno("notify socket SO_PASSCRED");
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (name.size() + 1 > sizeof(addr.sun_path)) return Error::from_errno(ENAMETOOLONG, "notify socket");
  memcpy(addr.sun_path + 1, name.data(), name.size());  // sun_path[0] = '\0': abstract
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr),
           static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size())) != 0) {
    return Error::from_errno("bind notify socket @" + name);
  }
  return fd;
}

Result<NotifyDirectory> NotifyDirectory::create(const std::string& base, const std::string& prefix, int group) {
  std::string templ = base + "/" + prefix + "-XXXXXX";
  if (!mkdtemp(templ.data())) return Error::from_errno("mkdtemp " + templ);
  NotifyDirectory dir(templ, group);  // from here, removed again on failure
  if (group >= 0 && chown(templ.c_str(), static_cast<uid_t>(-1), static_cast<gid_t>(group)) != 0) {
    return Error::from_errno("chown " + templ);
  }
  if (chmod(templ.c_str(), group >= 0 ? 0710 : 0700) != 0) return Error::from_errno("chmod " + templ);
  return dir;
}

Result<NotifyDirectory> NotifyDirectory::adopt(const std::string& path, const std::string& prefix, int group) {
  // Only a directory of the shape create() makes, owned by this user and private to it: the
  // record names it, but what is removed at exit must be ours.
  const std::string name = path.substr(path.find_last_of('/') + 1);
  struct stat st {};
  if (path.empty() || path[0] != '/' || !name.starts_with(prefix + "-") || lstat(path.c_str(), &st) != 0 ||
      !S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 0007) != 0) {
    return Error::from_errno(EINVAL, "not a notify directory of this lbd: " + path);
  }
  return NotifyDirectory(path, group);
}

NotifyDirectory::~NotifyDirectory() {
  if (!path_.empty()) rmdir(path_.c_str());  // fails, harmlessly, while a socket is still in it
}

Result<NotifyDirectory::Socket> NotifyDirectory::open_socket() const {
  uint64_t random[2] = {};
  if (getrandom(random, sizeof(random), 0) != static_cast<ssize_t>(sizeof(random))) {
    return Error::from_errno("getrandom");
  }
  char name[40];
  snprintf(name, sizeof(name), "%016llx%016llx", static_cast<unsigned long long>(random[0]),
           static_cast<unsigned long long>(random[1]));
  Socket socket{UniqueFd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)), path_ + "/" + name};
  if (!socket.fd) return Error::from_errno("notify socket");
  int one = 1;
  if (setsockopt(socket.fd.get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) != 0) {
    return Error::from_errno("notify socket SO_PASSCRED");
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket.path.size() + 1 > sizeof(addr.sun_path)) {
    return Error::from_errno(ENAMETOOLONG, "notify socket " + socket.path);
  }
  memcpy(addr.sun_path, socket.path.data(), socket.path.size());
  if (bind(socket.fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Error::from_errno("bind notify socket " + socket.path);
  }
  // Sending to a Unix socket needs write permission on it.
  const bool shared = group_ >= 0;
  if ((shared && chown(socket.path.c_str(), static_cast<uid_t>(-1), static_cast<gid_t>(group_)) != 0) ||
      chmod(socket.path.c_str(), shared ? 0620 : 0600) != 0) {
    const Error error = Error::from_errno("chmod notify socket " + socket.path);
    unlink(socket.path.c_str());
    return error;
  }
  return socket;
}

}  // namespace lbd
