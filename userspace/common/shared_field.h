// Fields in memory that several processes map (the slot table, the workers' stats blocks), each
// written by exactly one of them. Single-writer fields are published and read with relaxed
// atomics: each is a counter or a timestamp, and readers need no ordering with other fields. A
// writer that adds to its own field does a relaxed load and a relaxed store (no locked
// instruction): nobody else writes it, so no update can be lost.
#pragma once

#include <atomic>
#include <type_traits>

namespace lbd {

template <typename T>
inline T load_field(const T& field) {
  return std::atomic_ref<T>(const_cast<T&>(field)).load(std::memory_order_relaxed);
}
template <typename T>
inline void store_field(T& field, std::type_identity_t<T> value) {
  std::atomic_ref<T>(field).store(value, std::memory_order_relaxed);
}
// Only for a field this process alone writes.
template <typename T>
inline void add_to_field(T& field, std::type_identity_t<T> amount) {
  store_field(field, load_field(field) + amount);
}

}  // namespace lbd
