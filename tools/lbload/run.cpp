#include "lbload/run.h"

#include <sys/resource.h>

#include <algorithm>
#include <latch>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "lbload/engine.h"

namespace lbd::load {

namespace {

double cpu_us_now() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto us = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) * 1e6 + static_cast<double>(tv.tv_usec); };
  return us(usage.ru_utime) + us(usage.ru_stime);
}

// n split over `parts`, the first ones taking the remainder.
unsigned share_of(unsigned n, unsigned parts, unsigned index) {
  return n / parts + (index < n % parts ? 1 : 0);
}

// Each ring's table of direct descriptors counts against RLIMIT_NOFILE: raise the soft limit as
// far as the hard one allows, and say so clearly if that is still too low.
Result<void> ensure_descriptor_limit(rlim_t needed) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return Error::from_errno("getrlimit(RLIMIT_NOFILE)");
  if (limit.rlim_cur >= needed) return {};
  limit.rlim_cur = limit.rlim_max == RLIM_INFINITY ? needed : std::min(needed, limit.rlim_max);
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) return Error::from_errno("setrlimit(RLIMIT_NOFILE)");
  if (limit.rlim_cur < needed) {
    return Error(std::error_code(EMFILE, std::system_category()),
                 std::to_string(needed) + " connections in one thread need RLIMIT_NOFILE >= " +
                     std::to_string(needed) + " (the hard limit is " + std::to_string(limit.rlim_max) +
                     "; use more --threads or raise it)");
  }
  return {};
}

}  // namespace

Result<RunResult> run_load(const Options& options, std::atomic<bool>& stop) {
  const unsigned threads = options.threads;
  std::vector<ThreadShare> shares(threads);
  unsigned held_before = 0;
  rlim_t most_slots = 0;
  for (unsigned i = 0; i < threads; i++) {
    shares[i] = {i, share_of(options.connections, threads, i), share_of(options.hold, threads, i), held_before};
    held_before += shares[i].held;
    most_slots = std::max<rlim_t>(most_slots, shares[i].connections + shares[i].held);
  }
  // A little room for the ring fds and stdio besides the direct descriptors.
  LBD_TRY(ensure_descriptor_limit(most_slots + 64));

  SharedRun shared(options);
  shared.stop = &stop;
  // What each thread leaves behind; its engine (ring, sockets) dies on the thread that used it.
  struct Outcome {
    std::optional<RunStats> stats;
    int64_t finished_ns = 0;
    std::string ring_mode;
    std::optional<Error> error;
  };
  std::vector<Outcome> outcomes(threads);
  std::latch ready(threads);  // every thread has its ring (or has failed to make one)
  std::latch go(1);           // start_ns is set (or a thread failed to set up): go on
  bool abandon = false;       // written before `go` opens, read after
  std::vector<std::thread> workers;
  for (unsigned i = 0; i < threads; i++) {
    workers.emplace_back([&, i] {
      Outcome& out = outcomes[i];
      // The ring is made on the thread that uses it: SINGLE_ISSUER binds it to its creator.
      auto engine = Engine::create(shared, shares[i]);
      if (!engine) out.error = engine.error();
      ready.count_down();
      go.wait();
      if (!engine || abandon || stop.load()) return;
      if (auto ran = (*engine)->run(); !ran) {
        out.error = ran.error().wrap("thread " + std::to_string(i));
        return;
      }
      out.stats = (*engine)->stats();
      out.finished_ns = (*engine)->finished_ns();
      out.ring_mode = (*engine)->ring_mode();
    });
  }
  ready.wait();
  abandon = std::any_of(outcomes.begin(), outcomes.end(), [](const Outcome& o) { return o.error.has_value(); });
  const double cpu_before = cpu_us_now();
  shared.start_ns = monotonic_ns();
  shared.end_ns = shared.start_ns + options.duration.count();
  go.count_down();
  for (auto& t : workers) t.join();
  for (auto& o : outcomes) {
    if (o.error) return *o.error;
  }

  RunResult result{RunStats(options.mix.size())};
  int64_t finished_ns = shared.start_ns;
  for (const auto& o : outcomes) {
    if (!o.stats) continue;  // stopped (SIGINT) before it began
    result.stats.merge(*o.stats);
    finished_ns = std::max(finished_ns, o.finished_ns);
    result.ring_mode = o.ring_mode;
  }
  result.duration_s = static_cast<double>(finished_ns - shared.start_ns) / 1e9;
  result.cpu_us = cpu_us_now() - cpu_before;
  return result;
}

}  // namespace lbd::load
