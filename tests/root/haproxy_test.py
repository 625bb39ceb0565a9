#!/usr/bin/env python3
"""lbd hosts behind HAProxy: three lbd hosts, each in a network namespace of its own, behind one
HAProxy configured from examples/haproxy/haproxy.cfg (the file itself, with this test's
addresses, shorter intervals and `retries 0`), loaded by wrk through HAProxy:

  a. one whole host drained (lbctl drain --all --wait) and brought back under load: no request
     fails, with a balancer that never retries, and the host gets traffic again; then the same
     drain with --drain-grace 0, its failed requests reported (what the grace is for);
  b. tools/rollout across the three hosts under load: no request fails and every worker is new;
     a rollout whose change fails on host 2 stops there (exit 1), host 2 drained, host 3 untouched;
  c. host 1 made busy by load sent straight to it: its agent weight drops and HAProxy sends it a
     smaller share of new connections; the weight and the share come back when the load ends;
  d. kill -9 of host 2's lbd and workers under load: HAProxy stops sending to it within its check
     interval and nothing fails after that; the failed requests are counted (reported, not
     asserted) with retries 0, then without agent-check, then without `observe layer4`, and
     with the shipped retries and redispatch.

Topology (all made here, removed in `finally`; nothing in the root network namespace):
  lbdh<pid>-f   the front: HAProxy on 127.0.0.1:8000, wrk, and this test process itself
  lbdh<pid>-N   host N (1..3): lbd on 0.0.0.0:8080, admin 0.0.0.0:9180, agent 0.0.0.0:9181,
                reached from the front over a veth pair, 10.213.N.1 (front) <-> 10.213.N.2 (host)

Usage: haproxy_test.py BUILD_DIR [a|b|c|d]...   (exit 77 = skipped: not root, or haproxy or wrk
                                                missing; naming scenarios runs only those)
       haproxy_test.py --server-up STATS_SOCKET SERVER   (exit 0 when HAProxy has SERVER UP;
                                                        tools/rollout's --wait-cmd here)
"""
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG_TEMPLATE = os.path.join(ROOT, "examples", "haproxy", "haproxy.cfg")
ROLLOUT = os.path.join(ROOT, "tools", "rollout")

# Fixed ports are safe here, unlike in the other tests: every address below lives only in this
# test's own network namespaces, so nothing else on the machine can hold or take these ports.
SERVICE_PORT = 8080
ADMIN_PORT = 9180
AGENT_PORT = 9181
FRONT_PORT = 8000
HOSTS = 3

# HAProxy's intervals for the test (the config ships inter 2s, agent-inter 1s, slowstart 10s).
INTER = "500ms"
FASTINTER = "250ms"
AGENT_INTER = "500ms"
SLOWSTART = "2s"
# How long after a kill -9 HAProxy may take to stop sending to the host: with the checks alone,
# the check in progress (inter, 0.5 s) plus `fall 2` at fastinter (2 x 0.25 s), plus slack for a
# loaded 2-CPU machine.
CHECK_DETECTION_S = 0.5 + 2 * 0.25 + 1.5

CLONE_NEWNET = 0x40000000


class TestFailure(Exception):
    pass


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def log(message):
    print(message, flush=True)


def wait_for(condition, timeout, what, interval=0.05):
    """Polls `condition` until it returns something truthy (returned) or `timeout` s pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TestFailure(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def read_until_closed(sock):
    """Everything the peer sends until it closes (an agent's line, HAProxy's stats)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def run(cmd, check=True, timeout=30, **kw):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and result.returncode != 0:
        raise TestFailure(f"{' '.join(cmd)} exited with {result.returncode}: {result.stderr.strip()}")
    return result


# --- network namespaces ----------------------------------------------------------------------

libc = ctypes.CDLL(None, use_errno=True)


def setns(fd):
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class Topology:
    """The front namespace and one per host, linked by veth pairs. This process moves itself
    into the front namespace (its main thread; it starts no threads), so HAProxy and wrk started
    from here run there, and its own sockets (agent checks) connect from there."""

    def __init__(self):
        self.prefix = f"lbdh{os.getpid()}"
        self.front = f"{self.prefix}-f"
        self.hosts = [f"{self.prefix}-{i}" for i in range(1, HOSTS + 1)]
        self.made = []
        self.original_netns = None

    @staticmethod
    def host_addr(i):
        return f"10.213.{i}.2"

    def create(self):
        for ns in [self.front] + self.hosts:
            run(["ip", "netns", "add", ns])
            self.made.append(ns)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        for i, ns in enumerate(self.hosts, start=1):
            # Made in the front namespace with its peer straight in the host's: the pair never
            # exists in the root namespace.
            run(["ip", "-n", self.front, "link", "add", f"h{i}", "type", "veth", "peer", "name", "front",
                 "netns", ns])
            run(["ip", "-n", self.front, "addr", "add", f"10.213.{i}.1/30", "dev", f"h{i}"])
            run(["ip", "-n", ns, "addr", "add", f"{self.host_addr(i)}/30", "dev", "front"])
            run(["ip", "-n", self.front, "link", "set", f"h{i}", "up"])
            run(["ip", "-n", ns, "link", "set", "front", "up"])
        self.original_netns = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        fd = os.open(f"/run/netns/{self.front}", os.O_RDONLY)
        try:
            setns(fd)
        finally:
            os.close(fd)

    def destroy(self):
        if self.original_netns is not None:
            setns(self.original_netns)
            os.close(self.original_netns)
            self.original_netns = None
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.made = []


# --- lbd hosts ---------------------------------------------------------------------------------

def steering_pin_dir(record_path):
    """Where lbd pins its steering maps for the state record at `record_path` (state_record.cpp:
    FNV-1a of the path): removed at teardown in case an lbd was killed and not restarted."""
    h = 14695981039346656037
    for c in record_path.encode():
        h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return f"/sys/fs/bpf/lbd-{h:016x}"


def process_identity(pid):
    """(pid, start time) while `pid` runs and is not a zombie, else None: with the start time, a
    pid names one process for good, so a reused pid is never signalled."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else (pid, fields[19])


class Host:
    def __init__(self, index, netns, build, tmp):
        self.index = index
        self.name = f"host{index}"
        self.netns = netns
        self.addr = Topology.host_addr(index)
        self.build = build
        self.control = os.path.join(tmp, f"{self.name}.sock")
        self.log_path = os.path.join(tmp, f"{self.name}.log")
        self.proc = None
        self.starts = 0

    def lbctl(self, *args, check=True, timeout=60):
        return run([os.path.join(self.build, "lbctl"), "--control", self.control, *args], check=check,
                   timeout=timeout)

    def start(self, extra=()):
        cmd = ["nsenter", f"--net=/run/netns/{self.netns}", os.path.join(self.build, "lbd"),
               "--workers", "2", "--demo-routes", "--listen", f"0.0.0.0:{SERVICE_PORT}",
               "--admin", f"0.0.0.0:{ADMIN_PORT}", "--agent", f"0.0.0.0:{AGENT_PORT}",
               "--control", self.control, *extra]
        self.starts += 1
        out = open(self.log_path, "a")
        out.write(f"--- start {self.starts}: {' '.join(cmd)}\n")
        out.flush()
        # nsenter, not `ip netns exec`: that one also unshares the mount namespace and mounts a
        # fresh sysfs on /sys, which hides the BPF filesystem at /sys/fs/bpf where lbd pins its
        # steering maps (seen: an empty, non-bpf /sys/fs/bpf inside it). nsenter --net changes
        # the network namespace only, and execs lbd: self.proc.pid is lbd's.
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self.wait_active()

    def status(self):
        result = self.lbctl("status", "--json", check=False, timeout=10)
        if result.returncode != 0:
            return None
        return json.loads(result.stdout)

    def all_active(self):
        s = self.status()
        if not s or not s["workers"] or s["lbd"].get("operation"):
            return None
        return s if all(w["state"] == "active" for w in s["workers"]) else None

    def wait_active(self, timeout=30):
        def check():
            if self.proc and self.proc.poll() is not None and self.proc.returncode != 0:
                raise TestFailure(f"{self.name}'s lbd exited with {self.proc.returncode}:\n{self.log_tail()}")
            return self.all_active()
        return wait_for(check, timeout, f"{self.name}'s workers to be active")

    def worker_pids(self):
        s = self.status()
        return {w["pid"] for w in s["workers"] if w.get("pid")}

    def states(self):
        s = self.status()
        return [w["state"] for w in s["workers"]]

    def lbd_pid(self):
        s = self.status()
        return s["lbd"]["pid"] if s else None

    def agent_says(self):
        """One agent check, as HAProxy makes it: connect, read a line, the agent closes."""
        with socket.create_connection((self.addr, AGENT_PORT), timeout=2) as s:
            return read_until_closed(s).decode().strip()

    def kill9(self):
        """lbd and its workers, all at once (SIGKILL to each pid, lbd first)."""
        pids = [self.lbd_pid()] + sorted(self.worker_pids())
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        if self.proc:
            self.proc.wait(timeout=10)
        return pids

    def stop_begin(self):
        """SIGTERM: a graceful stop (with --agent, lbd first tells the balancer, so HAProxy should
        still run). stop_end() waits for it; the hosts stop side by side."""
        self.stopping = []
        try:
            s = self.status()
            if s:
                pids = [s["lbd"]["pid"]] + [w["pid"] for w in s["workers"] if w.get("pid")]
                self.stopping = [p for p in map(process_identity, pids) if p]
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
        elif self.stopping:
            # After an upgrade, lbd is not our child any more: its pid comes from the status.
            os.kill(self.stopping[0][0], signal.SIGTERM)

    def stop_end(self):
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        deadline = time.monotonic() + 20
        for identity in getattr(self, "stopping", []):
            while time.monotonic() < deadline and process_identity(identity[0]) == identity:
                time.sleep(0.05)
            if process_identity(identity[0]) == identity:
                os.kill(identity[0], signal.SIGKILL)
        record = self.control[:-len(".sock")] + ".state"
        shutil.rmtree(steering_pin_dir(record), ignore_errors=True)

    def restart(self, extra):
        self.stop_begin()
        self.stop_end()
        self.start(extra)

    def log_size(self):
        return os.path.getsize(self.log_path)

    def log_since(self, offset, pattern):
        with open(self.log_path) as f:
            f.seek(offset)
            return [line.rstrip() for line in f if re.search(pattern, line)]

    def log_tail(self, lines=15):
        return tail(self.log_path, lines)


def tail(path, lines=15):
    try:
        with open(path) as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


# --- HAProxy -------------------------------------------------------------------------------------

def substitute(text, pattern, replacement, count=1):
    """re.sub that insists the template still says what the test overrides."""
    new, n = re.subn(pattern, replacement, text, flags=re.M)
    if n != count:
        raise TestFailure(f"examples/haproxy/haproxy.cfg: expected {count} match(es) of {pattern!r}, found {n}")
    return new


def haproxy_config(stats_socket, agent_check=True, observe=True, retries=False):
    """examples/haproxy/haproxy.cfg with this test's addresses, ports and intervals, and with the
    overrides named here; nothing else changes."""
    with open(CONFIG_TEMPLATE) as f:
        text = f.read()
    text = substitute(text, r"^(\s*)log /dev/log local0$", r"\1# (the test: no syslog)")
    text = substitute(text, r"^(\s*)stats socket \S+", rf"\1stats socket {stats_socket}")
    text = substitute(text, r"^(\s*)bind :80$", rf"\1bind 127.0.0.1:{FRONT_PORT}")
    # No retry and no redispatch: what the test shows must hold with a balancer that never retries
    # (the shipped config retries, for crashes).
    if not retries:
        text = substitute(text, r"^(\s*)retries \d+$", r"\1retries 0")
        text = substitute(text, r"^(\s*)option redispatch.*$", r"\1no option redispatch")
    # The default-server line: ports and intervals.
    text = substitute(text, r"(default-server .*)check port \d+", rf"\1check port {ADMIN_PORT}")
    text = substitute(text, r"(default-server .*) inter \S+", rf"\1 inter {INTER}")
    text = substitute(text, r"(default-server .*) fastinter \S+", rf"\1 fastinter {FASTINTER}")
    text = substitute(text, r"(default-server .*) agent-port \d+", rf"\1 agent-port {AGENT_PORT}")
    text = substitute(text, r"(default-server .*) agent-inter \S+", rf"\1 agent-inter {AGENT_INTER}")
    text = substitute(text, r"(default-server .*) slowstart \S+", rf"\1 slowstart {SLOWSTART}")
    if not agent_check:
        text = substitute(text, r"(default-server .*) agent-check agent-port \d+ agent-inter \S+", r"\1")
    if not observe:
        text = substitute(text, r"(default-server .*) observe layer4 error-limit \d+ on-error mark-down", r"\1")
    # The three servers: this test's hosts.
    for i in range(1, HOSTS + 1):
        text = substitute(text, rf"^(\s*)server host{i} \S+$",
                          rf"\1server host{i} {Topology.host_addr(i)}:{SERVICE_PORT}")
    return text


def haproxy_stat(stats_socket):
    """`show stat` over the runtime API: {server name: {field: value}} for backend lbd."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(stats_socket)
        s.sendall(b"show stat\n")
        data = read_until_closed(s)
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    servers = {}
    for line in lines[1:]:
        if not line:
            continue
        row = dict(zip(header, line.split(",")))
        if row.get("pxname") == "lbd" and row.get("svname") not in ("BACKEND", "FRONTEND"):
            servers[row["svname"]] = row
    return servers


class HAProxy:
    def __init__(self, tmp):
        self.tmp = tmp
        self.stats_socket = os.path.join(tmp, "haproxy.sock")
        self.proc = None
        self.config_path = None
        self.log_path = os.path.join(tmp, "haproxy.log")

    def start(self, name, config_text):
        self.config_path = os.path.join(self.tmp, f"haproxy-{name}.cfg")
        with open(self.config_path, "w") as f:
            f.write(config_text)
        run(["haproxy", "-c", "-q", "-f", self.config_path])
        if os.path.exists(self.stats_socket):
            os.unlink(self.stats_socket)
        out = open(self.log_path, "a")
        # -db: stay in the foreground, our child; this process is in the front namespace.
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", self.config_path], stdout=out,
                                     stderr=subprocess.STDOUT)
        out.close()
        self.wait_all_up()

    def stat(self):
        return haproxy_stat(self.stats_socket)

    def wait_all_up(self, timeout=20):
        def check():
            if self.proc.poll() is not None:
                raise TestFailure(f"haproxy exited with {self.proc.returncode}")
            try:
                servers = self.stat()
            except OSError:
                return None
            return servers if len(servers) == HOSTS and all(s["status"] == "UP" for s in servers.values()) \
                else None
        return wait_for(check, timeout, "HAProxy to have every host UP")

    def status_of(self, server):
        return self.stat()[server]["status"]

    def wait_status(self, server, predicate, timeout, what):
        return wait_for(lambda: predicate(self.status_of(server)), timeout, f"HAProxy: {server} {what}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


# --- load --------------------------------------------------------------------------------------

class Wrk:
    """wrk through HAProxy (or at an address), bounded by -d; stop() ends it early (SIGINT: wrk
    prints its summary) and parses the result."""

    def __init__(self, label, url, duration, connections, close=False):
        self.label = label
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s", "--latency"]
        if close:
            cmd += ["-H", "Connection: close"]
        cmd.append(url)
        self.cmd = cmd
        self.duration = duration
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.result = None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.wait()

    def wait(self):
        if self.result:
            return self.result
        out, _ = self.proc.communicate(timeout=self.duration + 15)
        self.result = parse_wrk(out, self.label)
        return self.result


def parse_wrk(out, label):
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if not m:
        raise TestFailure(f"wrk ({label}) printed no summary:\n{out}")
    seconds = float(m.group(2)) * {"ms": 0.001, "s": 1, "m": 60}.get(m.group(3), 1)
    r = {"label": label, "requests": int(m.group(1)), "seconds": seconds, "non2xx": 0,
         "connect": 0, "read": 0, "write": 0, "timeout": 0, "output": out}
    s = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if s:
        r.update(connect=int(s.group(1)), read=int(s.group(2)), write=int(s.group(3)), timeout=int(s.group(4)))
    n = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if n:
        r["non2xx"] = int(n.group(1))
    r["failed"] = r["non2xx"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
    return r


def describe(r):
    return (f"{r['label']}: {r['requests']} requests in {r['seconds']:.1f} s, {r['failed']} failed "
            f"(non-2xx {r['non2xx']}, socket errors connect {r['connect']} read {r['read']} "
            f"write {r['write']} timeout {r['timeout']})")


FRONT_URL = f"http://127.0.0.1:{FRONT_PORT}/"


def start_loads(cap_seconds):
    """The two loads of every scenario: new connections and keep-alive, through HAProxy."""
    return [Wrk("new connections", FRONT_URL, cap_seconds, 8, close=True),
            Wrk("keep-alive", FRONT_URL, cap_seconds, 8, close=False)]


def stop_loads(loads):
    return [w.stop() for w in loads]


def wait_traffic(haproxy, servers, minimum, timeout, what):
    """Until each of `servers` has `minimum` more sessions in HAProxy than now."""
    start = {name: int(s["stot"]) for name, s in haproxy.stat().items()}
    return wait_for(lambda: all(int(haproxy.stat()[n]["stot"]) - start[n] >= minimum for n in servers),
                    timeout, what)


# --- scenarios -----------------------------------------------------------------------------------

def scenario_drain(hosts, haproxy, summary):
    log("\n== a. drain one whole host under load and bring it back")
    host = hosts[0]
    loads = start_loads(40)
    wait_traffic(haproxy, [h.name for h in hosts], 200, 15, "traffic to every host")
    mark = host.log_size()
    t0 = time.monotonic()
    # While the drain runs: the idle connections HAProxy keeps to the host once it has it out.
    # HAProxy 2.6 keeps them open through DRAIN, DOWN and MAINT and sends nothing on them; lbd's
    # workers close them as soon as the grace has ended quiet, so the drain does not wait for its
    # timeout (lbd's --shutdown-timeout, 10 s) on their account.
    drain = subprocess.Popen([os.path.join(host.build, "lbctl"), "--control", host.control, "drain", "--all",
                              "--wait"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    held = 0
    while drain.poll() is None and time.monotonic() - t0 < 30:
        st = haproxy.stat()[host.name]
        if st["status"] != "UP":
            held = max(held, int(st["idle_conn_cur"] or 0) + int(st["safe_conn_cur"] or 0))
        time.sleep(0.1)
    _, err = drain.communicate(timeout=30)
    if drain.returncode != 0:
        raise TestFailure(f"lbctl drain --all --wait exited with {drain.returncode}: {err}")
    drained_s = time.monotonic() - t0
    if drained_s >= 8:
        raise TestFailure(f"lbctl drain --all --wait took {drained_s:.1f} s: the workers waited for "
                          f"HAProxy's idle connections until their timeout")
    haproxy_state = haproxy.status_of(host.name)
    log(f"{host.name}: lbctl drain --all --wait returned after {drained_s:.1f} s; "
        f"HAProxy says {haproxy_state}, and kept up to {held} idle connections to it while it was out; "
        f"workers {host.states()}; lbd said:")
    for line in host.log_since(mark, r"\[lbd\] drain:|\[worker \d\] drained"):
        log("  " + line)
    if haproxy_state == "UP":
        raise TestFailure(f"{host.name} is drained but HAProxy still has it UP")
    before = int(haproxy.stat()[host.name]["stot"])
    t1 = time.monotonic()
    host.lbctl("undrain", "--all")
    host.wait_active()
    haproxy.wait_status(host.name, lambda s: s == "UP", 15, "UP again")
    back_s = time.monotonic() - t1
    first_weight = haproxy.stat()[host.name]["weight"]
    # Its weight climbs back (slowstart, when HAProxy had it DOWN or MAINT) to the others'.
    full = lambda: (lambda st: int(st[host.name]["weight"]) >=
                    0.9 * min(int(st[h.name]["weight"]) for h in hosts[1:]))(haproxy.stat())
    wait_for(full, 15, f"{host.name}'s weight to come back")
    full_s = time.monotonic() - t1
    wait_traffic(haproxy, [host.name], 200, 15, f"traffic to {host.name} again")
    results = stop_loads(loads)
    after = int(haproxy.stat()[host.name]["stot"])
    for r in results:
        log(describe(r))
    log(f"{host.name}: UP in HAProxy {back_s:.1f} s after lbctl undrain --all (weight {first_weight}), "
        f"its full weight after {full_s:.1f} s; {after - before} requests to it since")
    for r in results:
        if r["failed"]:
            raise TestFailure(f"drain: {r['label']}: {r['failed']} requests failed\n{r['output']}")
        summary.append(f"a. drain+undrain of {host.name}, {r['label']}: {r['requests']} requests, "
                       f"{r['failed']} failed")
    summary.append(f"a. lbctl drain --all --wait: {drained_s:.1f} s (HAProxy kept {held} idle "
                   f"connections to the host while it had it out); back UP in HAProxy "
                   f"{back_s:.1f} s after undrain, full weight after {full_s:.1f} s")


def scenario_drain_without_grace(hosts, haproxy, summary):
    """The same drain with --drain-grace 0: lbd drains at once, before HAProxy has asked. Reported,
    not asserted: it shows what the grace is for."""
    log("\n== a'. the same with --drain-grace 0 (reported)")
    host = hosts[2]
    host.restart(["--drain-grace", "0"])
    haproxy.wait_status(host.name, lambda s: s == "UP", 15, "UP")
    loads = start_loads(30)
    wait_traffic(haproxy, [h.name for h in hosts], 200, 15, "traffic to every host")
    mark = host.log_size()
    t0 = time.monotonic()
    host.lbctl("drain", "--all", "--wait", "--timeout", "2")
    drained_s = time.monotonic() - t0
    haproxy.wait_status(host.name, lambda s: s != "UP", 15, "out")
    out_s = time.monotonic() - t0
    wait_traffic(haproxy, [h.name for h in hosts if h is not host], 1000, 15, "traffic to the other hosts")
    results = stop_loads(loads)
    log(f"{host.name}: lbctl drain --all --wait returned after {drained_s:.1f} s; HAProxy had it "
        f"{haproxy.status_of(host.name)} after {out_s:.1f} s; lbd said:")
    for line in host.log_since(mark, r"\[lbd\] drain:|\[worker \d\] drain"):
        log("  " + line)
    for r in results:
        log(describe(r))
    summary.append(f"a'. drain of {host.name} with --drain-grace 0: "
                   + ", ".join(f"{r['failed']} of {r['requests']} {r['label']} failed" for r in results))
    host.restart([])
    haproxy.wait_status(host.name, lambda s: s == "UP", 15, "UP")


def rollout_cmd(build, haproxy, hosts, *extra):
    lbctl = f"{os.path.join(build, 'lbctl')} --control {os.path.dirname(hosts[0].control)}/{{host}}.sock"
    wait_cmd = f"{sys.executable} {os.path.abspath(__file__)} --server-up {haproxy.stats_socket} {{host}}"
    return [ROLLOUT, "--lbctl", lbctl, "--ready-timeout", "30",
            "--wait-cmd", wait_cmd, *extra, *[h.name for h in hosts]]


def rollout_env():
    # tools/rollout runs python3 to read lbctl status --json: this interpreter, not a slower one
    # earlier in PATH (a pyenv shim took 0.5 s to start, 1.5 s under the test's load).
    return {**os.environ, "PATH": os.path.dirname(sys.executable) + ":" + os.environ.get("PATH", "")}


def scenario_rollout(build, hosts, haproxy, summary):
    log("\n== b. tools/rollout across the three hosts under load")
    pids_before = {h.name: h.worker_pids() for h in hosts}
    loads = start_loads(90)
    wait_traffic(haproxy, [h.name for h in hosts], 200, 15, "traffic to every host")
    t0 = time.monotonic()
    rollout = run(rollout_cmd(build, haproxy, hosts), check=False, timeout=120, env=rollout_env())
    rollout_s = time.monotonic() - t0
    log(rollout.stdout + rollout.stderr)
    if rollout.returncode != 0:
        stop_loads(loads)
        raise TestFailure(f"tools/rollout exited with {rollout.returncode}")
    wait_traffic(haproxy, [h.name for h in hosts], 100, 15, "traffic to every host after the rollout")
    results = stop_loads(loads)
    for r in results:
        log(describe(r))
    for h in hosts:
        after = h.worker_pids()
        if after & pids_before[h.name] or len(after) != 2:
            raise TestFailure(f"{h.name}: workers {sorted(pids_before[h.name])} before the rollout, "
                              f"{sorted(after)} after: not all new")
    for r in results:
        if r["failed"]:
            raise TestFailure(f"rollout: {r['label']}: {r['failed']} requests failed\n{r['output']}")
        summary.append(f"b. rollout of 3 hosts ({rollout_s:.1f} s), {r['label']}: {r['requests']} requests, "
                       f"{r['failed']} failed")
    log(f"every worker is new; the rollout took {rollout_s:.1f} s")

    log("\n== b'. a rollout (--upgrade) whose change fails on host2")
    pids_before = {h.name: h.worker_pids() for h in hosts}
    lbd_before = {h.name: h.lbd_pid() for h in hosts}
    loads = start_loads(90)
    wait_traffic(haproxy, [h.name for h in hosts], 200, 15, "traffic to every host")
    fail_on = hosts[1].name
    rollout = run(rollout_cmd(build, haproxy, hosts, "--upgrade", "--run", f"test {{host}} != {fail_on}"),
                  check=False, timeout=120, env=rollout_env())
    log(rollout.stdout + rollout.stderr)
    if rollout.returncode == 0:
        stop_loads(loads)
        raise TestFailure("a rollout whose --run fails on host2 exited 0")
    if f"at host {fail_on}" not in rollout.stderr or "step 'run'" not in rollout.stderr:
        stop_loads(loads)
        raise TestFailure(f"the failed rollout does not name host {fail_on} and step 'run': {rollout.stderr}")
    h1, h2, h3 = hosts
    # Host 1 was done: a new lbd (upgrade) and new workers. Host 2: drained, out of HAProxy.
    # Host 3: untouched.
    if h1.lbd_pid() == lbd_before[h1.name] or h1.worker_pids() & pids_before[h1.name]:
        stop_loads(loads)
        raise TestFailure(f"{h1.name} was not upgraded by the rollout")
    h2_states = h2.states()
    h2_haproxy = haproxy.status_of(h2.name)
    if any(s == "active" for s in h2_states) or h2.worker_pids() or h2_haproxy == "UP":
        stop_loads(loads)
        raise TestFailure(f"{h2.name} should be left drained: workers {h2_states}, HAProxy {h2_haproxy}")
    if h3.worker_pids() != pids_before[h3.name] or h3.lbd_pid() != lbd_before[h3.name]:
        stop_loads(loads)
        raise TestFailure(f"{h3.name} was touched by a rollout that stopped at {h2.name}")
    wait_traffic(haproxy, [h1.name, h3.name], 100, 15, "traffic to host1 and host3")
    results = stop_loads(loads)
    for r in results:
        log(describe(r))
    for r in results:
        if r["failed"]:
            raise TestFailure(f"failed rollout: {r['label']}: {r['failed']} requests failed\n{r['output']}")
        summary.append(f"b. rollout stopped at {h2.name} (exit {rollout.returncode}), {r['label']}: "
                       f"{r['requests']} requests, {r['failed']} failed")
    log(f"{h2.name} left drained (workers {h2_states}, HAProxy {h2_haproxy}); {h3.name} untouched")
    # Back to three hosts for what follows.
    h2.lbctl("undrain", "--all")
    h2.wait_active()
    haproxy.wait_status(h2.name, lambda s: s == "UP", 15, "UP again")


def shares(haproxy, hosts, seconds):
    """Each host's share of the new connections (sessions in HAProxy) made during a bounded
    new-connection load through HAProxy."""
    before = {n: int(s["stot"]) for n, s in haproxy.stat().items()}
    w = Wrk("shares", FRONT_URL, seconds, 4, close=True)
    r = w.wait()
    after = {n: int(s["stot"]) for n, s in haproxy.stat().items()}
    delta = {h.name: after[h.name] - before[h.name] for h in hosts}
    total = sum(delta.values()) or 1
    return {n: d / total for n, d in delta.items()}, r


def fmt_shares(s):
    return ", ".join(f"{n} {v:.0%}" for n, v in s.items())


def scenario_busy(hosts, haproxy, summary):
    log("\n== c. host1 made busy by load straight at it: agent weight and share of new connections")
    h1 = hosts[0]
    weights = lambda: {n: s["weight"] for n, s in haproxy.stat().items()}
    # A host back from a drain climbs to its weight over slowstart: the baseline waits for it.
    even = lambda: (lambda w: min(w) >= 0.9 * max(w))([int(v) for v in weights().values()])
    wait_for(even, 15, "HAProxy's weights to be even")
    base_shares, r = shares(haproxy, hosts, 3)
    base_agent = h1.agent_says()
    log(f"idle: {h1.name}'s agent says '{base_agent}'; HAProxy weights {weights()}; "
        f"shares {fmt_shares(base_shares)} of {r['requests']}")
    base_weight = int(haproxy.stat()[h1.name]["weight"])
    # Relative thresholds: how much CPU the busy host's workers get, hence how far its weight
    # falls, depends on what else this 2-CPU machine runs.
    busy = Wrk("busy", f"http://{h1.addr}:{SERVICE_PORT}/work?us=2000", 20, 16)
    try:
        # The agent measures CPU over the last second and HAProxy asks every agent-inter.
        wait_for(lambda: int(haproxy.stat()[h1.name]["weight"]) <= 0.7 * base_weight, 10,
                 f"HAProxy's weight for {h1.name} to fall from {base_weight} to 70% of it")
        busy_agent = h1.agent_says()
        busy_weights = weights()
        busy_shares, r = shares(haproxy, hosts, 3)
        log(f"busy: {h1.name}'s agent says '{busy_agent}'; HAProxy weights {busy_weights}; "
            f"shares {fmt_shares(busy_shares)} of {r['requests']}")
    finally:
        busy_result = busy.stop()
    log(describe(busy_result))
    wait_for(lambda: int(haproxy.stat()[h1.name]["weight"]) >= 0.9 * base_weight, 10,
             f"HAProxy's weight for {h1.name} to come back to 90% of {base_weight}")
    after_agent = h1.agent_says()
    after_shares, r = shares(haproxy, hosts, 3)
    log(f"after: {h1.name}'s agent says '{after_agent}'; HAProxy weights {weights()}; "
        f"shares {fmt_shares(after_shares)} of {r['requests']}")
    if not busy_shares[h1.name] < 0.8 * base_shares[h1.name]:
        raise TestFailure(f"{h1.name}'s share did not fall while busy: {base_shares[h1.name]:.0%} idle, "
                          f"{busy_shares[h1.name]:.0%} busy")
    if not after_shares[h1.name] > 0.8 * base_shares[h1.name]:
        raise TestFailure(f"{h1.name}'s share did not come back: {base_shares[h1.name]:.0%} idle, "
                          f"{after_shares[h1.name]:.0%} after")
    summary.append(f"c. {h1.name} agent: idle '{base_agent}', busy '{busy_agent}', after '{after_agent}'")
    summary.append(f"c. share of new connections: idle {fmt_shares(base_shares)}; "
                   f"{h1.name} busy {fmt_shares(busy_shares)}; after {fmt_shares(after_shares)}")


def scenario_kill(hosts, haproxy, variant, summary):
    log(f"\n== d. kill -9 of host2's lbd and workers under load ({variant})")
    h2 = hosts[1]
    loads = start_loads(30)
    wait_traffic(haproxy, [h.name for h in hosts], 200, 15, "traffic to every host")
    t0 = time.monotonic()
    killed = h2.kill9()
    wait_for(lambda: haproxy.status_of(h2.name).startswith(("DOWN", "MAINT")), 10,
             f"HAProxy to take {h2.name} out")
    detected_s = time.monotonic() - t0
    status = haproxy.stat()[h2.name]
    results = stop_loads(loads)
    failed = sum(r["failed"] for r in results)
    for r in results:
        log(describe(r))
    counters = haproxy.stat()[h2.name]
    log(f"killed {killed}; HAProxy had {h2.name} {status['status']} ({status['check_status']}) "
        f"{detected_s:.2f} s later; {failed} requests failed; HAProxy's counters for {h2.name}: "
        f"connection errors {counters['econ']}, response errors {counters['eresp']}, "
        f"retries {counters['wretr']}, redispatches {counters['wredis']}")
    if detected_s > CHECK_DETECTION_S:
        raise TestFailure(f"HAProxy took {detected_s:.2f} s to take a dead host out (at most "
                          f"{CHECK_DETECTION_S} s expected)")
    # Once HAProxy has the host out, nothing fails any more.
    after = [w.wait() for w in start_loads_bounded(2)]
    for r in after:
        log("after it was out: " + describe(r))
        if r["failed"]:
            raise TestFailure(f"requests still fail after HAProxy took {h2.name} out: {describe(r)}")
    summary.append(f"d. kill -9 of {h2.name} ({variant}): {failed} failed "
                   f"({', '.join(str(r['failed']) + ' ' + r['label'] for r in results)}); "
                   f"out of HAProxy after {detected_s:.2f} s; 0 failed after that")
    # Host 2 back for the next variant: a new lbd with the same arguments.
    h2.start()
    haproxy.wait_status(h2.name, lambda s: s == "UP", 15, "UP again")
    return failed


def start_loads_bounded(seconds):
    return [Wrk("new connections", FRONT_URL, seconds, 8, close=True),
            Wrk("keep-alive", FRONT_URL, seconds, 8, close=False)]


# --- main ----------------------------------------------------------------------------------------

# examples/haproxy/README.md's --wait-cmd for tools/rollout reads `show stat` with this awk
# program (socat stdio SOCKET | awk -F, ...): the test runs the same program on the same answer.
SERVER_UP_AWK = '$1=="lbd" && $2=="{host}" && $18=="UP" {up=1} END {exit !up}'


def server_up_main(argv):
    """tools/rollout's --wait-cmd in this test: exit 0 when HAProxy has the server UP."""
    stats_socket, host = argv
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(stats_socket)
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        sys.exit(1)
    awk = subprocess.run(["awk", "-F,", SERVER_UP_AWK.replace("{host}", host)], input=data)
    sys.exit(awk.returncode)


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--server-up":
        server_up_main(sys.argv[2:])
    build = os.path.realpath(sys.argv[1])
    only = sys.argv[2:] or ["a", "b", "c", "d"]  # a subset, to look at one scenario
    if os.geteuid() != 0:
        print("SKIPPED: needs root (network namespaces, lbd's BPF steering)")
        sys.exit(77)
    for tool in ("haproxy", "wrk", "nsenter", "ip"):
        if not shutil.which(tool):
            print(f"SKIPPED: {tool} is not installed")
            sys.exit(77)
    if "--agent" not in run([os.path.join(build, "lbd"), "--help"], check=False).stdout:
        fail(f"{build}/lbd has no --agent")

    started = time.monotonic()
    summary = []
    topology = Topology()
    tmp = tempfile.mkdtemp(prefix="lbd-haproxy-")
    os.chmod(tmp, 0o755)
    hosts = []
    haproxy = HAProxy(tmp)
    ok = False
    try:
        topology.create()
        hosts = [Host(i, topology.hosts[i - 1], build, tmp) for i in range(1, HOSTS + 1)]
        for h in hosts:
            h.start()
        haproxy.start("shipped", haproxy_config(haproxy.stats_socket))
        log(f"3 hosts up, HAProxy has them all UP ({time.monotonic() - started:.1f} s)")

        if "a" in only:
            scenario_drain(hosts, haproxy, summary)
            scenario_drain_without_grace(hosts, haproxy, summary)
        if "b" in only:
            scenario_rollout(build, hosts, haproxy, summary)
        if "c" in only:
            scenario_busy(hosts, haproxy, summary)
        # d: kill -9 with the config as shipped (but retries 0), then one change at a time.
        variants = [("retries 0", {}), ("retries 0, no agent-check", {"agent_check": False}),
                    ("retries 0, no observe layer4", {"observe": False}),
                    ("as shipped: retries 2, option redispatch 1", {"retries": True})]
        for i, (variant, overrides) in enumerate(variants if "d" in only else []):
            if i:
                haproxy.stop()
                haproxy.start(f"d{i}", haproxy_config(haproxy.stats_socket, **overrides))
            scenario_kill(hosts, haproxy, variant, summary)
        ok = True
    except TestFailure as e:
        print(f"FAIL: {e}", file=sys.stderr)
    finally:
        for h in hosts:
            h.stop_begin()
        for h in hosts:
            h.stop_end()
        haproxy.stop()
        topology.destroy()
        if not ok:
            for h in hosts:
                print(f"--- {h.name}'s log (last lines)\n{h.log_tail()}", file=sys.stderr)
            print(f"--- haproxy's output (last lines)\n{tail(haproxy.log_path)}", file=sys.stderr)
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"(logs and configs kept in {tmp})", file=sys.stderr)
    elapsed = time.monotonic() - started
    log("\n== summary")
    for line in summary:
        log(line)
    log(f"total {elapsed:.0f} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
