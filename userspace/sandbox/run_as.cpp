#include "sandbox/run_as.h"

#include <grp.h>
#include <pwd.h>

#include <charconv>

namespace lbd {

namespace {

bool all_digits(std::string_view text) {
  return !text.empty() && text.find_first_not_of("0123456789") == std::string_view::npos;
}

template <class Id>
bool parse_id(std::string_view text, Id& id) {
  unsigned long value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value >= 0xffffffffUL) return false;
  id = static_cast<Id>(value);
  return true;
}

// getpwnam_r / getgrnam_r with a buffer that grows (a group with many members needs more).
template <class Entry, class Lookup>
bool look_up(Lookup lookup, Entry& entry, std::vector<char>& buffer) {
  buffer.resize(4096);
  while (true) {
    Entry* found = nullptr;
    const int err = lookup(&entry, buffer.data(), buffer.size(), &found);
    if (err == ERANGE && buffer.size() < (1u << 20)) {
      buffer.resize(buffer.size() * 2);
      continue;
    }
    return err == 0 && found != nullptr;
  }
}

}  // namespace

std::string RunAs::describe() const {
  return user + ":" + group + " (uid " + std::to_string(uid) + ", gid " + std::to_string(gid) + ")";
}

Result<RunAs> resolve_user(std::string_view text) {
  const size_t colon = text.find(':');
  const std::string user_text(text.substr(0, colon));
  const std::string group_text(colon == std::string_view::npos ? std::string_view() : text.substr(colon + 1));
  if (user_text.empty() || (colon != std::string_view::npos && group_text.empty())) {
    return Error::invalid("expected USER or USER:GROUP, got '" + std::string(text) + "'");
  }

  RunAs as;
  passwd pw{};
  std::vector<char> pw_buffer;
  bool known_user = false;
  if (all_digits(user_text)) {
    if (!parse_id(user_text, as.uid)) return Error::invalid("'" + user_text + "' is not a user id");
    known_user = look_up([&](passwd* e, char* b, size_t n, passwd** r) { return getpwuid_r(as.uid, e, b, n, r); },
                         pw, pw_buffer);
    if (!known_user && group_text.empty()) {
      return Error::invalid("uid " + user_text + " has no entry in the user database: name a group too (" +
                            user_text + ":GROUP)");
    }
  } else {
    known_user = look_up([&](passwd* e, char* b, size_t n, passwd** r) { return getpwnam_r(user_text.c_str(), e, b, n, r); },
                         pw, pw_buffer);
    if (!known_user) return Error::invalid("no user '" + user_text + "'");
    as.uid = pw.pw_uid;
  }
  as.user = known_user ? pw.pw_name : user_text;
  as.gid = known_user ? pw.pw_gid : 0;

  if (!group_text.empty()) {
    group gr{};
    std::vector<char> gr_buffer;
    if (all_digits(group_text)) {
      if (!parse_id(group_text, as.gid)) return Error::invalid("'" + group_text + "' is not a group id");
      as.group = look_up([&](group* e, char* b, size_t n, group** r) { return getgrgid_r(as.gid, e, b, n, r); },
                         gr, gr_buffer)
                     ? gr.gr_name
                     : group_text;
    } else {
      if (!look_up([&](group* e, char* b, size_t n, group** r) { return getgrnam_r(group_text.c_str(), e, b, n, r); },
                   gr, gr_buffer)) {
        return Error::invalid("no group '" + group_text + "'");
      }
      as.gid = gr.gr_gid;
      as.group = gr.gr_name;
    }
  } else {
    group gr{};
    std::vector<char> gr_buffer;
    as.group = look_up([&](group* e, char* b, size_t n, group** r) { return getgrgid_r(as.gid, e, b, n, r); },
                       gr, gr_buffer)
                   ? gr.gr_name
                   : std::to_string(as.gid);
  }

  // The user's supplementary groups, as a login (initgroups) would have them; none for a bare uid.
  if (known_user) {
    int count = 32;
    std::vector<gid_t> groups(static_cast<size_t>(count));
    while (getgrouplist(pw.pw_name, as.gid, groups.data(), &count) < 0) groups.resize(static_cast<size_t>(count));
    groups.resize(static_cast<size_t>(count));
    as.groups = std::move(groups);
  } else {
    as.groups = {as.gid};
  }
  return as;
}

Result<RunAs> default_worker_user() {
  auto as = resolve_user("nobody:nogroup");
  if (as) return as;
  return resolve_user("nobody");  // a system without Debian's nogroup
}

}  // namespace lbd
