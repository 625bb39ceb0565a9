// Taking a child's privileges away for good, before it reads a byte from a client
// (docs/ARCHITECTURE.md, "Privileges").
//
// Every worker and every exec-mode program is confined; only the supervisor keeps what lbd needs
// (loading BPF, binding low ports, taking over its children). Confining means, in this order:
//   1. setgroups, setresgid to the run-as user's groups
//   2. drop the whole capability bounding set (needs CAP_SETPCAP, so before the uid changes) and
//      the ambient set
//   3. setresuid (from root, this also clears the permitted and effective sets)
//   4. capset: effective, permitted and inheritable all empty
//   5. PR_SET_NO_NEW_PRIVS: no exec can give anything back (setuid files, file capabilities)
//   6. the steering guard, a seccomp filter (below)
// A child that cannot complete a step exits instead of running with more than it should.
#pragma once

#include <linux/filter.h>

#include <vector>

#include "common/result.h"
#include "sandbox/run_as.h"

namespace lbd {

// A seccomp filter as the kernel takes it, built once (with libseccomp) and applied with one
// system call, so that applying it in a forked child allocates nothing.
//
// The steering guard fails with EPERM exactly the calls that would change how the kernel picks
// a worker for the whole group: setsockopt(SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF /
// SO_ATTACH_REUSEPORT_EBPF / SO_DETACH_REUSEPORT_BPF) — any socket of a SO_REUSEPORT group
// can replace or detach the group's program. And io_uring_setup: since Linux 6.7 a ring can
// issue setsockopt itself (IORING_OP_URING_CMD, SOCKET_URING_OP_SETSOCKOPT), out of seccomp's
// sight. lbd's worker creates its ring before it is confined; an exec-mode program gets EPERM
// and runs without io_uring (libuv, for one, falls back to epoll), as under Docker's default
// profile. Everything else is allowed.
class SeccompProgram {
 public:
  static Result<SeccompProgram> steering_guard();
  const std::vector<sock_filter>& instructions() const { return instructions_; }

 private:
  std::vector<sock_filter> instructions_;
};

// Which step failed, for the child's one line ("lbd: cannot confine: setresuid: EPERM").
struct ConfineFailure {
  const char* step = nullptr;  // nullptr: confined
  int err = 0;
  explicit operator bool() const { return step != nullptr; }
};

// Async-signal-safe (raw system calls, no allocation): safe between fork and exec of a
// multi-threaded supervisor. `as` null: keep the uid and gids (lbd not started as root, or a
// program allowed to run as root), but drop the capabilities all the same unless `keep_caps`.
// The filter may be null (no seccomp).
ConfineFailure confine(const RunAs* as, bool keep_caps, const SeccompProgram* filter);

}  // namespace lbd
