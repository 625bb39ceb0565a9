// One client connection inside a worker, stored at the index of its fixed-file slot.
//
// Lifecycle: accepted -> reading/answering (any number of requests) -> closing -> released.
// A connection is closed only when the kernel holds no request of ours on it: a pending
// multishot recv keeps the socket open and a pending send reads our buffers, so closing waits
// for their final completions (docs/ARCHITECTURE.md, section 4).
#pragma once

#include <linux/time_types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/mapped_memory.h"
#include "common/result.h"

#include "worker/handler.h"
#include "worker/http.h"
#include "worker/load_token.h"

namespace lbd {

class Worker;
struct Connection;

// The Exchange a handler sees; one per connection, reused for each request on it.
class ConnectionExchange final : public Exchange {
 public:
  const Request& request() const override;
  uint32_t worker_slot() const override;
  void add_header(std::string_view name, std::string_view value) override;
  void respond(int status, std::string_view body, std::string_view content_type) override;
  void respond_after(std::chrono::milliseconds delay, std::function<void(Exchange&)> then) override;

 private:
  friend class Worker;
  Worker* worker_ = nullptr;
  Connection* connection_ = nullptr;
  std::string extra_headers_;
  bool responded_ = false;
};

struct Connection {
  uint32_t index = 0;
  uint32_t generation = 0;
  bool in_use = false;

  // Requests the kernel holds for this connection.
  bool recv_armed = false;
  bool send_inflight = false;
  bool timer_armed = false;

  bool closing = false;            // no more reads or writes; close when the kernel lets go
  bool close_submitted = false;
  bool close_after_send = false;   // the last response is queued: close once it is sent
  bool linger_after_send = false;  // ...but shut down writes and drain reads first (error answers)
  bool lingering = false;          // discarding input until the peer closes or the linger ends
  bool waiting = false;            // a handler answers later (respond_after)
  bool output_blocked = false;     // too many unsent answers: not reading until they drain
  bool handing_over = false;       // idle; its recv is being cancelled so it can be handed over
  bool peer_closed = false;        // the client sent FIN: answer what it sent, then close
  bool fresh = false;              // accepted, no request answered yet: --header-timeout runs
                                   // from the accept, whether or not a byte has come

  uint64_t last_activity_ns = 0;
  uint64_t request_started_ns = 0; // CLOCK_MONOTONIC when the handler got the current request
  uint64_t head_started_ns = 0;    // coarse clock at the first byte of the head being received
                                   // (at the accept for a fresh connection)
  uint64_t body_started_ns = 0;    // coarse clock when the head of the current request ended
  uint32_t live_position = 0;      // where this connection sits in Worker::live_

  RequestParser parser;
  std::string input;        // bytes received while waiting on a deferred answer
  std::string out_pending;  // responses not yet given to the kernel
  std::string out_sending;  // bytes the kernel is sending; untouched until the send completes
  size_t out_sent = 0;

  __kernel_timespec timer{};
  std::function<void(Exchange&)> deferred;
  ConnectionExchange exchange;
  LoadToken token;
};

// The worker's connections, one per fixed-file slot. Memory for all of them is mapped at start but
// a connection is built the first time its slot is used: untouched pages cost nothing, so a worker
// sized for 65,536 connections that has held 100 is as small as one sized for 100. After a wave of
// connections (an attack, a peak) the unused ones are taken down again and their pages returned.
class ConnectionTable {
 public:
  static Result<ConnectionTable> create(uint32_t capacity) {
    const size_t slots = std::max<uint32_t>(1, capacity);
    auto memory = MappedMemory::anonymous(slots * sizeof(Connection), "connection table");
    if (!memory) return memory.error();
    // A slot's generation outlives the connection built in it, so that a rebuilt one never
    // matches a completion meant for an earlier one. Zero pages until written.
    auto generations = MappedMemory::anonymous(slots * sizeof(uint32_t), "connection generations");
    if (!generations) return generations.error();
    return ConnectionTable(std::move(*memory), std::move(*generations), capacity);
  }
  ConnectionTable() = default;
  ConnectionTable(ConnectionTable&&) noexcept = default;
  ConnectionTable& operator=(ConnectionTable&& other) noexcept {
    destroy_all();
    memory_ = std::move(other.memory_);
    generations_ = std::move(other.generations_);
    built_ = std::move(other.built_);
    capacity_ = other.capacity_;
    built_count_ = other.built_count_;
    return *this;
  }
  ~ConnectionTable() { destroy_all(); }

  uint32_t capacity() const { return capacity_; }
  bool built(uint32_t index) const { return index < capacity_ && built_[index]; }
  uint32_t built_count() const { return built_count_; }
  // A connection built before (every index in the worker's live list is).
  Connection& operator[](uint32_t index) { return slots()[index]; }
  // Builds the connection in `index` the first time; true if it was built now.
  bool build(uint32_t index) {
    if (built_[index]) return false;
    Connection* c = new (slots() + index) Connection();
    c->generation = generations_.as<uint32_t>()[index];
    built_[index] = true;
    built_count_++;
    return true;
  }
  // Takes down every built connection that is not in use and gives the pages that then hold
  // none back to the kernel. Returns the bytes given back.
  size_t release_unused() {
    for (uint32_t i = 0; i < capacity_; i++) {
      if (built_[i] && !slots()[i].in_use) destroy(i);
    }
    const size_t page = 4096;
    auto* base = memory_.as<char>();
    size_t returned = 0;
    size_t run_start = 0, run_bytes = 0;
    auto flush = [&] {
      if (run_bytes) madvise(base + run_start, run_bytes, MADV_DONTNEED);
      returned += run_bytes;
      run_bytes = 0;
    };
    for (size_t at = 0; at + page <= memory_.size(); at += page) {
      const uint32_t first = static_cast<uint32_t>(at / sizeof(Connection));
      const uint32_t last = static_cast<uint32_t>(std::min<size_t>((at + page - 1) / sizeof(Connection), capacity_ - 1));
      bool empty = true;
      for (uint32_t i = first; i <= last && empty; i++) empty = !built_[i];
      if (!empty) {
        flush();
        continue;
      }
      if (!run_bytes) run_start = at;
      run_bytes += page;
    }
    flush();
    return returned;
  }

 private:
  ConnectionTable(MappedMemory memory, MappedMemory generations, uint32_t capacity)
      : memory_(std::move(memory)), generations_(std::move(generations)), built_(capacity, false), capacity_(capacity) {}
  Connection* slots() { return memory_.as<Connection>(); }
  void destroy(uint32_t index) {
    generations_.as<uint32_t>()[index] = slots()[index].generation + 1;
    slots()[index].~Connection();
    built_[index] = false;
    built_count_--;
  }
  void destroy_all() {
    for (uint32_t i = 0; i < built_.size(); i++) {
      if (built_[i]) destroy(i);
    }
    built_.clear();
  }

  MappedMemory memory_;
  MappedMemory generations_;
  std::vector<bool> built_;
  uint32_t capacity_ = 0;
  uint32_t built_count_ = 0;
};

}  // namespace lbd
