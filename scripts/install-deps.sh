#!/usr/bin/env bash
# Installs everything lbd needs to build, test and benchmark, from Debian 12's own packages.
# Usage: sudo scripts/install-deps.sh           build and test
#        sudo scripts/install-deps.sh --bench   also the peers bench/compare runs lbd against
set -euo pipefail

packages=(
  # build
  cmake make g++ pkg-config clang llvm
  dpkg-dev               # dpkg-shlibdeps: the Depends of the .deb cpack builds
  libbpf-dev bpftool liburing-dev
  libseccomp-dev         # the steering guard every worker and program runs under
  linux-libc-dev         # <linux/bpf.h>: the steering program's only kernel header (no BTF needed)
  libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev
  node-llhttp            # Node.js's HTTP parser, as C sources (/usr/share/llhttp)
  libncurses-dev         # lbctl top's screen
  libtomlplusplus-dev    # the config file of `lbd start` (TOML, toml++)
  # tests and benchmarks
  googletest libgtest-dev libbenchmark-dev
  wrk curl procps iproute2
  python3                # bench/compare and its smoke test
  python3-yaml           # the Kubernetes example's test reads its manifests
  prometheus             # promtool and a real Prometheus for the /metrics tests
  tmux                   # a real terminal for lbctl top's test
  gunicorn               # a real third-party server run by `lbd run` (exec_test)
  redis-server           # the session store of examples/sessions (its test starts its own)
  systemd                # systemd-analyze verify, for the unit `lbd startup` prints
  libclang-rt-14-dev     # libFuzzer and clang's sanitizer runtimes (scripts/fuzz.sh)
)
# Node.js and npm: node programs run by `lbd run` in the tests, the examples' npm packages (into
# /var/tmp/lbd-examples), and the Node cluster and PM2 peers of bench/compare. A Node.js from
# elsewhere (with its own npm) is kept: Debian's npm would not install beside it.
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)
if [ "${1:-}" = "--bench" ]; then
  packages+=(nginx-light gnuplot-nox)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: need root to install: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q || echo "install-deps: apt-get update failed; trying with the package lists we have" >&2
apt-get install -y -q --no-install-recommends "${missing[@]}"
# Debian's prometheus and redis-server packages enable and start their own services (on :9090 and
# :6379); the tests start their own instances, so do not leave one running that this script
# started: under systemd, or under the init scripts of a machine without it.
stop_service() {
  if command -v systemctl >/dev/null && systemctl disable --now "$1" >/dev/null 2>&1; then
    return
  fi
  if [ -x "/etc/init.d/$1" ]; then
    "/etc/init.d/$1" stop >/dev/null 2>&1 || true
    command -v update-rc.d >/dev/null && update-rc.d "$1" disable >/dev/null 2>&1 || true
  fi
}
for service in prometheus redis-server; do
  if [[ " ${missing[*]} " == *" $service "* ]]; then stop_service "$service"; fi
done
