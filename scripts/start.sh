#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to lbd serving its bundled HTTP app on port 8080
# with one worker per CPU. Needs root (packages, and the BPF steering program).
# Usage: sudo scripts/start.sh [lbd flags...]      e.g. sudo scripts/start.sh --policy rr
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# Only what it runs (lbd, and lbctl to drive it): the tests and benchmarks are scripts/test.sh's.
scripts/build.sh build --target lbd lbctl
# --demo-routes: the bundled app's /work and /sleep, which the README's examples use; a plain lbd
# serves neither (any client could burn a worker's CPU with them).
exec build/lbd --listen 0.0.0.0:8080 --demo-routes "$@"
