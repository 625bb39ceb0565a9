// A connection's share of its worker's load, held for exactly as long as the connection lives:
// the constructor counts it into the worker's open-connection count, the destructor counts it
// out. Whatever path a connection ends on (response sent, peer reset, timeout, drain, handover,
// error), releasing the Connection releases the token, so the load that `least` steers by never
// drifts. The worker publishes the count into the shared slot table after every completion.
#pragma once

#include <cstdint>
#include <utility>

namespace lbd {

class LoadToken {
 public:
  LoadToken() = default;
  explicit LoadToken(uint32_t* open) : open_(open) { ++*open_; }
  ~LoadToken() { release(); }

  LoadToken(LoadToken&& other) noexcept : open_(std::exchange(other.open_, nullptr)) {}
  LoadToken& operator=(LoadToken&& other) noexcept {
    if (this != &other) {
      release();
      open_ = std::exchange(other.open_, nullptr);
    }
    return *this;
  }
  LoadToken(const LoadToken&) = delete;
  LoadToken& operator=(const LoadToken&) = delete;

  bool held() const { return open_ != nullptr; }

  void release() {
    if (!open_) return;
    --*open_;
    open_ = nullptr;
  }

 private:
  uint32_t* open_ = nullptr;
};

}  // namespace lbd
