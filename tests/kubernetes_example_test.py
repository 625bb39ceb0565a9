#!/usr/bin/env python3
"""examples/kubernetes without a cluster: what the kubelet would do with the manifests, done here
against a real lbd, in a pod of our own making.

The YAML files are read as Kubernetes reads them (python3-yaml), and the pod is played by Linux
namespaces: a network namespace of its own (so lbd.toml's ports are used as written, and no port
on the host is taken), a PID namespace (the pod's processes die with it), and a mount namespace
in which the Deployment's volumes are mounted where it mounts them: each emptyDir is a fresh
folder bound at its mountPath, the root file system is read-only if readOnlyRootFilesystem says
so, and /sys/fs/bpf holds no BPF file system (a container's does not). The container's
capabilities are exactly securityContext.capabilities (setpriv, as the runtime would), with
no_new_privs if allowPrivilegeEscalation is false.

One thing is rewritten: the path of the ConfigMap's mount in the container's command
(/etc/lbd/lbd.toml), which becomes a temporary copy of the ConfigMap's file, since /etc/lbd does
not exist on this machine and the test does not create folders in /etc. lbd.toml itself is used
unchanged; the preStop runs exactly as written (its control socket is in the emptyDir at
/run/lbd, as in the pod). The image is played by a folder on PATH holding what README.md puts in
it: lbd and lbctl (from BUILD_DIR) and socket_activated_server (copied from BUILD_DIR).

Checked, statically: the ports the manifests name agree (containerPorts, probes, the Service's
targetPort, the Prometheus annotation, lbd.toml's listen and admin), the selectors match, the
ConfigMap is the file the command reads, the control socket and logs are on emptyDirs, and
terminationGracePeriodSeconds exceeds drain_grace + kill_timeout. Then, live: lbd starts with
the container's command and args; the readinessProbe's path on its port answers 200, and the
livenessProbe's; while a client keeps making requests (as a balancer would until it has seen the
pod not ready, one probe period after), the preStop runs: /readyz answers 503 from then on,
/healthz stays 200, every request succeeds, the preStop returns within
terminationGracePeriodSeconds, and then SIGTERM makes lbd exit 0 within what is left of it.
lbd's log has no error and no warning but the two a pod expects (a non-loopback admin address,
no BPF file system to pin on).

Usage: kubernetes_example_test.py BUILD_DIR     (exit 77 = skipped: not root)
"""
import glob
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), ".."))
EXAMPLE = os.path.join(ROOT, "examples", "kubernetes")
INSIDE = "LBD_K8S_TEST_POD_DIR"   # set in the namespaces: the scratch folder the outer process made

failures = []


def check(ok, what):
    print(("ok:   " if ok else "FAIL: ") + what, flush=True)
    if not ok:
        failures.append(what)
    return ok


def fatal(what):
    print("FAIL: " + what, flush=True)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------
# The manifests


def load_manifests():
    try:
        import yaml
    except ImportError:
        fatal("python3-yaml is not installed (scripts/install-deps.sh installs it)")
    docs = []
    for path in sorted(glob.glob(os.path.join(EXAMPLE, "*.yaml"))):
        with open(path) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    for kind in ("Deployment", "ConfigMap", "Service"):
        if len(by_kind.get(kind, [])) != 1:
            fatal(f"examples/kubernetes should hold one {kind}, not {len(by_kind.get(kind, []))}")
    return by_kind["Deployment"][0], by_kind["ConfigMap"][0], by_kind["Service"][0]


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def host_of(address):
    return address.rsplit(":", 1)[0].strip("[]")


class Pod:
    """What the test needs from the manifests, with the static checks made on the way."""

    def __init__(self):
        self.deployment, self.configmap, self.service = load_manifests()
        spec = self.deployment["spec"]["template"]["spec"]
        containers = spec["containers"]
        if len(containers) != 1:
            fatal(f"the Deployment should run one container, not {len(containers)}")
        self.container = c = containers[0]
        self.grace = spec.get("terminationGracePeriodSeconds", 30)
        self.volumes = {v["name"]: v for v in spec.get("volumes", [])}
        self.mounts = c.get("volumeMounts", [])
        self.command = list(c.get("command", [])) + list(c.get("args", []))
        self.prestop = c["lifecycle"]["preStop"]["exec"]["command"]
        self.readiness = c["readinessProbe"]
        self.liveness = c["livenessProbe"]
        self.security = c.get("securityContext", {})
        self.ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}

        # The ConfigMap mount and the file the command reads.
        config_mounts = [m for m in self.mounts if "configMap" in self.volumes[m["name"]]]
        if len(config_mounts) != 1:
            fatal("the container should mount one ConfigMap volume")
        self.config_mount = config_mounts[0]["mountPath"]
        volume = self.volumes[config_mounts[0]["name"]]
        check(volume["configMap"]["name"] == self.configmap["metadata"]["name"],
              f"the config volume is the ConfigMap {self.configmap['metadata']['name']}")
        config_args = [a for a in self.command if a.startswith(self.config_mount + "/")]
        if len(config_args) != 1:
            fatal(f"the container's command should name one file of {self.config_mount}: {self.command}")
        self.config_arg = config_args[0]
        self.config_key = os.path.relpath(self.config_arg, self.config_mount)
        check(self.config_key in self.configmap["data"],
              f"the command's {self.config_arg} is the ConfigMap's key {self.config_key}")
        self.toml_text = self.configmap["data"][self.config_key]
        self.toml = tomllib.loads(self.toml_text)
        apps = self.toml.get("app", [])
        if len(apps) != 1:
            fatal(f"lbd.toml should declare one app, not {len(apps)}")
        self.app = apps[0]
        self.lbd = self.toml.get("lbd", {})
        self.empty_dirs = {m["mountPath"]: m["name"] for m in self.mounts if "emptyDir" in self.volumes[m["name"]]}

    def setting(self, key, default):
        return self.app.get(key, self.lbd.get(key, default))

    def probe_port(self, probe):
        port = probe["httpGet"]["port"]
        if isinstance(port, str):
            if not check(port in self.ports, f"the probe's port {port!r} is a containerPort"):
                return None
            return self.ports[port]
        return port

    def static_checks(self):
        listen = self.app["listen"] if isinstance(self.app["listen"], list) else [self.app["listen"]]
        admin = self.app.get("admin")
        if not check(admin is not None, "lbd.toml's app has an admin address (the probes need one)"):
            return
        listen_ports = {port_of(a) for a in listen}
        admin_port = port_of(admin)
        container_ports = set(self.ports.values())
        check(listen_ports <= container_ports,
              f"lbd.toml's listen ports {sorted(listen_ports)} are containerPorts {self.ports}")
        check(admin_port in container_ports, f"lbd.toml's admin port {admin_port} is a containerPort {self.ports}")
        for a in listen + [admin]:
            check(host_of(a) in ("0.0.0.0", "::"),
                  f"{a} is on every address: the kubelet and the Service reach the pod on its own IP")
        self.readiness_port = self.probe_port(self.readiness)
        self.liveness_port = self.probe_port(self.liveness)
        check(self.readiness_port == admin_port,
              f"the readinessProbe's port ({self.readiness_port}) is lbd.toml's admin port ({admin_port})")
        check(self.liveness_port == admin_port,
              f"the livenessProbe's port ({self.liveness_port}) is lbd.toml's admin port ({admin_port})")
        check(self.readiness["httpGet"]["path"] == "/readyz", "the readinessProbe asks /readyz")
        check(self.liveness["httpGet"]["path"] == "/healthz", "the livenessProbe asks /healthz")
        annotations = self.deployment["spec"]["template"]["metadata"].get("annotations", {})
        if "prometheus.io/port" in annotations:
            check(int(annotations["prometheus.io/port"]) == admin_port,
                  f"the Prometheus annotation's port {annotations['prometheus.io/port']} is the admin port")
        service_ports = self.service["spec"]["ports"]
        for sp in service_ports:
            target = sp.get("targetPort", sp["port"])
            resolved = self.ports.get(target) if isinstance(target, str) else target
            check(resolved in listen_ports,
                  f"the Service's targetPort {target!r} ({resolved}) is one of lbd.toml's listen ports {sorted(listen_ports)}")
        check(admin_port not in {self.ports.get(sp.get("targetPort")) if isinstance(sp.get("targetPort"), str)
                                 else sp.get("targetPort") for sp in service_ports},
              "the admin port (no authentication) is not in the Service")
        labels = self.deployment["spec"]["template"]["metadata"]["labels"]
        selector = self.deployment["spec"]["selector"]["matchLabels"]
        check(selector.items() <= labels.items(), "the Deployment's selector matches its pods' labels")
        check(self.service["spec"]["selector"].items() <= labels.items(), "the Service's selector matches the pods' labels")
        # Where lbd writes: the pod's emptyDirs (the root file system is read-only).
        control_dir = self.lbd.get("control_dir", "/run/lbd")
        log_dir = self.app.get("log", {}).get("dir", self.lbd.get("log_dir", "/var/log/lbd"))
        check(control_dir in self.empty_dirs, f"the control socket's folder {control_dir} is an emptyDir")
        check(log_dir in self.empty_dirs, f"the log folder {log_dir} is an emptyDir")
        check(control_dir == "/run/lbd" or control_dir in self.prestop,
              f"the preStop's lbctl finds the control socket in {control_dir}")
        check(self.prestop[0] == "lbctl" and self.app["name"] in self.prestop,
              f"the preStop is lbctl, naming the app {self.app['name']!r}: {self.prestop}")
        drain_grace = self.setting("drain_grace", 0)
        kill_timeout = self.setting("kill_timeout", 10)
        check(self.grace > drain_grace + kill_timeout,
              f"terminationGracePeriodSeconds {self.grace} > drain_grace {drain_grace} + kill_timeout {kill_timeout}")
        noticed = self.readiness.get("periodSeconds", 10) * self.readiness.get("failureThreshold", 3)
        check(drain_grace > noticed + 1,
              f"drain_grace {drain_grace} outlasts the kubelet's noticing the 503 ({noticed} s: periodSeconds x "
              f"failureThreshold) and the quiet second after")
        workers = self.setting("workers", "max")
        cpu = self.container.get("resources", {}).get("limits", {}).get("cpu")
        if isinstance(workers, int) and cpu is not None:
            check(str(workers) == str(cpu), f"lbd.toml's workers ({workers}) is the container's CPU limit ({cpu})")


# ---------------------------------------------------------------------------------------------
# Outside: make the namespaces, run this script again in them, clean up after.


def outside(build):
    pod_dir = tempfile.mkdtemp(prefix="lbd-k8s-")
    os.chmod(pod_dir, 0o755)   # the program runs as nobody, from a folder in here
    try:
        # --pid --fork: the test is the pod's first process; when it ends, every process of the
        # pod does (a crashed lbd's workers included). --kill-child: and so does a test ctest kills.
        cmd = ["unshare", "--net", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc",
               "--kill-child", sys.executable, os.path.abspath(__file__), build]
        r = subprocess.run(cmd, env={**os.environ, INSIDE: pod_dir})
        return r.returncode
    finally:
        shutil.rmtree(pod_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Inside: the pod.


def run(args, **kw):
    r = subprocess.run(args, capture_output=True, text=True, timeout=30, **kw)
    if r.returncode != 0:
        fatal(f"{' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def make_pod(pod, build, pod_dir):
    """The pod's network, volumes, image and capabilities. Returns (env, wrapper, config_path)."""
    run(["ip", "link", "set", "lo", "up"])
    run(["mount", "--bind", pod_dir, pod_dir])   # stays writable when the root is made read-only
    # The image: what README.md puts in it, on PATH.
    image = os.path.join(pod_dir, "image-bin")
    os.mkdir(image, 0o755)
    for tool in ("lbd", "lbctl"):
        os.symlink(os.path.join(build, tool), os.path.join(image, tool))
    shutil.copy2(os.path.join(build, "socket_activated_server"), image)
    # The ConfigMap's files (read-only in the pod), at a path of ours.
    config_dir = os.path.join(pod_dir, "configmap")
    os.mkdir(config_dir, 0o755)
    for key, text in pod.configmap["data"].items():
        with open(os.path.join(config_dir, key), "w") as f:
            f.write(text)
    # Each emptyDir: an empty folder of ours at its mountPath.
    for mount_path, name in pod.empty_dirs.items():
        empty = os.path.join(pod_dir, "emptydir-" + name)
        os.mkdir(empty, 0o755)
        os.makedirs(mount_path, exist_ok=True)   # /run/lbd, /var/log/lbd: lbd makes them anyway
        run(["mount", "--bind", empty, mount_path])
    # A container's /sys/fs/bpf is no BPF file system, and lbd may not mount one (no SYS_ADMIN).
    run(["mount", "-t", "tmpfs", "-o", "ro,size=4k", "tmpfs", "/sys/fs/bpf"])
    if pod.security.get("readOnlyRootFilesystem"):
        run(["mount", "-o", "remount,bind,ro", "/"])
    # The container's capabilities: the runtime gives a root container exactly the added ones.
    caps = pod.security.get("capabilities", {})
    if caps.get("drop") != ["ALL"]:
        fatal("the test expects the container to drop ALL capabilities and add what lbd needs")
    bounding = "-all" + "".join(",+" + c.lower() for c in caps.get("add", []))
    wrapper = ["setpriv", "--bounding-set", bounding, "--inh-caps", "-all"]
    if pod.security.get("allowPrivilegeEscalation") is False:
        wrapper.append("--no-new-privs")
    wrapper.append("--")
    env = {"PATH": image + ":/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
    for e in pod.container.get("env", []):
        env[e["name"]] = e["value"]
    return env, wrapper, os.path.join(config_dir, pod.config_key)


def http_get(port, path, timeout):
    """(status, body) or (None, the error's name)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close", "User-Agent": "kube-probe/test"})
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as e:
        return None, type(e).__name__
    finally:
        conn.close()


def wait_until(condition, seconds, what, lbd=None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        if lbd is not None and lbd.poll() is not None:
            return check(False, f"{what} (lbd exited with {lbd.returncode} first)")
        time.sleep(0.05)
    return check(False, f"{what} within {seconds} s")


class Kubelet(threading.Thread):
    """Probes /readyz and /healthz as the kubelet does, only more often, and keeps every answer."""

    def __init__(self, pod):
        super().__init__(daemon=True)
        self.pod = pod
        self.stop = threading.Event()
        self.readyz = []    # (asked, answered, status or None)
        self.healthz = []
        self.first_503 = None

    def run(self):
        r, l = self.pod.readiness, self.pod.liveness
        while not self.stop.is_set():
            asked = time.monotonic()
            status, _ = http_get(self.pod.readiness_port, r["httpGet"]["path"], r.get("timeoutSeconds", 1))
            answered = time.monotonic()
            self.readyz.append((asked, answered, status))
            if status == 503 and self.first_503 is None:
                self.first_503 = answered
            asked = time.monotonic()
            status, _ = http_get(self.pod.liveness_port, l["httpGet"]["path"], l.get("timeoutSeconds", 1))
            self.healthz.append((asked, time.monotonic(), status))
            self.stop.wait(0.05)


class Balancer(threading.Thread):
    """A client sending to the pod until it has seen it not ready: new connection per request, and
    on for one readiness period after the first 503 (the kubelet's delay before the pod leaves the
    endpoints). Bounded: never past `deadline`."""

    def __init__(self, port, kubelet, lag, deadline):
        super().__init__(daemon=True)
        self.port, self.kubelet, self.lag, self.deadline = port, kubelet, lag, deadline
        self.requests = []   # (start, status, body or error)

    def run(self):
        while time.monotonic() < self.deadline:
            seen = self.kubelet.first_503
            if seen is not None and time.monotonic() >= seen + self.lag:
                return
            start = time.monotonic()
            status, body = http_get(self.port, "/", 2)
            self.requests.append((start, status, body))
            time.sleep(0.005)


def inside(build, pod_dir):
    pod = Pod()
    pod.static_checks()
    env, wrapper, config_path = make_pod(pod, build, pod_dir)
    listen_port = port_of(pod.app["listen"] if isinstance(pod.app["listen"], str) else pod.app["listen"][0])

    command = [config_path if a == pod.config_arg else a for a in pod.command]
    print(f"pod: {' '.join(command)}   (container: {' '.join(pod.command)})", flush=True)
    log_path = os.path.join(pod_dir, "lbd.log")
    log = open(log_path, "w")
    lbd = subprocess.Popen(wrapper + command, env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=log,
                           stderr=subprocess.STDOUT)
    kubelet = None
    try:
        r, l = pod.readiness["httpGet"]["path"], pod.liveness["httpGet"]["path"]
        if not wait_until(lambda: http_get(pod.readiness_port, r, 1)[0] == 200, 30,
                          f"the readinessProbe ({r} on {pod.readiness_port}) answers 200", lbd):
            return
        check(http_get(pod.liveness_port, l, 1)[0] == 200, f"the livenessProbe ({l} on {pod.liveness_port}) answers 200")
        status, body = http_get(listen_port, "/", 2)
        check(status == 200, f"the app answers on {listen_port}: {status} {body.strip()!r}")

        kubelet = Kubelet(pod)
        kubelet.start()
        lag = pod.readiness.get("periodSeconds", 10) * pod.readiness.get("failureThreshold", 3)
        began = time.monotonic()
        balancer = Balancer(listen_port, kubelet, lag, began + pod.grace)
        balancer.start()
        wait_until(lambda: len(balancer.requests) >= 20, 10, "the client's first 20 requests are answered", lbd)

        began = time.monotonic()
        print(f"preStop: {' '.join(pod.prestop)}", flush=True)
        prestop = subprocess.Popen(wrapper + pod.prestop, env=env, cwd="/", stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            out, _ = prestop.communicate(timeout=pod.grace)
        except subprocess.TimeoutExpired:
            prestop.kill()
            out, _ = prestop.communicate()
        ended = time.monotonic()
        print(out.rstrip(), flush=True)
        check(prestop.returncode == 0, f"the preStop exits 0 (it exited {prestop.returncode})")
        check(ended - began < pod.grace,
              f"the preStop returns within terminationGracePeriodSeconds ({ended - began:.2f} s of {pod.grace})")
        balancer.join(timeout=max(0.0, began + pod.grace - time.monotonic()))
        check(not balancer.is_alive(), "the client stopped once it had seen the pod not ready")
        status, body = http_get(listen_port, "/", 2)
        check(status is None, f"after the preStop no worker serves (a request gets {status or body})")

        # The kubelet's SIGTERM, and the time left of the grace period.
        terminated = time.monotonic()
        lbd.send_signal(signal.SIGTERM)
        left = began + pod.grace - terminated
        try:
            code = lbd.wait(timeout=max(left, 0.0))
        except subprocess.TimeoutExpired:
            code = None
        stopped = time.monotonic()
        check(code == 0, f"SIGTERM makes lbd exit 0 within the {left:.2f} s left of the grace period "
                         f"(exit {code} after {stopped - terminated:.2f} s)")
        kubelet.stop.set()
        kubelet.join(timeout=5)

        # What the kubelet and the client saw.
        after = [(t, a, s) for t, a, s in kubelet.readyz if t >= began]
        first_503 = next((t for t, a, s in after if s == 503), None)
        if check(first_503 is not None, "/readyz answered 503 after the preStop began"):
            # The probes asked before lbctl reached lbd (a few ms) may still say 200; none after.
            before_503 = [s for t, a, s in after if t < first_503]
            check(all(s == 200 for s in before_503) and first_503 - began < 1.0,
                  f"/readyz answers 503 from the moment the preStop began (the first 503 was asked "
                  f"{(first_503 - began) * 1000:.0f} ms after it, {len(before_503)} probe(s) before it)")
            # From then on 503, until the SIGTERM stops lbd: then nothing answers.
            other = [(round(t - began, 3), s) for t, a, s in after
                     if t >= first_503 and s != 503 and not (s is None and a >= terminated)]
            check(not other, f"and nothing but 503 until lbd stopped: {other[:5]}")
        live = [(round(t - began, 3), s) for t, a, s in kubelet.healthz if began <= t and a < terminated and s != 200]
        check(not live, f"/healthz answered 200 throughout the preStop: {live[:5]}")
        requests = balancer.requests
        failed = [(round(t - began, 3), s, b) for t, s, b in requests if s != 200]
        during = [t for t, s, b in requests if t >= began]
        while_503 = [t for t in during if first_503 is not None and t >= first_503]
        check(not failed, f"every request succeeded: {len(requests)} in all, {len(during)} after the preStop "
                          f"began, {len(while_503)} while /readyz said 503; failed: {failed[:5]}")
        check(len(while_503) > 0, "lbd served requests while it said it was not ready")
        if requests:
            quiet = ended - requests[-1][0]
            check(quiet >= 0.9, f"the workers were drained only once the requests had stopped for a second "
                                f"(the preStop returned {quiet:.2f} s after the last one)")
        print(f"timing: preStop {ended - began:.2f} s (first 503 after {(first_503 or began) - began:.3f} s, "
              f"client stopped {lag} s after it), SIGTERM to exit {stopped - terminated:.2f} s, "
              f"grace {pod.grace} s", flush=True)
    finally:
        if kubelet is not None:
            kubelet.stop.set()
        if lbd.poll() is None:
            lbd.send_signal(signal.SIGTERM)
            try:
                lbd.wait(timeout=15)
            except subprocess.TimeoutExpired:
                print("lbd still running 15 s after SIGTERM: killed", flush=True)
                lbd.kill()
                lbd.wait()
        log.close()
        with open(log_path) as f:
            text = f.read()
        expected = ("is not a loopback address", "is not a BPF filesystem")
        trouble = [line for line in text.splitlines()
                   if line.split()[1:2] in (["warning"], ["error"], ["critical"]) and not any(e in line for e in expected)]
        check(not trouble, "lbd logged no error and no warning a pod should not have: " + " | ".join(trouble))
        if failures:
            print("--- lbd's log ---\n" + text, flush=True)


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    build = os.path.abspath(sys.argv[1])
    if os.geteuid() != 0:
        print("SKIPPED: needs root: lbd loads its BPF program and runs the program as nobody, and the "
              "test makes the pod's network, PID and mount namespaces")
        sys.exit(77)
    pod_dir = os.environ.get(INSIDE)
    if pod_dir is None:
        sys.exit(outside(build))
    inside(build, pod_dir)
    if failures:
        print(f"{len(failures)} check(s) failed", flush=True)
        sys.exit(1)
    print("passed", flush=True)


if __name__ == "__main__":
    main()
