// Time bounds for tests. Every wait in the integration tests is "until this condition, or until
// this deadline": nothing sleeps a fixed time and hopes.
#pragma once

#include <chrono>
#include <thread>

namespace lbd::test {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;
using namespace std::chrono_literals;

inline Deadline after(Clock::duration d) { return Clock::now() + d; }

// Milliseconds left until `deadline` (0 once it has passed), for poll().
inline int remaining_ms(Deadline deadline) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : left > 60'000 ? 60'000 : static_cast<int>(left);
}

// Polls `condition` every `period` until it holds (true) or `deadline` passes (false). For states
// nothing notifies us of, such as a process becoming stopped.
template <typename Condition>
bool eventually(Deadline deadline, Condition condition,
                Clock::duration period = std::chrono::milliseconds(2)) {
  while (true) {
    if (condition()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(period);
  }
}

}  // namespace lbd::test
