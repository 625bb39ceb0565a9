// A connection's share of its worker's published load, held for exactly as long as the
// connection lives: the constructor counts it in the slot table's `open`, the destructor counts
// it out. Whatever path a connection ends on (response sent, peer reset, timeout, drain, error),
// releasing the Connection releases the token, so the load `least` steers by never drifts.
//
// The worker is the only writer of its slot's `open`, so a relaxed load and store is an atomic
// publication without a locked instruction; the steering program reads it without a syscall.
#pragma once

#include <utility>

#include "steer_abi.h"
#include "steering/slot_table.h"

namespace lbd {

class LoadToken {
 public:
  LoadToken() = default;
  explicit LoadToken(lbd_slot* slot) : slot_(slot) {
    if (slot_) store_field(slot_->open, load_field(slot_->open) + 1);
  }
  ~LoadToken() { release(); }

  LoadToken(LoadToken&& other) noexcept : slot_(std::exchange(other.slot_, nullptr)) {}
  LoadToken& operator=(LoadToken&& other) noexcept {
    if (this != &other) {
      release();
      slot_ = std::exchange(other.slot_, nullptr);
    }
    return *this;
  }
  LoadToken(const LoadToken&) = delete;
  LoadToken& operator=(const LoadToken&) = delete;

  bool held() const { return slot_ != nullptr; }

  void release() {
    if (!slot_) return;
    store_field(slot_->open, load_field(slot_->open) - 1);
    slot_ = nullptr;
  }

 private:
  lbd_slot* slot_ = nullptr;
};

}  // namespace lbd
