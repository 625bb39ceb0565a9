// What an exec-mode worker holds, read from the kernel (supervisor/process_tree.h): the processes
// of its tree, their resident memory, and the connections they hold open on the service's ports.
// Real processes (a root the test forks, which forks a grandchild, as gunicorn does) and real
// loopback sockets on ephemeral ports; every wait is on a condition with a deadline.
#include "supervisor/process_tree.h"
#include "supervisor/tree_sampler.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "net/address.h"
#include "net/listener.h"
#include "support/deadline.h"

namespace lbd::test {
namespace {

constexpr auto kWait = std::chrono::seconds(10);

struct Pipe {
  UniqueFd read;
  UniqueFd write;
};

Pipe make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) ADD_FAILURE() << "pipe2: " << std::strerror(errno);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// One byte from `fd`, or 0 if none came before the deadline (or the writer went away).
char read_byte(int fd, Deadline deadline) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, remaining_ms(deadline)) != 1) return 0;
  char c = 0;
  return ::read(fd, &c, 1) == 1 ? c : 0;
}

void write_byte(int fd, char c) { ASSERT_EQ(::write(fd, &c, 1), 1) << std::strerror(errno); }

// A worker as exec mode sees it: a root process (the test's child, in its own process group)
// that forks a grandchild running `body` and then only waits. The destructor kills and reaps the
// group.
class Tree {
 public:
  explicit Tree(const std::function<int()>& body) {
    // Orphans come to the test process rather than to init (which may not reap them), so the
    // destructor can reap the whole group.
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    Pipe started = make_pipe();
    root_ = ::fork();
    if (root_ == 0) {
      ::setpgid(0, 0);
      const pid_t grandchild = ::fork();
      if (grandchild == 0) ::_exit(body());
      (void)!::write(started.write.get(), &grandchild, sizeof grandchild);
      while (true) ::pause();
    }
    if (root_ < 0) {
      ADD_FAILURE() << "fork: " << std::strerror(errno);
      return;
    }
    ::setpgid(root_, root_);  // also here: whichever runs first, the group exists before a kill
    started.write.reset();
    pollfd p{started.read.get(), POLLIN, 0};
    if (::poll(&p, 1, remaining_ms(after(kWait))) != 1 ||
        ::read(started.read.get(), &grandchild_, sizeof grandchild_) != sizeof grandchild_)
      ADD_FAILURE() << "the tree's grandchild did not start";
  }
  ~Tree() {
    if (root_ <= 0) return;
    ::kill(-root_, SIGKILL);
    // Each member is re-parented to us before its parent can be reaped, so waiting for the group
    // until there is none left reaps them all.
    while (::waitpid(-root_, nullptr, 0) > 0 || errno == EINTR) {
    }
  }
  Tree(const Tree&) = delete;
  Tree& operator=(const Tree&) = delete;

  pid_t root() const { return root_; }
  pid_t grandchild() const { return grandchild_; }

 private:
  pid_t root_ = -1;
  pid_t grandchild_ = -1;
};

// How the grandchild shares the connections it holds: not at all; a second fd for its first
// connection; copies of all of them in a forked holder process (a great-grandchild).
enum class Share { kNone, kDup, kHolder };

// The tree's grandchild as a server: accepts `count` connections and keeps them, shares them as
// told, says 'R', then for each command byte n closes its last n connections and says 'A'. Runs
// in a forked process: raw calls only, and returns its exit status.
int accept_and_hold(int listener, int count, int commands, int replies, Share share) {
  std::vector<int> held;
  while (static_cast<int>(held.size()) < count) {
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return 1;
    held.push_back(fd);
  }
  if (share == Share::kDup && ::dup(held.front()) < 0) return 1;
  if (share == Share::kHolder) {
    const pid_t holder = ::fork();
    if (holder < 0) return 1;
    if (holder == 0) {
      while (true) ::pause();
    }
  }
  if (::write(replies, "R", 1) != 1) return 1;
  char n;
  while (::read(commands, &n, 1) == 1) {
    for (; n > 0 && !held.empty(); n--) {
      ::close(held.back());
      held.pop_back();
    }
    if (::write(replies, "A", 1) != 1) return 1;
  }
  return 0;
}

struct Listener {
  UniqueFd fd;
  uint16_t port = 0;
};

Listener listen_on(const char* address) {
  net::ListenerOptions options;
  options.reuseport = false;
  auto fd = net::listen_tcp(net::Address::parse(address), options);
  if (!fd) return {};
  auto bound = net::local_address(fd->get());
  if (!bound) return {};
  return {std::move(*fd), bound->port()};
}

UniqueFd connect_to(const char* host, uint16_t port) {
  const net::Address address = net::Address::parse(std::string(host) + ":0").with_port(port);
  UniqueFd fd(::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd || ::connect(fd.get(), address.sockaddr_ptr(), address.length()) != 0) {
    ADD_FAILURE() << "connect " << address.to_string() << ": " << std::strerror(errno);
    return {};
  }
  return fd;
}

std::vector<uint32_t> connections(const std::vector<std::vector<pid_t>>& trees,
                                  const std::vector<uint16_t>& ports) {
  auto counts = open_connections(trees, ports);
  if (!counts) {
    ADD_FAILURE() << counts.error().message();
    return {};
  }
  return *counts;
}

std::vector<pid_t> sorted(std::vector<pid_t> pids) {
  std::sort(pids.begin(), pids.end());
  return pids;
}

// ---- process trees ------------------------------------------------------------------------------

TEST(ProcessTree, FindsTheGrandchildUnderItsRootAndNothingElse) {
  const auto wait = [] {
    while (true) ::pause();
    return 0;
  };
  Tree first(wait);
  Tree second(wait);
  ASSERT_FALSE(HasFailure());

  auto trees = process_trees({first.root(), second.root()});
  ASSERT_TRUE(trees) << trees.error().message();
  ASSERT_EQ(trees->size(), 2u);
  ASSERT_FALSE((*trees)[0].empty());
  EXPECT_EQ((*trees)[0].front(), first.root()) << "the root comes first";
  EXPECT_EQ(sorted((*trees)[0]), sorted({first.root(), first.grandchild()}));
  EXPECT_EQ(sorted((*trees)[1]), sorted({second.root(), second.grandchild()}));

  // The test process's tree holds both (and whatever else it runs).
  auto mine = process_tree(::getpid());
  ASSERT_TRUE(mine) << mine.error().message();
  for (pid_t pid : {first.root(), first.grandchild(), second.root(), second.grandchild()})
    EXPECT_NE(std::find(mine->begin(), mine->end(), pid), mine->end()) << pid;
  EXPECT_EQ(mine->front(), ::getpid());
}

TEST(ProcessTree, ARootThatIsGoneHasAnEmptyTree) {
  const pid_t nobody = 0x7ffffff0;  // above any pid_max (at most 2^22)
  auto trees = process_trees({nobody});
  ASSERT_TRUE(trees) << trees.error().message();
  EXPECT_TRUE(trees->at(0).empty());
}

// Processes are born and die while the scans run: a scan never fails for that.
TEST(ProcessTree, ScansWhileProcessesComeAndGo) {
  Tree churn([] {
    while (true) {
      const pid_t pid = ::fork();
      if (pid == 0) ::_exit(0);
      if (pid > 0) ::waitpid(pid, nullptr, 0);
    }
    return 0;
  });
  ASSERT_FALSE(HasFailure());
  for (int i = 0; i < 100; i++) {
    auto trees = process_trees({churn.root()});
    ASSERT_TRUE(trees) << trees.error().message();
    ASSERT_GE(trees->at(0).size(), 2u);  // the root and the grandchild at least
    auto counts = open_connections(*trees, {1});
    ASSERT_TRUE(counts) << counts.error().message();
  }
}

// ---- resident memory ----------------------------------------------------------------------------

TEST(ProcessTree, RssGrowsWhenTheGrandchildTouchesMemory) {
  Pipe commands = make_pipe();
  Pipe replies = make_pipe();
  constexpr size_t kBytes = 64u << 20;
  Tree tree([&] {
    char c;
    if (::read(commands.read.get(), &c, 1) != 1) return 1;
    void* memory =
        ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) return 1;
    std::memset(memory, 1, kBytes);
    if (::write(replies.write.get(), "A", 1) != 1) return 1;
    while (true) ::pause();
  });
  ASSERT_FALSE(HasFailure());
  auto members = process_tree(tree.root());
  ASSERT_TRUE(members) << members.error().message();
  ASSERT_EQ(members->size(), 2u);

  const uint64_t before = tree_rss_bytes(*members);
  EXPECT_GT(before, 0u);
  write_byte(commands.write.get(), 'M');
  ASSERT_EQ(read_byte(replies.read.get(), after(kWait)), 'A');
  // RSS counters are per-CPU and read approximately: allow them a moment and a few pages.
  uint64_t now = 0;
  EXPECT_TRUE(eventually(after(kWait), [&] {
    now = tree_rss_bytes(*members);
    return now >= before + kBytes - (1u << 20);
  })) << "before " << before << ", after " << now;
  EXPECT_LT(now, before + 2 * kBytes);
  EXPECT_EQ(tree_rss_bytes({}), 0u);
}

// ---- open connections ---------------------------------------------------------------------------

TEST(ProcessTree, CountsTheConnectionsAGrandchildHolds) {
  Listener first = listen_on("127.0.0.1:0");
  Listener second = listen_on("127.0.0.1:0");
  ASSERT_TRUE(first.fd && second.fd);
  Pipe first_commands = make_pipe(), first_replies = make_pipe();
  Pipe second_commands = make_pipe(), second_replies = make_pipe();
  constexpr int kFirst = 5, kSecond = 3;
  // The first tree's grandchild also holds a dup of one connection; the second's shares all of
  // its connections with a great-grandchild. Each socket still counts once per tree.
  Tree first_tree([&] {
    return accept_and_hold(first.fd.get(), kFirst, first_commands.read.get(),
                           first_replies.write.get(), Share::kDup);
  });
  Tree second_tree([&] {
    return accept_and_hold(second.fd.get(), kSecond, second_commands.read.get(),
                           second_replies.write.get(), Share::kHolder);
  });
  ASSERT_FALSE(HasFailure());

  std::vector<UniqueFd> clients;
  for (int i = 0; i < kFirst; i++) clients.push_back(connect_to("127.0.0.1", first.port));
  for (int i = 0; i < kSecond; i++) clients.push_back(connect_to("127.0.0.1", second.port));
  ASSERT_EQ(read_byte(first_replies.read.get(), after(kWait)), 'R');
  ASSERT_EQ(read_byte(second_replies.read.get(), after(kWait)), 'R');

  // Two more on the first port that nobody accepts: they are the queue, not held connections.
  clients.push_back(connect_to("127.0.0.1", first.port));
  clients.push_back(connect_to("127.0.0.1", first.port));
  EXPECT_TRUE(eventually(after(kWait), [&] {
    auto queue = net::accept_queue(first.fd.get());
    return queue && queue->queued == 2;
  }));
  ASSERT_FALSE(HasFailure());

  auto trees = process_trees({first_tree.root(), second_tree.root()});
  ASSERT_TRUE(trees) << trees.error().message();
  ASSERT_EQ(trees->at(1).size(), 3u) << "the second tree has its holder";
  // The test process is a tree too: it holds the clients, whose *remote* port is the listener's,
  // and the listeners themselves. Neither is a held connection on the port.
  trees->push_back({::getpid()});

  EXPECT_EQ(connections(*trees, {first.port}), (std::vector<uint32_t>{kFirst, 0, 0}));
  EXPECT_EQ(connections(*trees, {second.port}), (std::vector<uint32_t>{0, kSecond, 0}));
  EXPECT_EQ(connections(*trees, {first.port, second.port}),
            (std::vector<uint32_t>{kFirst, kSecond, 0}));
  EXPECT_EQ(connections(*trees, {}), (std::vector<uint32_t>{0, 0, 0}));
  EXPECT_EQ(connections({}, {first.port}), std::vector<uint32_t>{});

  // A long port list (the kernel filter is a chain of jumps; it has to reach past 255 bytes).
  std::vector<uint16_t> many;
  for (uint16_t port = 1; port <= 300; port++) many.push_back(port);
  many.push_back(second.port);
  EXPECT_EQ(connections(*trees, many), (std::vector<uint32_t>{0, kSecond, 0}));

  // The grandchild closes 3 of its connections (not the one it dup'ed): the count drops with
  // them, the closed sockets (now FIN_WAIT, without a file) are not counted.
  write_byte(first_commands.write.get(), 3);
  ASSERT_EQ(read_byte(first_replies.read.get(), after(kWait)), 'A');
  EXPECT_EQ(connections(*trees, {first.port, second.port}),
            (std::vector<uint32_t>{kFirst - 3, kSecond, 0}));
}

// The sampler's thread takes the same readings, on its own, for the pids it was given, and hands
// over only what is new.
TEST(TreeSampler, SamplesTheWatchedTreesOnItsThread) {
  Listener listener = listen_on("127.0.0.1:0");
  ASSERT_TRUE(listener.fd);
  Pipe commands = make_pipe(), replies = make_pipe();
  constexpr int kHeld = 4;
  Tree tree([&] {
    return accept_and_hold(listener.fd.get(), kHeld, commands.read.get(), replies.write.get(), Share::kDup);
  });
  ASSERT_FALSE(HasFailure());
  std::vector<UniqueFd> clients;
  for (int i = 0; i < kHeld; i++) clients.push_back(connect_to("127.0.0.1", listener.port));
  ASSERT_EQ(read_byte(replies.read.get(), after(kWait)), 'R');

  TreeSampler sampler({listener.port});
  EXPECT_FALSE(sampler.newest().has_value()) << "nothing watched, nothing sampled";
  const pid_t gone = 999'999'999;  // no such process: a tree of nothing
  sampler.watch({tree.root(), gone}, std::chrono::milliseconds(20));
  std::optional<TreeSampler::Sample> sample;
  ASSERT_TRUE(eventually(after(kWait), [&] {
    if (auto s = sampler.newest()) sample = std::move(s);
    return sample && sample->trees.count(tree.root()) && sample->trees.at(tree.root()).open == static_cast<uint32_t>(kHeld);
  })) << (sample ? sample->error : "no sample");
  EXPECT_EQ(sample->error, "");
  EXPECT_GT(sample->trees.at(tree.root()).rss_bytes, 0u);
  EXPECT_EQ(sample->trees.at(gone).rss_bytes, 0u);
  EXPECT_EQ(sample->trees.at(gone).open, 0u);
  // The same reading, taken at once on this thread.
  auto now = TreeSampler::take({tree.root()}, {listener.port});
  EXPECT_EQ(now.trees.at(tree.root()).open, static_cast<uint32_t>(kHeld));
}

TEST(ProcessTree, CountsIpv6Connections) {
  Listener listener = listen_on("[::1]:0");
  if (!listener.fd) GTEST_SKIP() << "no IPv6 loopback here: cannot listen on [::1]";
  Pipe commands = make_pipe(), replies = make_pipe();
  constexpr int kHeld = 4;
  Tree tree([&] {
    return accept_and_hold(listener.fd.get(), kHeld, commands.read.get(), replies.write.get(),
                           Share::kNone);
  });
  ASSERT_FALSE(HasFailure());
  std::vector<UniqueFd> clients;
  for (int i = 0; i < kHeld; i++) clients.push_back(connect_to("[::1]", listener.port));
  ASSERT_EQ(read_byte(replies.read.get(), after(kWait)), 'R');

  auto trees = process_trees({tree.root()});
  ASSERT_TRUE(trees) << trees.error().message();
  trees->push_back({::getpid()});  // the test process alone (its tree would include the other)
  EXPECT_EQ(connections(*trees, {listener.port}), (std::vector<uint32_t>{kHeld, 0}));
  write_byte(commands.write.get(), kHeld);
  ASSERT_EQ(read_byte(replies.read.get(), after(kWait)), 'A');
  EXPECT_EQ(connections(*trees, {listener.port}), (std::vector<uint32_t>{0, 0}));
}

}  // namespace
}  // namespace lbd::test
