// Exec mode's view of each program's process tree (process_tree.h) — its resident memory and
// the connections it holds on the service's ports — taken on a thread of its own. A sample reads
// /proc and dumps the kernel's TCP table: ~1.5 ms, plus ~5 ms per 1000 connections held. The
// supervisor's loop publishes every program's load every 10 ms and must never wait for that
// (docs/ARCHITECTURE.md, invariant 5), so it only hands the thread the pids to look at and picks up the
// newest sample when there is one.
//
// The thread touches nothing of the supervisor's and never logs (lbd's logger is not
// thread-safe): a sample carries its error for the loop to report.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

namespace lbd {

class TreeSampler {
 public:
  struct Tree {
    uint64_t rss_bytes = 0;
    std::optional<uint32_t> open;  // none when the connections could not be counted
  };
  struct Sample {
    std::map<pid_t, Tree> trees;  // by root pid; a root that is gone reads 0 bytes, 0 connections
    std::string error;            // why some of it could not be read, or empty
  };

  // One sample of these roots' trees, now, on the caller's thread (for answers worth the wait:
  // `lbctl status`, /metrics).
  static Sample take(const std::vector<pid_t>& roots, const std::vector<uint16_t>& ports);

  explicit TreeSampler(std::vector<uint16_t> ports);
  ~TreeSampler();  // stops the thread and waits for it
  TreeSampler(const TreeSampler&) = delete;
  TreeSampler& operator=(const TreeSampler&) = delete;

  // One sample now, on the caller's thread, of the ports this sampler was made for.
  Sample take_now(const std::vector<pid_t>& roots) const { return take(roots, ports_); }

  // What to sample from now on, and how often.
  void watch(std::vector<pid_t> roots, std::chrono::milliseconds interval);
  // The newest sample taken since the last call, if any.
  std::optional<Sample> newest();

 private:
  void run(std::stop_token stop);

  const std::vector<uint16_t> ports_;
  std::mutex mutex_;
  std::condition_variable_any wake_;
  std::vector<pid_t> roots_;                   // guarded by mutex_
  std::chrono::milliseconds interval_{1000};   // guarded by mutex_
  std::optional<Sample> newest_;               // guarded by mutex_
  bool sample_now_ = false;                    // guarded by mutex_
  std::jthread thread_;  // last: it starts once everything it uses exists
};

}  // namespace lbd
