// When to restart a crashed worker: exponential backoff, and a crash-loop guard that gives up on
// a slot after `max_crashes` crashes within `window` (a worker that cannot start must not be
// restarted in a tight loop). Pure logic over time points; unit-tested.
#pragma once

#include <chrono>
#include <deque>
#include <optional>
#include <utility>

namespace lbd {

class RestartPolicy {
 public:
  using Clock = std::chrono::steady_clock;

  RestartPolicy(unsigned max_crashes, std::chrono::milliseconds window,
                std::chrono::milliseconds first_delay = std::chrono::milliseconds(100),
                std::chrono::milliseconds max_delay = std::chrono::milliseconds(10'000));

  // Records a crash at `now`. Returns how long to wait before restarting, or nothing when the
  // slot has crashed max_crashes times within the window and should be left down.
  std::optional<std::chrono::milliseconds> on_crash(Clock::time_point now);

  // Crashes counted in the window ending at `now`.
  unsigned recent_crashes(Clock::time_point now);

  // The crashes it remembers, oldest first: what a successor needs to go on counting (an
  // upgraded supervisor keeps its predecessor's crash-loop guard).
  const std::deque<Clock::time_point>& crashes() const { return crashes_; }
  void remember(std::deque<Clock::time_point> crashes) { crashes_ = std::move(crashes); }

 private:
  void forget_before(Clock::time_point cutoff);

  unsigned max_crashes_;
  std::chrono::milliseconds window_;
  std::chrono::milliseconds first_delay_;
  std::chrono::milliseconds max_delay_;
  std::deque<Clock::time_point> crashes_;
};

}  // namespace lbd
