#!/usr/bin/env bash
# Configures and builds lbd into a build directory: everything, or only the targets named.
# Usage: scripts/build.sh [BUILD_DIR] [extra cmake args...] [--target TARGET...]
#   scripts/build.sh build                          # RelWithDebInfo, everything
#   scripts/build.sh build --target lbd lbctl       # only those (scripts/start.sh)
#   scripts/build.sh build-asan -DLBD_SANITIZE=ON   # AddressSanitizer + UBSan
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
shift || true
configure=()
while [ $# -gt 0 ] && [ "$1" != "--target" ]; do
  configure+=("$1")
  shift
done
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${configure[@]}" >/dev/null
cmake --build "$build_dir" -j"$(nproc)" "$@"
