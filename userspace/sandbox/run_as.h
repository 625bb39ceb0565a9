// Who a child of lbd runs as (docs/ARCHITECTURE.md, "Privileges"): the user and groups a worker
// or an exec-mode program switches to before it touches a client's bytes.
//
// Resolved once, in the supervisor, from `--user NAME[:GROUP]` (names or numbers); the numbers
// travel to the child, which switches without looking anything up (no NSS after fork).
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace lbd {

struct RunAs {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups (the user's, as initgroups would set)
  std::string user;           // names, for the log: "nobody"
  std::string group;          // "nogroup"

  // "nobody:nogroup (uid 65534, gid 65534)"
  std::string describe() const;
};

// `NAME[:GROUP]`: a user name or number, and optionally a group name or number (default: the
// user's primary group). An unknown name is an error naming it.
Result<RunAs> resolve_user(std::string_view text);

// What lbd's own workers run as when lbd is root and no --user is given: nobody, in nogroup
// (nginx's default; Debian's nogroup, else nobody's own group).
Result<RunAs> default_worker_user();

}  // namespace lbd
