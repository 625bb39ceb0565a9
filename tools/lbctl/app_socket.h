// Which lbd lbctl talks to. One machine may run several: plain `lbd` (the app "lbd"), each
// `lbd run --name NAME`, and each app of `lbd start FILE`, every one with its control socket
// /run/lbd/NAME.sock. Verbs take the app's name first (`lbctl reload web`, `lbctl drain web 1`),
// like pm2's; without one lbctl uses /run/lbd/lbd.sock, or the only app running.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace lbd::ctl {

inline constexpr const char* kControlDir = "/run/lbd";

// The socket for `app` (empty: not named). `explicit_path` (-s, or $LBD_CONTROL) wins over
// everything. Errors are lbctl's one-line reasons: an app that is not running, several apps and
// none named.
Result<std::string> control_socket_for(const std::optional<std::string>& explicit_path, const std::string& app,
                                       const std::string& dir = kControlDir);

// A verb's positional words, [APP] VALUE or [APP]: splits them. `wants_value`: the verb takes a
// value (a slot, a count, a policy). Returns false for a wrong count of words.
struct AppAndValue {
  std::string app;    // empty: not named
  std::string value;  // empty: none
};
std::optional<AppAndValue> split_app_words(const std::vector<std::string>& words, bool wants_value);

}  // namespace lbd::ctl
