// systemd's notify protocol (Type=notify): "READY=1" once every worker serves, "STOPPING=1" on
// stop, "RELOADING=1" while reloading. A no-op when NOTIFY_SOCKET is not set.
#pragma once

#include <string>

#include "common/result.h"
#include "common/unique_fd.h"

namespace lbd {

void notify_service_manager(const char* message);

// The other end, for lbd's own children (exec-mode programs, `lbd start`'s app supervisors): a
// non-blocking datagram socket bound to @name in the abstract namespace (no file to clean up),
// with SO_PASSCRED so each message says which process sent it. Their NOTIFY_SOCKET is "@name".
Result<UniqueFd> notify_listener(const std::string& name);

}  // namespace lbd
