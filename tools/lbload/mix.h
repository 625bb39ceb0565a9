// The request paths of a load run and how often each is asked for: "--mix 95:/,5:/work?us=5000"
// sends "/" 95 times in 100 and "/work?us=5000" 5 times, chosen at random per request.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lbd::load {

struct WeightedPath {
  std::string path;  // request target: "/", "/work?us=5000"
  uint64_t weight = 1;
};

class PathMix {
 public:
  // One path, always chosen.
  explicit PathMix(std::string path = "/") : PathMix(std::vector<WeightedPath>{{std::move(path), 1}}) {}
  // "W:PATH,W:PATH,...": weights are positive integers, relative to their sum; a path starts with
  // '/' and may contain commas (an entry begins only where a comma is followed by "digits:").
  // Throws ConfigError naming the bad entry.
  static PathMix parse(std::string_view spec);

  const std::vector<WeightedPath>& paths() const { return paths_; }
  size_t size() const { return paths_.size(); }

  // The index of the path for a uniformly random 64-bit `draw`.
  size_t choose(uint64_t draw) const;

 private:
  explicit PathMix(std::vector<WeightedPath> paths);

  std::vector<WeightedPath> paths_;
  std::vector<uint64_t> cumulative_;  // running sum of weights, for choose()
};

// Whether `path` can go on a request line as is: starts with '/', no spaces or control bytes.
bool is_valid_request_path(std::string_view path);

// A small fast generator for per-request choices (splitmix64): one per load thread, no locking.
class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
};

}  // namespace lbd::load
