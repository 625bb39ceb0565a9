// `lbctl top`: a full-screen dashboard of a running lbd, refreshed every second from the control
// socket's `status` answer (what it shows: top_model.h).
//
//   up/down, j/k   select a worker          d  drain its slot        u  undrain its slot
//   r              rolling reload           p  next policy (rr -> least -> hash)
//   q              quit
//
// When stdout is not a terminal it prints one plain-text snapshot instead (rates measured over
// one second between two status answers) and exits, so `lbctl top | cat` and scripts work.
#pragma once

#include <string>

#include "common/result.h"

namespace lbd::ctl {

struct TopEnd {
  int signal = 0;    // the signal (SIGINT, SIGTERM, SIGHUP) that ended the screen; 0 for `q`
  std::string note;  // for stderr once the screen is gone: an operation still running in lbd
};

// Runs the screen or prints the snapshot. An error (lbd not running, no usable terminal) is the
// one line main() prints; the terminal is restored before this returns, whatever happened.
Result<TopEnd> run_top(const std::string& socket_path);

}  // namespace lbd::ctl
