#include "lbctl/app_socket.h"

#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <filesystem>

#include "common/unique_fd.h"

namespace lbd::ctl {

namespace {

bool is_socket(const std::string& path) {
  struct stat st{};
  return stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

// A socket file someone answers on: a crashed lbd leaves its file behind.
bool is_live_socket(const std::string& path) {
  if (!is_socket(path) || path.size() >= sizeof(sockaddr_un::sun_path)) return false;
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.c_str(), path.size());
  return fd && connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
}

Error plain(const std::string& message) { return Error(std::error_code(), message); }

}  // namespace

Result<std::string> control_socket_for(const std::optional<std::string>& explicit_path, const std::string& app,
                                       const std::string& dir) {
  if (explicit_path && !explicit_path->empty()) {
    // Both: they must agree, or a verb could reach the wrong app (LBD_CONTROL left in a shell).
    if (!app.empty() && std::filesystem::path(*explicit_path).stem() != app) {
      return plain("the app '" + app + "' is not the one at " + *explicit_path +
                   " (-s or $LBD_CONTROL); name one or the other");
    }
    return *explicit_path;
  }
  if (!app.empty()) {
    const std::string path = dir + "/" + app + ".sock";
    if (!is_socket(path)) return plain("no app '" + app + "' is running (no control socket at " + path + ")");
    return path;
  }
  const std::string plain_lbd = dir + "/lbd.sock";
  if (is_live_socket(plain_lbd)) return plain_lbd;
  std::vector<std::string> apps;
  std::error_code ignored;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ignored)) {
    const auto& path = entry.path();
    if (path.extension() == ".sock" && is_live_socket(path.string())) apps.push_back(path.stem().string());
  }
  std::sort(apps.begin(), apps.end());
  if (apps.size() == 1) return dir + "/" + apps[0] + ".sock";
  if (apps.empty()) return plain_lbd;  // the usual "lbd is not running" from the client
  std::string names;
  for (const auto& name : apps) names += (names.empty() ? "" : ", ") + name;
  return plain("several apps run here (" + names + "): name one, e.g. lbctl status " + apps[0]);
}

std::optional<AppAndValue> split_app_words(const std::vector<std::string>& words, bool wants_value) {
  if (wants_value) {
    if (words.size() == 1) return AppAndValue{"", words[0]};
    if (words.size() == 2) return AppAndValue{words[0], words[1]};
    return std::nullopt;
  }
  if (words.empty()) return AppAndValue{};
  if (words.size() == 1) return AppAndValue{words[0], ""};
  return std::nullopt;
}

}  // namespace lbd::ctl
