// The value parsers every way of configuring lbd shares: the command line (config/options.cpp),
// the config file (config/app_config.cpp) and live requests on the control socket
// (supervisor/control_verbs.cpp), so a value means the same wherever it is written.
//
// None throws (a live `lbctl policy` must not): each returns the value, or an Error whose message
// says what is wrong with the text, without naming a flag or key (the caller knows which it read
// and says so: "--cpus: range '3-1' is backwards", "lbd.toml:5: key 'cpus': ...").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "net/address.h"
#include "steering/steering.h"

namespace lbd {

// How connections reach the workers. All but `bpf` exist to compare lbd against the classic
// designs with the same worker code (bench/).
enum class Mode {
  kBpf,        // per-worker listeners in a reuseport group, steered by lbd's BPF program
  kReuseport,  // per-worker listeners, the kernel's hash picks (nginx `reuseport`)
  kShared,     // one listener inherited by every worker (classic pre-fork accept)
  kHandoff,    // the supervisor accepts and passes each connection over a Unix socket (Node.js
               // cluster's default)
};
const char* mode_name(Mode mode);
Result<Mode> parse_mode(std::string_view text);

// "rr", "least", "hash" or "sticky".
Result<Policy> parse_policy(std::string_view text);

// "0-3,6" -> {0,1,2,3,6}, sorted, without repeats.
Result<std::vector<int>> parse_cpu_list(std::string_view text);
// The CPUs this process may run on.
std::vector<int> allowed_cpus();

// "512M" -> 536870912: a whole number of bytes with an optional K, M, G or T suffix (powers of
// 1024, either case, optionally followed by B or iB: "512MB", "1GiB"). Must be more than 0.
Result<uint64_t> parse_size(std::string_view text);
// The shortest exact spelling parse_size reads back: 536870912 -> "512M", 1000 -> "1000".
std::string format_size(uint64_t bytes);

// A listen address (net/address.h): "0.0.0.0:8080", "[::]:8080", ":8080", "8080".
Result<net::Address> parse_address(std::string_view text);

}  // namespace lbd
