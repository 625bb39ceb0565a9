#!/usr/bin/env python3
"""bench/modes.py: lbd's four --modes side by side with wrk, in one run, interleaved.

What it shows: the same worker code fed by lbd's BPF steering (bpf), the kernel's reuseport hash
(reuseport), one shared listener (shared, classic pre-fork) and a supervisor that accepts and
passes fds (handoff, the Node.js cluster model). For each: req/s, server CPU per request (user +
system time of lbd and all its workers, from /proc, over the measured interval) and how requests
split across workers (from X-Worker).

Needs: root (BPF), wrk, a built lbd (scripts/build.sh). Linux >= 6.0.
Usage:  sudo bench/modes.py [--rounds 3] [--duration 10] [--workers 2] [--no-pin] [--lbd build/lbd]
Machines are noisy: every round runs every mode once, rounds are interleaved, and the table shows
the median with min-max.
"""
import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

MODES = ["bpf", "reuseport", "shared", "handoff"]
WORKLOADS = {
    "keep-alive": [],
    "new connection": ["-H", "Connection: close"],
}
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Counts responses per X-Worker value; wrk prints the tally at the end.
WRK_LUA = r"""
counts = {}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body)
  local w = headers["X-Worker"] or "?"
  counts[w] = (counts[w] or 0) + 1
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for w, n in pairs(c) do io.write(string.format("worker %s %d\n", w, n)) end
  end
end
"""


def process_cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def lbd_pids(supervisor_pid):
    out = subprocess.run(["pgrep", "-P", str(supervisor_pid)], capture_output=True, text=True).stdout
    return [supervisor_pid] + [int(p) for p in out.split()]


class Lbd:
    def __init__(self, binary, mode, workers, pin):
        self.log = tempfile.NamedTemporaryFile(prefix=f"lbd-{mode}-", suffix=".log", delete=False)
        args = [binary, "--mode", mode, "--workers", str(workers), "--listen", "127.0.0.1:0",
                "--log-level", "info"]
        if not pin:
            args.append("--no-pin")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        self.port = self._wait_ready()

    def _wait_ready(self, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log.name) as f:
                m = re.search(r"ready: \d+ workers serving 127\.0\.0\.1:(\d+)", f.read())
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        sys.exit(f"lbd did not become ready; log: {self.log.name}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_wrk(port, duration, extra, lua_path):
    cmd = ["wrk", "-t1", "-c64", f"-d{duration}s", "-s", lua_path, *extra, f"http://127.0.0.1:{port}/"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    per_worker = {int(w): int(n) for w, n in re.findall(r"worker (\d+) (\d+)", out)}
    return rps, total, per_worker, (errors.group(1) if errors else ""), int(non2xx.group(1)) if non2xx else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--lbd", default=os.path.join(os.path.dirname(__file__), "..", "build", "lbd"))
    ap.add_argument("--modes", default=",".join(MODES))
    args = ap.parse_args()
    modes = args.modes.split(",")

    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(WRK_LUA)
    results = {(m, w): [] for m in modes for w in WORKLOADS}
    for r in range(args.rounds):
        for mode in modes:
            for workload, extra in WORKLOADS.items():
                lbd = Lbd(args.lbd, mode, args.workers, not args.no_pin)
                try:
                    pids = lbd_pids(lbd.proc.pid)
                    before = process_cpu_ticks(pids)
                    rps, total, per_worker, errors, non2xx = run_wrk(lbd.port, args.duration, extra, lua.name)
                    cpu_s = (process_cpu_ticks(pids) - before) / CLK_TCK
                finally:
                    lbd.stop()
                us_per_req = cpu_s * 1e6 / total if total else float("nan")
                shares = [per_worker.get(i, 0) / max(1, sum(per_worker.values())) for i in range(args.workers)]
                results[(mode, workload)].append((rps, us_per_req, shares))
                print(f"round {r + 1} {mode:9} {workload:14} {rps:10.0f} req/s {us_per_req:6.1f} us/req "
                      f"shares {' '.join(f'{s:.0%}' for s in shares)} {errors} non2xx={non2xx}",
                      flush=True)

    def fmt(values, unit_format):
        med = statistics.median(values)
        return f"{unit_format(med)} ({unit_format(min(values))}–{unit_format(max(values))})"

    print()
    print(f"{args.workers} workers, wrk -t1 -c64 -d{args.duration}s, {args.rounds} rounds, "
          f"{'not pinned' if args.no_pin else 'pinned'}; median (min–max)")
    print()
    for workload in WORKLOADS:
        base = statistics.median(r[0] for r in results[(modes[0], workload)])
        print(f"**{workload}**\n")
        print(f"| mode | req/s | ÷ {modes[0]} | server CPU µs/req | worker shares |")
        print("|---|---|---|---|---|")
        for mode in modes:
            rows = results[(mode, workload)]
            rps = [r[0] for r in rows]
            cpu = [r[1] for r in rows]
            shares = [statistics.median(r[2][i] for r in rows) for i in range(args.workers)]
            print(f"| {mode} | {fmt(rps, lambda v: f'{v:,.0f}')} | {statistics.median(rps) / base:.2f} | "
                  f"{fmt(cpu, lambda v: f'{v:.1f}')} | {' / '.join(f'{s:.0%}' for s in shares)} |")
        print()


if __name__ == "__main__":
    main()
