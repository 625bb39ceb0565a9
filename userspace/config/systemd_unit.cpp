#include "config/systemd_unit.h"

namespace lbd {

std::string unit_name(const std::string& app) { return app == "lbd" ? "lbd.service" : "lbd-" + app + ".service"; }

std::string systemd_word(const std::string& word) {
  std::string escaped;
  bool quote = word.empty();
  for (char c : word) {
    switch (c) {
      case '%': escaped += "%%"; break;    // a specifier otherwise
      case '$': escaped += "$$"; break;    // an environment variable otherwise
      case '\\': escaped += "\\\\"; quote = true; break;
      case '"': escaped += "\\\""; quote = true; break;
      case ' ': case '\t': case '\'': case ';': escaped += c; quote = true; break;
      case '\n': escaped += "\\n"; quote = true; break;
      default: escaped += c;
    }
  }
  return quote ? "\"" + escaped + "\"" : escaped;
}

std::string systemd_unit(const UnitOptions& o) {
  std::string exec_start = systemd_word(o.lbd_path);
  for (const auto& arg : o.lbd_args) exec_start += " " + systemd_word(arg);
  std::string writable = "/run/lbd /var/log/lbd /sys/fs/bpf";
  for (const auto& path : o.writable) writable += " " + systemd_word(path);

  std::string unit;
  unit += "# " + unit_name(o.app) + ", printed by `lbd startup` for:\n";
  unit += "#   lbd";
  for (const auto& arg : o.lbd_args) unit += " " + arg;
  unit += "\n# Install: save as /etc/systemd/system/" + unit_name(o.app) + ", then\n";
  unit += "#   systemctl daemon-reload && systemctl enable --now " + unit_name(o.app) + "\n";
  unit += R"([Unit]
Description=lbd )" + (o.app == "lbd" ? std::string("(one port, every core, steered in the kernel)") : "app " + o.app) + R"(
After=network-online.target
Wants=network-online.target

[Service]
# lbd says READY=1 once every worker serves. `lbctl upgrade` (or SIGUSR2) starts a successor that
# tells systemd its own pid (MAINPID=) before the old lbd exits: hence NotifyAccess=all.
Type=notify
NotifyAccess=all
ExecStart=)" + exec_start + R"(
ExecReload=)" + o.exec_reload + R"(
WorkingDirectory=)" + systemd_word(o.working_directory) + R"(
# After a crash lbd comes back and takes its still-serving workers over: only lbd itself is
# signalled, on stop too (it stops its workers gracefully, within --shutdown-timeout).
Restart=always
RestartSec=1
KillMode=process
TimeoutStopSec=)" + std::to_string(o.stop_timeout_s) + R"(
# The control socket, the state record and the steering maps' pins must outlive a restart.
RuntimeDirectory=lbd
RuntimeDirectoryPreserve=yes
LogsDirectory=lbd
LimitNOFILE=1048576

# What the supervisor needs: loading and attaching the steering program (CAP_BPF, CAP_PERFMON: the
# verifier refuses it without, CAP_NET_ADMIN), ports below 1024, starting its workers and programs
# as --user with no capabilities (CAP_SETUID, CAP_SETGID, CAP_SETPCAP), giving their group the log
# and notify sockets (CAP_CHOWN), and signalling, inspecting and taking over processes of that user
# (CAP_KILL, CAP_SYS_PTRACE))" + (o.runs_program ? std::string("; reading a program's /proc/PID/fd, to count its connections\n# (CAP_DAC_READ_SEARCH)") : std::string()) + R"(. Its workers and programs keep none of them (tests/root/
# systemd_unit_test.cpp runs lbd with exactly these, through a reload, an upgrade and a takeover).
CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_SETUID CAP_SETGID CAP_SETPCAP CAP_CHOWN CAP_KILL CAP_SYS_PTRACE)" +
       (o.runs_program ? " CAP_DAC_READ_SEARCH" : "") + R"(
AmbientCapabilities=
NoNewPrivileges=yes
# )" + (o.runs_program ? std::string("A program may write where it lives: /usr, /boot and /etc alone are read-only.")
                        : std::string("lbd writes nothing but what ReadWritePaths names.")) +
       R"(
ProtectSystem=)" + (o.runs_program ? "full" : "strict") + R"(
ReadWritePaths=)" + writable + R"(
ProtectHome=read-only
PrivateTmp=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
)";
  return unit;
}

}  // namespace lbd
