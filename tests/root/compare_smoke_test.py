#!/usr/bin/env python3
"""bench/compare end to end in a few seconds: lbd bpf rr and the floor server, one short round,
into a scratch folder. Checks that the harness still runs, that every workload produced a
measurement with zero errors from lbd, with both clients (lbload and wrk), and that the report
has its tables, ratios and targets.
The peers (nginx, Node, PM2) are left out: CI has no npm, and their presence is optional anyway.

Usage: compare_smoke_test.py BUILD_DIR     (exit 77 = skipped: not root)
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    build = sys.argv[1]
    if os.geteuid() != 0:
        print("SKIPPED: bench/compare needs root (BPF steering, cgroup CPU accounting)")
        sys.exit(77)
    with tempfile.TemporaryDirectory(prefix="lbd-compare-smoke-") as out:
        cmd = [sys.executable, os.path.join(ROOT, "bench", "compare"), "--build", build, "--out", out,
               "--rounds", "1", "--duration", "1", "--skew-duration", "1", "--skew-rate", "200",
               "--only", "lbd bpf rr,floor server"]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
        print(run.stderr)
        if run.returncode != 0:
            fail(f"bench/compare exited with {run.returncode}")
        with open(os.path.join(out, "compare.json")) as f:
            report = json.load(f)
        expected = ["lbd bpf rr | keep-alive", "lbd bpf rr | keep-alive (wrk)",
                    "lbd bpf rr | new connection", "lbd bpf rr | new connection (wrk)",
                    "lbd bpf rr | skewed", "lbd bpf rr | long-lived",
                    "floor server | new connection", "floor server | new connection (wrk)"]
        for key in expected:
            runs = report["results"].get(key)
            if not runs:
                fail(f"no measurement for {key}")
            r = runs[0]
            if r["requests"] <= 0:
                fail(f"{key}: no requests completed")
            if r["errors_total"] != 0:
                fail(f"{key}: {r['errors_total']} errors: {r['errors']}")
            if not r["server_cpu_us_per_request"] > 0:
                fail(f"{key}: no server CPU accounted ({r['server_cpu_us_per_request']})")
        for workload in ("keep-alive", "keep-alive (wrk)", "long-lived"):
            if f"floor server | {workload}" in report["results"]:
                fail(f"the floor server closes after one answer and must not get the {workload} workload")
        wrk = report["results"]["lbd bpf rr | new connection (wrk)"][0]
        if not 0 < wrk["latency_us"]["p50"] <= wrk["latency_us"]["p99"]:
            fail(f"wrk's latency percentiles were not read: {wrk['latency_us']}")
        skewed = report["results"]["lbd bpf rr | skewed"][0]
        if set(skewed["paths"]) != {"/", "/work?us=5000"}:
            fail(f"skewed workload paths: {sorted(skewed['paths'])}")
        shares = report["results"]["lbd bpf rr | keep-alive"][0]["workers"]
        if sorted(shares) != ["0", "1"]:
            fail(f"keep-alive answers should come from workers 0 and 1: {shares}")
        with open(os.path.join(out, "compare.md")) as f:
            markdown = f.read()
        for needle in ("## keep-alive", "## keep-alive (wrk)", "## new connection",
                       "## new connection (wrk)", "`wrk -t1 -c64", "## skewed CPU work", "## long-lived",
                       "| lbd bpf rr |", "| floor server |", "## targets", "× floor server",
                       "## the load generator's own cost"):
            if needle not in markdown:
                fail(f"compare.md lacks {needle!r}")
    print("bench/compare smoke run: OK")


if __name__ == "__main__":
    main()
