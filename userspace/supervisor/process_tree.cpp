#include "supervisor/process_tree.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "common/unique_fd.h"

namespace lbd {
namespace {

// ---- /proc --------------------------------------------------------------------------------------

// A process vanished between being listed and being read: not an error, just a smaller snapshot.
bool gone(int err) { return err == ENOENT || err == ESRCH; }

struct DirCloser {
  void operator()(DIR* dir) const { ::closedir(dir); }
};
using UniqueDir = std::unique_ptr<DIR, DirCloser>;

// Opens a directory relative to `at` (a directory fd, or AT_FDCWD) for reading; null with errno
// set on failure.
UniqueDir open_dir(int at, const char* path) {
  UniqueFd fd(::openat(at, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return nullptr;
  DIR* dir = ::fdopendir(fd.get());
  if (dir == nullptr) return nullptr;
  fd.release();  // the DIR owns it now
  return UniqueDir(dir);
}

// Reads a small /proc file in one read() (seq_file answers it whole). Returns the byte count, or
// -1 with errno set.
ssize_t read_small(int at, const char* path, char* buffer, size_t size) {
  UniqueFd fd(::openat(at, path, O_RDONLY | O_CLOEXEC));
  if (!fd) return -1;
  ssize_t n;
  do n = ::read(fd.get(), buffer, size); while (n < 0 && errno == EINTR);
  return n;
}

// A pid from a /proc entry name; 0 if the name is not a number (self, net, sys, ...).
pid_t pid_of(const char* name) {
  pid_t pid = 0;
  const char* end = name + std::strlen(name);
  auto [ptr, ec] = std::from_chars(name, end, pid);
  return (ec == std::errc() && ptr == end) ? pid : 0;
}

struct Parent {
  pid_t ppid;
  pid_t pid;
  bool operator<(const Parent& other) const {
    return ppid != other.ppid ? ppid < other.ppid : pid < other.pid;
  }
};

// The parent of `pid` from /proc/PID/stat (`proc`: an open /proc), or -1 if it is gone.
pid_t parent_of(int proc, pid_t pid) {
  char path[32];
  char stat[512];
  std::snprintf(path, sizeof path, "%d/stat", pid);
  const ssize_t n = read_small(proc, path, stat, sizeof stat);
  if (n <= 0) return -1;
  // "PID (COMM) S PPID ...": COMM may hold spaces and parentheses, so parse after the last ')'.
  // A line longer than the buffer is cut in the numeric fields, after COMM and PPID.
  const std::string_view line(stat, static_cast<size_t>(n));
  const size_t paren = line.rfind(')');
  if (paren == std::string_view::npos || paren + 4 >= line.size()) return -1;
  const char* first = line.data() + paren + 4;  // past ") S "
  pid_t ppid = 0;
  if (std::from_chars(first, line.data() + line.size(), ppid).ec != std::errc()) return -1;
  return ppid;
}

// Every process on the machine with its parent, sorted by parent.
Result<std::vector<Parent>> read_parents(int proc) {
  UniqueDir dir = open_dir(proc, ".");
  if (!dir) return Error::from_errno("open /proc");
  std::vector<Parent> parents;
  while (true) {
    errno = 0;
    const dirent* entry = ::readdir(dir.get());
    if (entry == nullptr) {
      if (errno != 0) return Error::from_errno("read /proc");
      break;
    }
    const pid_t pid = pid_of(entry->d_name);
    if (pid <= 0) continue;
    const pid_t ppid = parent_of(proc, pid);
    if (ppid < 0) continue;  // gone (ENOENT, ESRCH, or an empty read): skip it
    parents.push_back({ppid, pid});
  }
  std::sort(parents.begin(), parents.end());
  return parents;
}

// The descendants of `root` (root first, breadth-first), or nothing if root is not in `parents`.
std::vector<pid_t> tree_of(pid_t root, const std::vector<Parent>& parents) {
  // parents is sorted by ppid, then pid; a root that exists is somebody's child (init's at
  // least), so look for it among the children of any parent.
  const bool exists = std::any_of(parents.begin(), parents.end(),
                                  [root](const Parent& p) { return p.pid == root; });
  if (!exists) return {};
  std::vector<pid_t> tree{root};
  for (size_t next = 0; next < tree.size(); next++) {
    const pid_t parent = tree[next];
    auto it = std::lower_bound(parents.begin(), parents.end(), Parent{parent, 0});
    for (; it != parents.end() && it->ppid == parent; ++it) tree.push_back(it->pid);
  }
  return tree;
}

// ---- sock_diag ----------------------------------------------------------------------------------

// The states of a connection a process still holds. Not SYN_RECV (request sockets: not accepted,
// part of the queue), not LISTEN, TIME_WAIT or CLOSE (nothing a worker serves). The other states
// can also be orphans the program has closed, which have no inode and are skipped.
constexpr uint32_t kHeldStates = (1u << TCP_ESTABLISHED) | (1u << TCP_FIN_WAIT1) |
                                 (1u << TCP_FIN_WAIT2) | (1u << TCP_CLOSE_WAIT) |
                                 (1u << TCP_LAST_ACK) | (1u << TCP_CLOSING);

// A filter the kernel runs on every socket before copying it out: "local port is one of P".
// inet_diag bytecode is a list of forward conditional jumps; a socket is accepted if its run ends
// exactly at the end of the program and rejected if it jumps past it (by 4: the only overshoot
// the kernel's audit allows). `yes` is 8 bits and must chain through every op (the audit walks
// the yes path), so each port is a 12-byte block:
//   S_EQ port  yes: next op (the JMP)            no: the next block (after the last: reject)
//   JMP        never "yes"                       no: the end (accept)
std::vector<uint8_t> port_filter(const std::vector<uint16_t>& ports) {
  constexpr unsigned kOp = sizeof(inet_diag_bc_op);
  constexpr unsigned kBlock = 3 * kOp;
  const auto op = [](unsigned code, unsigned yes, size_t no) {
    return inet_diag_bc_op{static_cast<unsigned char>(code), static_cast<unsigned char>(yes),
                           static_cast<unsigned short>(no)};
  };
  std::vector<inet_diag_bc_op> ops;
  ops.reserve(ports.size() * 3);
  for (size_t i = 0; i < ports.size(); i++) {
    const bool last = i + 1 == ports.size();
    const size_t jmp_to_end = (ports.size() - i) * kBlock - 2 * kOp;
    ops.push_back(op(INET_DIAG_BC_S_EQ, 2 * kOp, last ? kBlock + 4 : kBlock));
    ops.push_back(op(0, 0, ports[i]));  // the S_EQ's argument: the port, host order
    ops.push_back(op(INET_DIAG_BC_JMP, kOp, jmp_to_end));
  }
  std::vector<uint8_t> bytes(ops.size() * kOp);
  std::memcpy(bytes.data(), ops.data(), bytes.size());
  return bytes;
}

// Which request walks the socket table. The kernel walks the whole TCP established hash for every
// dump (262,144 buckets here, whatever it holds: 1.4-2 ms), and one table holds both families:
//   kBothFamilies  TCPDIAG_GETSOCK, inet_diag's original request: one walk, both families (its
//                  dumps ignore the family). Older, still maintained; measured here, half the
//                  cost of the two walks below.
//   kPerFamily     SOCK_DIAG_BY_FAMILY, once for AF_INET and once for AF_INET6: two walks. Used
//                  if a kernel refuses the first.
enum class DumpKind { kBothFamilies, kPerFamily };

// Sends one dump request for held TCP sockets on the filtered ports and appends their inodes.
Result<void> dump_inodes(int sock, DumpKind kind, uint8_t family, uint32_t seq,
                         const std::vector<uint8_t>& filter, std::vector<uint32_t>& inodes) {
  struct Header {
    nlmsghdr message;
    union {
      inet_diag_req both;   // kBothFamilies
      inet_diag_req_v2 v2;  // kPerFamily
    };
  };
  Header header{};
  const size_t body =
      kind == DumpKind::kBothFamilies ? sizeof(inet_diag_req) : sizeof(inet_diag_req_v2);
  const size_t filter_at = NLMSG_LENGTH(body);  // both sizes are multiples of NLMSG_ALIGNTO
  nlattr attribute{};
  attribute.nla_type = INET_DIAG_REQ_BYTECODE;
  attribute.nla_len = static_cast<uint16_t>(sizeof(nlattr) + filter.size());
  header.message.nlmsg_len = static_cast<uint32_t>(filter_at + attribute.nla_len);
  header.message.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  header.message.nlmsg_seq = seq;
  if (kind == DumpKind::kBothFamilies) {
    header.message.nlmsg_type = TCPDIAG_GETSOCK;  // the protocol is in the type
    header.both.idiag_family = AF_INET;
    header.both.idiag_states = kHeldStates;
  } else {
    header.message.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    header.v2.sdiag_family = family;
    header.v2.sdiag_protocol = IPPROTO_TCP;
    header.v2.idiag_states = kHeldStates;
  }

  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  iovec parts[3] = {{&header, filter_at},
                    {&attribute, sizeof attribute},
                    {const_cast<uint8_t*>(filter.data()), filter.size()}};
  msghdr message{};
  message.msg_name = &kernel;
  message.msg_namelen = sizeof kernel;
  message.msg_iov = parts;
  message.msg_iovlen = 3;
  const char* what = kind == DumpKind::kBothFamilies ? "sock_diag dump (TCPDIAG_GETSOCK)"
                     : family == AF_INET             ? "sock_diag dump (IPv4)"
                                                     : "sock_diag dump (IPv6)";
  ssize_t sent;
  do sent = ::sendmsg(sock, &message, 0); while (sent < 0 && errno == EINTR);
  if (sent < 0) return Error::from_errno(what);

  // The kernel fills each dump message up to the reader's buffer size, capped at 32 KiB.
  alignas(nlmsghdr) static thread_local char buffer[32768];
  while (true) {
    iovec part{buffer, sizeof buffer};
    msghdr reply{};
    reply.msg_iov = &part;
    reply.msg_iovlen = 1;
    ssize_t n;
    do n = ::recvmsg(sock, &reply, 0); while (n < 0 && errno == EINTR);
    if (n < 0) return Error::from_errno(what);
    if (reply.msg_flags & MSG_TRUNC) return Error::from_errno(EMSGSIZE, what);
    size_t left = static_cast<size_t>(n);
    auto* h = reinterpret_cast<nlmsghdr*>(buffer);
    for (; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_seq != seq) continue;  // not an answer to this request
      if (h->nlmsg_type == NLMSG_DONE) {
        // A dump that failed part-way ends with DONE carrying the negative errno.
        if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(int))) {
          int status;
          std::memcpy(&status, NLMSG_DATA(h), sizeof status);
          if (status < 0) return Error::from_errno(-status, what);
        }
        return {};
      }
      if (h->nlmsg_type == NLMSG_ERROR) {  // the request was refused
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return Error::from_errno(EPROTO, what);
        const auto* err = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
        if (err->error == 0) continue;  // an acknowledgement
        return Error::from_errno(-err->error, what);
      }
      if (h->nlmsg_type != header.message.nlmsg_type) continue;  // answers echo the request's type
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg))) {
        return Error::from_errno(EPROTO, what);
      }
      const auto* socket = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
      // 0: no longer attached to a file (closed by the program, or still in the accept queue).
      if (socket->idiag_inode != 0) inodes.push_back(socket->idiag_inode);
    }
  }
}

// Set once the kernel refuses TCPDIAG_GETSOCK (EINVAL, EOPNOTSUPP: built without it, or gone).
std::atomic<bool> per_family_only{false};

// Every inode of a held TCP socket on `ports`, sorted, each once.
Result<std::vector<uint32_t>> held_socket_inodes(std::vector<uint16_t> ports) {
  std::sort(ports.begin(), ports.end());
  ports.erase(std::unique(ports.begin(), ports.end()), ports.end());
  // The JMP to the end is a 16-bit offset: 12 bytes per port.
  if (ports.size() > 4096) {
    return Error::from_errno(E2BIG, "sock_diag filter: more than 4096 ports");
  }
  const std::vector<uint8_t> filter = port_filter(ports);

  UniqueFd sock(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!sock) return Error::from_errno("socket(NETLINK_SOCK_DIAG)");
  std::vector<uint32_t> inodes;
  bool done = false;
  if (!per_family_only.load(std::memory_order_relaxed)) {
    auto both = dump_inodes(sock.get(), DumpKind::kBothFamilies, AF_UNSPEC, 1, filter, inodes);
    const int err = both ? 0 : both.error().code().value();
    if (err == EINVAL || err == EOPNOTSUPP) {
      per_family_only.store(true, std::memory_order_relaxed);
      inodes.clear();
    } else if (!both) {
      return both.error();
    } else {
      done = true;
    }
  }
  if (!done) {
    LBD_TRY(dump_inodes(sock.get(), DumpKind::kPerFamily, AF_INET, 2, filter, inodes));
    LBD_TRY(dump_inodes(sock.get(), DumpKind::kPerFamily, AF_INET6, 3, filter, inodes));
  }
  std::sort(inodes.begin(), inodes.end());
  inodes.erase(std::unique(inodes.begin(), inodes.end()), inodes.end());
  return inodes;
}

// The inode of a "socket:[INODE]" link target; 0 for anything else.
uint32_t socket_inode(std::string_view target) {
  constexpr std::string_view kPrefix = "socket:[";
  if (target.size() < kPrefix.size() + 2 || target.substr(0, kPrefix.size()) != kPrefix ||
      target.back() != ']')
    return 0;
  uint32_t inode = 0;
  const char* first = target.data() + kPrefix.size();
  const char* last = target.data() + target.size() - 1;
  auto [ptr, ec] = std::from_chars(first, last, inode);
  return (ec == std::errc() && ptr == last) ? inode : 0;
}

}  // namespace

Result<std::vector<std::vector<pid_t>>> process_trees(const std::vector<pid_t>& roots) {
  UniqueFd proc(::open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!proc) return Error::from_errno("open /proc");
  auto parents = read_parents(proc.get());
  if (!parents) return parents.error();
  std::vector<std::vector<pid_t>> trees;
  trees.reserve(roots.size());
  for (pid_t root : roots) trees.push_back(tree_of(root, *parents));
  return trees;
}

Result<std::vector<pid_t>> process_tree(pid_t root) {
  auto trees = process_trees({root});
  if (!trees) return trees.error();
  return std::move(trees->front());
}

bool in_tree_of(pid_t pid, pid_t root) {
  UniqueFd proc(::open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!proc) return false;
  // A bounded walk: a parent chain is short, and a loop (pids reused mid-walk) must not hang us.
  for (int hops = 0; hops < 64 && pid > 1; hops++) {
    if (pid == root) return true;
    pid = parent_of(proc.get(), pid);
  }
  return false;
}

uint64_t tree_rss_bytes(const std::vector<pid_t>& tree) {
  static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t total = 0;
  char path[32];
  char statm[256];
  for (pid_t pid : tree) {
    // "size resident shared text lib data dt", in pages.
    std::snprintf(path, sizeof path, "/proc/%d/statm", pid);
    const ssize_t n = read_small(AT_FDCWD, path, statm, sizeof statm);
    if (n <= 0) continue;  // gone
    const char* end = statm + n;
    const char* space = std::find(static_cast<const char*>(statm), end, ' ');
    uint64_t resident = 0;
    if (space != end && std::from_chars(space + 1, end, resident).ec == std::errc())
      total += resident * page;
  }
  return total;
}

Result<std::vector<uint32_t>> open_connections(const std::vector<std::vector<pid_t>>& trees,
                                               const std::vector<uint16_t>& local_ports) {
  std::vector<uint32_t> counts(trees.size(), 0);
  if (local_ports.empty() || trees.empty()) return counts;
  auto inodes = held_socket_inodes(local_ports);
  if (!inodes) return inodes.error();
  if (inodes->empty()) return counts;

  // counted_in[i]: the last tree that counted (*inodes)[i], so a socket several fds or processes
  // of one tree share counts once there.
  constexpr size_t kNone = std::numeric_limits<size_t>::max();
  std::vector<size_t> counted_in(inodes->size(), kNone);
  char path[32];
  char target[64];
  for (size_t t = 0; t < trees.size(); t++) {
    for (pid_t pid : trees[t]) {
      std::snprintf(path, sizeof path, "/proc/%d/fd", pid);
      UniqueDir dir = open_dir(AT_FDCWD, path);
      if (!dir) {
        if (gone(errno)) continue;
        return Error::from_errno("open " + std::string(path));
      }
      const int at = ::dirfd(dir.get());
      while (true) {
        errno = 0;
        const dirent* entry = ::readdir(dir.get());
        if (entry == nullptr) {
          if (errno != 0 && !gone(errno)) return Error::from_errno("read " + std::string(path));
          break;
        }
        if (entry->d_name[0] == '.') continue;
        const ssize_t n = ::readlinkat(at, entry->d_name, target, sizeof target);
        if (n < 0) {
          if (gone(errno)) continue;  // the fd was closed, or the process exited
          return Error::from_errno("readlink " + std::string(path) + "/" + entry->d_name);
        }
        const uint32_t inode = socket_inode(std::string_view(target, static_cast<size_t>(n)));
        if (inode == 0) continue;
        auto it = std::lower_bound(inodes->begin(), inodes->end(), inode);
        if (it == inodes->end() || *it != inode) continue;
        size_t& counted = counted_in[static_cast<size_t>(it - inodes->begin())];
        if (counted == t) continue;
        counted = t;
        counts[t]++;
      }
    }
  }
  return counts;
}

}  // namespace lbd
