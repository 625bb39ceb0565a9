// Passing file descriptors between processes over a Unix socket (SCM_RIGHTS). Used by
// `--mode handoff`, where the supervisor accepts and hands each connection to a worker.
#pragma once

#include "common/result.h"
#include "common/unique_fd.h"

namespace lbd::net {

// Sends `fd` as one message. Non-blocking if the socket is: EAGAIN is returned as an error the
// caller can test with `error().code() == std::errc::resource_unavailable_try_again`.
Result<void> send_fd(int unix_socket, int fd);

// Receives one fd sent by send_fd(). An orderly shutdown of the peer yields an invalid UniqueFd.
Result<UniqueFd> receive_fd(int unix_socket);

}  // namespace lbd::net
