// systemd's notify protocol (Type=notify): "READY=1" once every worker serves, "STOPPING=1" on
// stop, "RELOADING=1" while reloading. A no-op when NOTIFY_SOCKET is not set.
#pragma once

namespace lbd {

void notify_service_manager(const char* message);

}  // namespace lbd
