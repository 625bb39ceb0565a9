// A move-only owner of one memory mapping, as UniqueFd is of a descriptor: every mmap lbd makes
// (the slot table, a worker's stats block, a buffer ring) lives in one of these, so no path leaks
// or double-unmaps a mapping.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <utility>

#include "common/result.h"

namespace lbd {

class MappedMemory {
 public:
  MappedMemory() = default;
  // `bytes` of the file `fd`, shared with every other process that maps it.
  static Result<MappedMemory> shared(int fd, size_t bytes, const char* what) {
    void* memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (memory == MAP_FAILED) return Error::from_errno(std::string("mmap ") + what);
    return MappedMemory(memory, bytes);
  }
  // `bytes` of private zeroed memory, page-aligned (for the kernel to share with us).
  static Result<MappedMemory> anonymous(size_t bytes, const char* what) {
    void* memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (memory == MAP_FAILED) return Error::from_errno(std::string("mmap ") + what);
    return MappedMemory(memory, bytes);
  }

  MappedMemory(MappedMemory&& other) noexcept
      : memory_(std::exchange(other.memory_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  MappedMemory& operator=(MappedMemory&& other) noexcept {
    if (this != &other) {
      reset();
      memory_ = std::exchange(other.memory_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  MappedMemory(const MappedMemory&) = delete;
  MappedMemory& operator=(const MappedMemory&) = delete;
  ~MappedMemory() { reset(); }

  template <class T>
  T* as() const {
    return static_cast<T*>(memory_);
  }
  size_t size() const { return bytes_; }
  explicit operator bool() const { return memory_ != nullptr; }

 private:
  MappedMemory(void* memory, size_t bytes) : memory_(memory), bytes_(bytes) {}
  void reset() {
    if (memory_) munmap(memory_, bytes_);
    memory_ = nullptr;
    bytes_ = 0;
  }

  void* memory_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace lbd
