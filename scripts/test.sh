#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to the whole test suite: installs packages, builds
# lbd twice (normal, and with AddressSanitizer + UndefinedBehaviorSanitizer), runs every test
# tier in both builds, then fuzzes the parsers of untrusted bytes for a bounded time. Run as root
# so the root-labelled tests (BPF) run instead of skipping.
# Usage: sudo scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# step NAME COMMAND...: runs it, then says how long it took (where CI's time goes).
step() {
  local name=$1 started=$SECONDS
  shift
  "$@"
  echo "test.sh: $name took $((SECONDS - started)) s"
}
step "installing packages" scripts/install-deps.sh

# As root, the tests run workers and programs as nobody, which must reach the build and the test
# fixtures. A clone nobody can reach (under /root, say) is tested from a copy that it can.
if [ "$(id -u)" -eq 0 ] && [ -z "${LBD_TEST_COPY:-}" ] &&
   ! setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups test -r "$PWD/README.md"; then
  copy=$(mktemp -d /var/tmp/lbd-test-XXXXXX)
  chmod 755 "$copy"
  echo "test.sh: user nobody cannot reach $PWD, where the tests run programs as nobody; testing a copy in $copy"
  cp -a . "$copy/"
  cd "$copy"
  LBD_TEST_COPY=1 exec scripts/test.sh "$@"
fi

# Under CI, as root, a skipped test fails the run unless tests/skips-allowed.txt names it with its
# reason: ctest counts a skip as a pass, and a feature whose test skips is not tested.
strict_skips=""
if [ "${CI:-}" = true ] && [ "$(id -u)" -eq 0 ]; then strict_skips="--strict"; fi

# run_suite DIR [ctest arguments...]: every test in DIR, as many at once as there are CPUs (most
# of a test's time is waiting on lbd; the few whose timing is their point are RUN_SERIAL, see
# tests/CMakeLists.txt); then the count and names of the skipped ones.
run_suite() {
  local dir=$1
  shift
  echo "=== tests in $dir ==="
  local status=0
  (cd "$dir" && ctest --output-on-failure --timeout 300 -j"$(nproc)" --output-junit "$PWD/junit.xml" "$@") ||
    status=$?
  scripts/skipped_tests.py $strict_skips "$dir/junit.xml" tests/skips-allowed.txt || status=1
  return "$status"
}

# Line tables only (-g1): enough for a backtrace, and a fifth less compile time than full debug
# information; the build is most of this script's time. CI does not build the micro-benchmarks
# (bench/micro): they measure, they do not test, and they cost a minute of its time.
bench=ON
if [ "${CI:-}" = true ]; then bench=OFF; fi
step "the build" scripts/build.sh build -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" -DLBD_BUILD_BENCH=$bench
step "its tests" run_suite build

# Sanitizers: every lbd process the tests start (supervisor and workers) is instrumented. A
# report from any of them is written under build-asan/sanitizer/ and fails the run, even when
# the test itself passed (a worker that crashed is restarted, which a test might not notice).
# The micro-benchmarks measure speed, which a sanitizer build does not have: not built there; and
# the tests of measuring tools (label harness: bench/compare, lbload's rates, the soak) are not
# run again there: they test the harness, and the first run did.
# Built with clang: the same sanitizers, a third less compile time than g++ with them (the
# sanitizer build was CI's longest step), and a second compiler's warnings and checks.
step "the sanitizer build" scripts/build.sh build-asan -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DLBD_SANITIZE=ON -DLBD_BUILD_BENCH=OFF
reports="$PWD/build-asan/sanitizer"
rm -rf "$reports" && mkdir -p "$reports"
chmod 1777 "$reports"  # workers and programs run as nobody: their reports must land here too
export ASAN_OPTIONS="log_path=$reports/asan:detect_leaks=1:abort_on_error=0"
export UBSAN_OPTIONS="log_path=$reports/ubsan:print_stacktrace=1:halt_on_error=1"
step "its tests" run_suite build-asan -LE harness
if compgen -G "$reports/*" >/dev/null; then
  echo "sanitizer reports:" >&2
  cat "$reports"/* >&2
  exit 1
fi

# Fuzzing, bounded: each libFuzzer target for LBD_FUZZ_SECONDS (45 by default).
step "fuzzing" scripts/fuzz.sh "${LBD_FUZZ_SECONDS:-45}"
echo "all tests passed (normal and sanitizer builds, fuzzing) in $SECONDS s"
