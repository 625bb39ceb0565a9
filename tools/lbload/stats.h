// What one load thread counts while it runs, merged across threads for the report: latency of
// successful requests (overall and per path), failures by kind, answers per X-Worker, and the
// --hold connections' own tally.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lbload/histogram.h"

namespace lbd::load {

// Why a request failed. The names are the report's (and JSON's) keys.
enum class ErrorKind : uint8_t {
  kRefused,      // connect: ECONNREFUSED
  kReset,        // ECONNRESET / EPIPE
  kTimeout,      // --timeout passed (connect, send and the whole response), or the kernel's ETIMEDOUT
  kClosed,       // EOF before a full response
  kBadStatus,    // a whole response, but not 2xx/3xx
  kBadResponse,  // bytes that are not an HTTP/1.x response
  kOther,        // any other errno (EMFILE, EADDRNOTAVAIL, ...)
};
inline constexpr size_t kErrorKinds = 7;
const char* error_kind_name(ErrorKind kind);
// The kind of a socket error; `err` is a positive errno.
ErrorKind classify_errno(int err);

// Responses per X-Worker value, "-" for responses without the header. Few distinct values (one
// per lbd worker), so a flat vector searched linearly beats a map on the hot path.
class WorkerTally {
 public:
  static constexpr std::string_view kMissing = "-";

  void add(std::string_view worker, uint64_t count = 1);
  void merge(const WorkerTally& other);
  uint64_t count(std::string_view worker) const;
  // Sorted numerically where the values are numbers ("2" before "10"), "-" last.
  std::vector<std::pair<std::string, uint64_t>> sorted() const;

 private:
  std::vector<std::pair<std::string, uint64_t>> counts_;
};

// The --hold connections: counted apart so the load's own numbers stay clean.
struct HeldStats {
  uint64_t connections = 0;
  uint64_t requests = 0;  // successful
  uint64_t errors = 0;
  void merge(const HeldStats& other);
};

struct RunStats {
  explicit RunStats(size_t path_count);

  void record_success(size_t path, uint64_t latency_ns);
  void record_error(ErrorKind kind) { errors[static_cast<size_t>(kind)]++; }
  uint64_t error_count(ErrorKind kind) const { return errors[static_cast<size_t>(kind)]; }
  uint64_t errors_total() const;
  void merge(const RunStats& other);

  uint64_t requests = 0;  // successful: 2xx/3xx, or (--connect-only) connections the server ended
  LatencyHistogram latency;
  std::vector<LatencyHistogram> path_latency;  // indexed like PathMix::paths()
  std::array<uint64_t, kErrorKinds> errors{};
  WorkerTally workers;  // every complete response, whatever its status
  HeldStats held;
};

}  // namespace lbd::load
