#include "supervisor/restart_policy.h"

#include <algorithm>

namespace lbd {

RestartPolicy::RestartPolicy(unsigned max_crashes, std::chrono::milliseconds window,
                             std::chrono::milliseconds first_delay,
                             std::chrono::milliseconds max_delay)
    : max_crashes_(max_crashes), window_(window), first_delay_(first_delay), max_delay_(max_delay) {}

void RestartPolicy::forget_before(Clock::time_point cutoff) {
  while (!crashes_.empty() && crashes_.front() < cutoff) crashes_.pop_front();
}

unsigned RestartPolicy::recent_crashes(Clock::time_point now) {
  forget_before(now - window_);
  return static_cast<unsigned>(crashes_.size());
}

std::optional<std::chrono::milliseconds> RestartPolicy::on_crash(Clock::time_point now) {
  forget_before(now - window_);
  crashes_.push_back(now);
  const unsigned count = static_cast<unsigned>(crashes_.size());
  if (count >= max_crashes_) return std::nullopt;
  // 1st crash: first_delay, then doubling: 100 ms, 200 ms, 400 ms ... up to max_delay.
  auto delay = first_delay_;
  for (unsigned i = 1; i < count && delay < max_delay_; i++) delay *= 2;
  return std::min(delay, max_delay_);
}

}  // namespace lbd
