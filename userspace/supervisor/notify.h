// systemd's notify protocol (Type=notify): "READY=1" once every worker serves, "STOPPING=1" on
// stop. No "RELOADING=1": the unit reloads with ExecReload=lbctl reload, which returns when the
// reload is done (Type=notify-reload, which would need it, is newer than Debian 12's systemd).
// A no-op when NOTIFY_SOCKET is not set.
#pragma once

#include <string>
#include <utility>

#include "common/result.h"
#include "common/unique_fd.h"

namespace lbd {

void notify_service_manager(const char* message);

// The other end, for lbd's own children (exec-mode programs, `lbd start`'s app supervisors): a
// non-blocking datagram socket bound to @name in the abstract namespace (no file to clean up),
// with SO_PASSCRED so each message says which process sent it. Their NOTIFY_SOCKET is "@name".
Result<UniqueFd> notify_listener(const std::string& name);

// Where exec-mode programs' notify sockets live: a directory of this supervisor's own,
// <base>/<prefix>-XXXXXX, made by mkdtemp, root's and `group`'s only (0710: the group may reach a
// socket whose name it knows, and cannot list them). Each socket has a random name and is bound
// 0620 in `group`: another local user can neither send to one nor bind one first, and cannot
// guess a program's socket. Removed (if empty) when the owner goes.
// The name a directory of an app's NOTIFY_SOCKETs starts with: "<app>.notify-XXXXXX".
inline std::string notify_directory_prefix(const std::string& app) { return app + ".notify"; }

class NotifyDirectory {
 public:
  static Result<NotifyDirectory> create(const std::string& base, const std::string& prefix, int group);
  // The directory a predecessor created (named in its state record), taken over after an upgrade
  // or its death: its programs' NOTIFY_SOCKETs are in it, new ones go there too, and it is
  // removed when this lbd stops, as if this lbd had created it.
  static Result<NotifyDirectory> adopt(const std::string& path, const std::string& prefix, int group);
  NotifyDirectory(NotifyDirectory&& other) noexcept : path_(std::exchange(other.path_, {})), group_(other.group_) {}
  NotifyDirectory& operator=(NotifyDirectory&& other) noexcept {
    std::swap(path_, other.path_);
    group_ = other.group_;
    return *this;
  }
  ~NotifyDirectory();

  struct Socket {
    UniqueFd fd;       // non-blocking, SO_PASSCRED
    std::string path;  // the program's NOTIFY_SOCKET
  };
  Result<Socket> open_socket() const;
  const std::string& path() const { return path_; }
  // Another lbd owns it now (an upgrade handed it over, or a successor that failed gives it
  // back): kept when this one goes.
  void hand_over() { path_.clear(); }

 private:
  NotifyDirectory(std::string path, int group) : path_(std::move(path)), group_(group) {}
  std::string path_;
  int group_ = -1;
};

}  // namespace lbd
