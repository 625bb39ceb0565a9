#!/usr/bin/env python3
"""bench/compare end to end in a few seconds: lbd bpf rr and the null server, one short round,
into a scratch folder. Checks that the harness still runs, that every workload produced a
measurement with zero errors from lbd, and that the report has its tables, ratios and targets.
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
               "--only", "lbd bpf rr,null server"]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
        print(run.stderr)
        if run.returncode != 0:
            fail(f"bench/compare exited with {run.returncode}")
        with open(os.path.join(out, "compare.json")) as f:
            report = json.load(f)
        expected = ["lbd bpf rr | keep-alive", "lbd bpf rr | new connection", "lbd bpf rr | skewed",
                    "lbd bpf rr | long-lived", "null server | new connection"]
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
        if "null server | keep-alive" in report["results"]:
            fail("the null server does not speak HTTP and must not get the keep-alive workload")
        skewed = report["results"]["lbd bpf rr | skewed"][0]
        if set(skewed["paths"]) != {"/", "/work?us=5000"}:
            fail(f"skewed workload paths: {sorted(skewed['paths'])}")
        shares = report["results"]["lbd bpf rr | keep-alive"][0]["workers"]
        if sorted(shares) != ["0", "1"]:
            fail(f"keep-alive answers should come from workers 0 and 1: {shares}")
        with open(os.path.join(out, "compare.md")) as f:
            markdown = f.read()
        for needle in ("## keep-alive", "## new connection", "## skewed CPU work", "## long-lived",
                       "| lbd bpf rr |", "| null server |", "## targets",
                       "## the load generator's own cost"):
            if needle not in markdown:
                fail(f"compare.md lacks {needle!r}")
    print("bench/compare smoke run: OK")


if __name__ == "__main__":
    main()
