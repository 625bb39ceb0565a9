#!/usr/bin/env bash
# Configures and builds lbd into a build directory.
# Usage: scripts/build.sh [BUILD_DIR] [extra cmake args...]
#   scripts/build.sh build                          # RelWithDebInfo
#   scripts/build.sh build-asan -DLBD_SANITIZE=ON   # AddressSanitizer + UBSan
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
shift || true
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$build_dir" -j"$(nproc)"
