#!/usr/bin/env bash
# Fuzzes what parses untrusted bytes, for a bounded time, with libFuzzer + ASan + UBSan:
#   http_request_fuzz      a worker's request path (RequestParser, the bundled app, the answers)
#   control_request_fuzz   the control protocol as the supervisor and lbctl decode it
#   config_fuzz            the TOML config checker of `lbd start`
#   lbload_response_fuzz   lbload's response parser
# Each target first replays its committed seeds (tests/fuzz/corpus/<target>), then runs for
# SECONDS on a scratch copy of them (new inputs are never written into the repository). Any crash,
# leak, timeout or sanitizer report fails the run and names the reproducer:
#   build-fuzz/tests/fuzz/<target> <reproducer>
# Usage: scripts/fuzz.sh [SECONDS]   (default 45 per target)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-45}
targets=(http_request_fuzz control_request_fuzz config_fuzz lbload_response_fuzz)

CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLBD_FUZZ=ON \
  -DLBD_BUILD_TESTS=OFF -DLBD_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]}"

work=$(mktemp -d /tmp/lbd-fuzz-XXXXXX)
trap 'rm -rf "$work"' EXIT
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# fuzz_one TARGET: its seeds, then SECONDS of fuzzing; its output in $work/TARGET/log. Returns
# non-zero (after saving the reproducers) when it found something.
fuzz_one() {
  local target=$1
  local binary="$PWD/build-fuzz/tests/fuzz/$target"
  mkdir -p "$work/$target/corpus" "$work/$target/artifacts"
  cp tests/fuzz/corpus/"$target"/* "$work/$target/corpus/"
  local log="$work/$target/log"
  rm -f build-fuzz/"$target"-*  # reproducers of an earlier run
  if "$binary" -runs=0 tests/fuzz/corpus/"$target" >"$log" 2>&1 &&
     "$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$work/$target/artifacts/" "$work/$target/corpus" >>"$log" 2>&1; then
    return 0
  fi
  for artifact in "$work/$target/artifacts"/*; do
    [ -e "$artifact" ] || continue
    cp "$artifact" "build-fuzz/$target-$(basename "$artifact")"
  done
  return 1
}

# As many targets at once as there are CPUs, each on one: the same SECONDS each, in less time.
echo "=== fuzz ${targets[*]}: seeds, then ${seconds} s each, $(nproc) at a time ==="
declare -A job_of
for target in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$(nproc)" ]; do wait -n || true; done
  fuzz_one "$target" &
  job_of[$target]=$!
done
failed=0
for target in "${targets[@]}"; do
  log="$work/$target/log"
  if wait "${job_of[$target]}"; then
    echo "$target: $(grep -E "DONE|stat::number_of_executed_units|stat::average_exec_per_sec" "$log" | tr "\n\t" "  ")"
    continue
  fi
  failed=1
  grep -E "ERROR|SUMMARY|runtime error" "$log" | head -5 >&2 || true
  for keep in build-fuzz/"$target"-*; do
    [ -e "$keep" ] || continue
    echo "fuzz: $target failed; reproduce with: $PWD/build-fuzz/tests/fuzz/$target $keep" >&2
    base64 -w0 "$keep" >&2 && echo >&2
  done
  tail -40 "$log" >&2
done
if [ "$failed" -ne 0 ]; then
  echo "fuzzing found a problem (see above)" >&2
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets, ${seconds} s each, nothing found"
